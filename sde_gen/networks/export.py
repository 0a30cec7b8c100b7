"""A score model whose network is a diffusers ``UNet2DModel`` (``model=diffusers_unet``) as a
diffusers pipeline folder: ``model_index.json``, ``unet/`` (config and safetensors weights) and
``scheduler/scheduler_config.json``, so that diffusers' own ``DDIMPipeline`` runs it.

The scheduler is the SDE's discrete chain: ``trained_betas`` = its β_1..β_N in order,
``prediction_type`` from the parametrisation (ε → epsilon, v → v_prediction, x0 → sample),
``clip_sample: false`` (sde_gen never clips x̂0), ``set_alpha_to_one: true`` (the last DDIM step
lands on x̂0, as sde_gen's ``final_step=zero``) and ``timestep_spacing: trailing`` (sde_gen's
``solver/grid=trailing``). The network must take diffusers' timesteps: k = N t − 1
(``DiscreteIndex(N, 1)``, ``model/time=discrete``).

A network with a learned variance (2C output channels) is written as a ``DDPMPipeline`` instead
(a DDIM step takes ε only): ``DDPMScheduler`` with the ``variance_type`` of the model's convention
(``model/variance=linear_range`` → ``learned_range``, ``direct`` → ``learned``; sde_gen's own
``sigmoid_range`` has none and is refused) and ``timestep_spacing: linspace``, whose times start at
T and end on timestep 0, the step that adds no noise (as sde_gen's ancestral last step).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sde_gen.models.diffusers_unet import DiffusersUNet
from sde_gen.models.network_time import DiscreteIndex
from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.diffusers_folder import VARIANCE_TYPES, DiffusersNet
from sde_gen.networks.diffusers_schedule import PREDICTIONS
from sde_gen.sde import DiscreteVPSDE

__all__ = [
    "prediction_type",
    "variance_type",
    "scheduler_kwargs",
    "diffusers_unet",
    "export_diffusers",
]


def diffusers_name(part: object, names: dict[str, type]) -> str | None:
    """diffusers' name for ``part``: the key of ``names`` (the loader's table, name → exact class)
    whose class ``part`` is; None where it has none."""
    return next((name for name, kind in names.items() if type(part) is kind), None)


def prediction_type(model: ScoreModel) -> str:
    """diffusers' name for what the network predicts; a ValueError naming ``model.param``."""
    name = diffusers_name(model.param, PREDICTIONS)
    if name is None:
        raise ValueError(
            f"model.param={model.param!r} has no diffusers prediction_type: export needs "
            "model/param=eps, v or x0"
        )
    return name


def variance_type(model: ScoreModel) -> str | None:
    """diffusers' ``variance_type`` of a learned-variance network (None for one of C output
    channels); a ValueError naming ``model.variance`` where diffusers has no equivalent."""
    config = diffusers_unet(model).config
    if config.out_channels != 2 * config.in_channels:
        return None
    name = diffusers_name(model.variance, VARIANCE_TYPES)
    if name is None:
        raise ValueError(
            f"model.learn_variance=true with model.variance={model.variance!r} has no diffusers "
            "variance_type: export needs model/variance=linear_range (learned_range) or direct "
            "(learned)"
        )
    return name


def scheduler_kwargs(model: ScoreModel) -> dict[str, Any]:
    """``DDIMScheduler`` keyword arguments of the model's chain, or ``DDPMScheduler``'s with its
    ``variance_type`` for a learned variance; a ValueError naming ``sde``, ``model.param``,
    ``model.time`` or ``model.variance`` where diffusers has no equivalent."""
    sde = model.sde
    if not isinstance(sde, DiscreteVPSDE):
        raise ValueError(
            f"sde={sde!r} has no diffusers scheduler equivalent: export needs the discrete "
            "chain (sde=ddpm_linear or sde=ddpm_cosine)"
        )
    time = model.time
    if not (isinstance(time, DiscreteIndex) and time.steps == sde.N and time.offset == 1.0):
        raise ValueError(
            f"model.time={time!r}: diffusers' U-Net takes the chain's timestep k = N t - 1, "
            f"i.e. DiscreteIndex(steps={sde.N}, offset=1) (model/time=discrete)"
        )
    kwargs = {
        "num_train_timesteps": sde.N,
        "trained_betas": [float(b) for b in sde.betas],
        "prediction_type": prediction_type(model),
        "clip_sample": False,
        "steps_offset": 0,
    }
    variance = variance_type(model)
    if variance is None:
        return {**kwargs, "set_alpha_to_one": True, "timestep_spacing": "trailing"}
    return {**kwargs, "variance_type": variance, "timestep_spacing": "linspace"}


def export_diffusers(model: ScoreModel, out: str | os.PathLike) -> Path:
    """Write ``model`` as a ``DDIMPipeline`` folder (a ``DDPMPipeline`` with a learned variance)
    at ``out`` (absent or an empty folder): written into a temporary folder beside it, then
    renamed, so ``out`` is complete or absent. A ValueError names what cannot be exported
    (``scheduler_kwargs``, ``diffusers_unet``)."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    unet = diffusers_unet(model)
    kwargs = scheduler_kwargs(model)
    target = Path(out)
    _check_out(target)
    tmp = target.parent / f".{target.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if "variance_type" in kwargs:
            pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**kwargs))
        else:
            pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(**kwargs))
        pipe.save_pretrained(tmp, safe_serialization=True)
        if target.is_dir():
            target.rmdir()  # empty (checked): the rename below takes its place
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def diffusers_unet(model: ScoreModel) -> Any:
    """The ``UNet2DModel`` inside the model's network (``model=diffusers_unet``, or a folder
    loaded with ``model=diffusers`` and fine-tuned); a ValueError for any other network."""
    net = model.eps_net
    if not isinstance(net, DiffusersUNet | DiffusersNet):
        raise ValueError(
            f"model is a {type(net).__name__}, not a diffusers model: export needs a network "
            "trained with model=diffusers_unet (or loaded with model=diffusers)"
        )
    return net.unet


def _check_out(target: Path) -> None:
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise ValueError(f"out={str(target)!r} exists and is not an empty folder; pick a new one")
    if not target.parent.is_dir():
        raise ValueError(f"out={str(target)!r}: its parent folder does not exist")
