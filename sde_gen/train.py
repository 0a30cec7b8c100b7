"""``sde-gen-train``: train a score model from the composed Hydra config ``conf/train.yaml``.

sde-gen-train experiment=toy2d
sde-gen-train trainer.steps=2000 trainer.lr=1e-3 seed=1
sde-gen-train -m loss/weighting=sigma2,likelihood      # one summary.json per run
sde-gen-train experiment=toy2d trainer.steps=6000 \\
    hydra.run.dir=outputs/train/toy2d trainer.resume=latest      # continue that run

SIGTERM or SIGUSR1 (SLURM's warning before preemption) stop a run after the step in progress with
a checkpoint of that step; the command then exits with status 128 + the signal's number (143 for
SIGTERM, 138 for SIGUSR1), and ``trainer.resume=latest`` in the same folder continues it
bit-identically. A user error (a bad value, a folder in use or not writable) exits with status 2.

torchrun --nproc_per_node=4 -m sde_gen.train experiment=cifar10 hydra.run.dir=outputs/c10

runs data-parallel (NCCL on CUDA, gloo on CPU): the same global batch ``trainer.batch_size``
(× ``trainer.accumulate``) cut across the ranks, so the run does not depend on the number of
processes; rank 0 writes the run folder (give ``hydra.run.dir``, so every rank names the same one).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sde_gen.cli.build import build_training
from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.settings import TrainConfig, settings_from
from sde_gen.runtime.distributed import World, close_world, gather_objects, init_world
from sde_gen.runtime.resources import choose_threads, seed_everything
from sde_gen.training.report import headline
from sde_gen.training.trainer import Trainer, TrainingInterrupted

log = logging.getLogger("sde_gen.train")  # not __main__ under python -m or torchrun -m

GROUPS = ("sde", "loss", "model", "data", "solver", "trainer")


def flat_config(cfg: DictConfig, groups: tuple[str, ...] = GROUPS) -> dict[str, Any]:
    """Scalar config values as dotted keys (``loss.t_min`` …) for the run's summary."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, (str, int, float, bool)) or node is None:
            out[prefix] = node

    for group in groups:
        if cfg.get(group) is not None:
            walk(OmegaConf.to_container(cfg[group], resolve=True, enum_to_str=True), group)
    return out


def run_label(choices: dict[str, Any]) -> str:
    """The run's name in plot titles: the chosen options of the groups a study varies."""
    keys = ("loss", "loss/weighting", "loss/time_sampler", "sde", "model", "model/param", "data")
    return " ".join(f"{k.split('/')[-1]}={choices[k]}" for k in keys if choices.get(k))


def run(
    cfg: DictConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    choices: dict[str, Any] | None = None,
    world: World | None = None,
) -> dict[str, Any]:
    """Validate, build and train from ``cfg``; outputs go to ``out_dir``. Returns the summary.
    ``world``: this process's place in a torchrun job (default: join the one torchrun set up).

    ``choices`` (Hydra's group → option, e.g. ``{"loss/weighting": "likelihood"}``) go into the
    summary as ``choice.<group>`` and name the run in plot titles.
    """
    settings: TrainConfig = settings_from(cfg, TrainConfig)
    world = init_world(settings.device, settings.dist_timeout) if world is None else world
    out_dir = gather_objects(str(out_dir))[0]  # rank 0's folder (Hydra's clocks may differ)
    device = world.device
    seed_everything(settings.seed)
    parts = build_training(cfg, device)
    threads = choose_threads(settings.threads, device, parts.model)
    trainer_settings = settings.trainer
    trainer_settings.progress = trainer_settings.progress and progress
    choices = {k: v for k, v in (choices or {}).items() if v and not k.startswith("hydra")}
    extra = flat_config(cfg)
    extra.update({f"choice.{k}": v for k, v in choices.items()})
    extra["threads"] = threads
    if choices.get("loss/weighting"):
        extra["weighting"] = choices["loss/weighting"]
    trainer = Trainer(
        parts.model,
        parts.loss_fn,
        parts.data,
        out_dir,
        trainer_settings,
        solver=parts.solver,
        device=device,
        seed=settings.seed,
        config=OmegaConf.to_yaml(cfg, resolve=True),
        summary_extra=extra,
        label=run_label(choices),
        world=world,
    )
    return trainer.fit()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors
def _main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final loss (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir).resolve()  # through outputs/train/latest
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices)
    try:
        summary = run(cfg, out_dir, choices=choices)
    except TrainingInterrupted as e:  # SIGTERM / SIGUSR1: checkpointed, resumable
        log.warning("stopped by %s", e)
        sys.exit(e.exit_status)
    finally:
        close_world()
    if int(os.environ.get("RANK", 0)) > 0:
        return float(summary["final_loss"])
    log.info("outputs in %s", out_dir)
    log.info("%s", headline(summary))
    return float(summary["final_loss"])


def main() -> Any:
    """``sde-gen-train``."""
    return run_cli(_main)


if __name__ == "__main__":
    main()
