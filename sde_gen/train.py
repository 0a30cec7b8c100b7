"""``sde-gen-train``: train a score model from the composed Hydra config ``conf/train.yaml``.

sde-gen-train experiment=toy2d
sde-gen-train trainer.steps=2000 trainer.lr=1e-3 seed=1
sde-gen-train -m loss.weighting=sigma2,likelihood      # one summary.json per run
sde-gen-train trainer.resume=latest trainer.checkpoint_dir=outputs/.../checkpoints
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sde_gen.config_checks import build, trainer_settings
from sde_gen.runtime import seed_everything, set_threads
from sde_gen.trainer import Trainer


def flat_config(
    cfg: DictConfig, groups: tuple[str, ...] = ("sde", "loss", "model", "data", "solver", "trainer")
) -> dict[str, Any]:
    """Scalar config values as dotted keys (``loss.weighting`` …) for the run's summary."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, (str, int, float, bool)) or node is None:
            out[prefix] = node

    for group in groups:
        if cfg.get(group) is not None:
            walk(OmegaConf.to_container(cfg[group], resolve=True), group)
    return out


def run(
    cfg: DictConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    choices: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate, build and train from ``cfg``; outputs go to ``out_dir``. Returns the summary.

    ``choices`` (Hydra's group → option, e.g. ``{"loss": "dsm"}``) go into the summary too.
    """
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: need a non-negative integer")
    seed_everything(seed)
    set_threads(cfg.get("threads"))
    parts = build(cfg)
    settings = trainer_settings(cfg.trainer)
    progress = bool(settings.pop("progress", True)) and progress
    extra = flat_config(cfg)
    extra.update({f"choice.{k}": v for k, v in (choices or {}).items() if "/" not in k})
    trainer = Trainer(
        parts.model,
        parts.loss_fn,
        parts.data,
        out_dir,
        solver=parts.solver,
        device=parts.device,
        seed=seed,
        config=OmegaConf.to_yaml(cfg, resolve=True),
        summary_extra=extra,
        progress=progress,
        **settings,
    )
    return trainer.fit()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final loss (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    summary = run(cfg, out_dir, choices=choices)
    loss, steps = summary["final_loss"], summary["steps"]
    print(f"final loss {loss:.5f} after {steps} steps; outputs in {out_dir}")
    return float(summary["final_loss"])


if __name__ == "__main__":
    main()
