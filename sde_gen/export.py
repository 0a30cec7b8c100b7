"""``sde-gen-export checkpoint=<step_*.pt> out=<folder>``: a ``model=diffusers_unet`` checkpoint
as a diffusers pipeline folder (``networks.export``) that diffusers' ``DDIMPipeline`` loads (its
``DDPMPipeline`` for a learned variance)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sde_gen.cli.errors import run_cli, user_errors
from sde_gen.cli.settings import ExportConfig, register_export_config, settings_from
from sde_gen.networks.checkpoint import load_score_model

log = logging.getLogger(__name__)


def run_export(cfg: DictConfig) -> Path:
    """Load the checkpoint (EMA or raw weights) and write the folder; returns its path."""
    settings: ExportConfig = settings_from(cfg, ExportConfig)
    try:
        import diffusers  # noqa: F401

        from sde_gen.networks.export import export_diffusers
    except ImportError as e:
        raise ValueError(f"sde-gen-export needs the diffusers package ({e})") from None
    model, _, _ = load_score_model(settings.checkpoint, "cpu", ema=settings.ema)
    try:
        return export_diffusers(model, settings.out)
    except ValueError as e:
        raise ValueError(f"checkpoint {settings.checkpoint!r}: {e}") from e


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@user_errors
def _main(cfg: DictConfig) -> None:
    out = run_export(cfg)
    log.info(f"wrote {out} (DDIMPipeline.from_pretrained({str(out)!r}))")


def main() -> None:
    """``sde-gen-export``."""
    register_export_config()
    run_cli(_main)


if __name__ == "__main__":
    main()
