"""A locally saved diffusers model as a score model: ``model=diffusers model.path=<folder>``.

The folder is a pipeline (``model_index.json``, ``unet/``, ``scheduler/``) or one model folder
(``config.json`` and its ``scheduler_config.json``). The network is a ``UNet2DModel`` built from
its ``config.json`` with its weights read from ``diffusion_pytorch_model.safetensors`` (nothing is
unpickled; a ``.bin``-only folder is refused); the scheduler config gives the SDE, the
parametrisation and the network's time (``diffusers_schedule``), and its ``variance_type`` how
a 2C-channel network's variance output is read (``VARIANCE_TYPES``). Nothing is downloaded: a path
that is not a folder (a hub id) is an error saying to download it first.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sde_gen.models.clipped import ClippedX0
from sde_gen.models.learned_variance import Direct, LearnedVariance, LinearRange
from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.diffusers_schedule import VE_SCHEDULERS, scheduler_parts

__all__ = ["DiffusersNet", "load_diffusers"]

NETWORKS = ("UNet2DModel",)
"""The diffusers network classes sde_gen loads (``_class_name`` of the model's config.json)."""

WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = "diffusion_pytorch_model.bin"
SCHEDULER = "scheduler_config.json"

FIXED_VARIANCES = (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
"""diffusers' ``variance_type`` values of a C-channel network (the solver's ``variance`` picks
β̃ or β); None is the multistep schedulers' (DPM-Solver, UniPC …) default."""

VARIANCE_TYPES: dict[str, type[LearnedVariance]] = {
    "learned_range": LinearRange,
    "learned": Direct,
}
"""diffusers' learned ``variance_type`` → how the extra C channels become log Σ of a step
(``DDPMScheduler._get_variance``: f = (v + 1)/2 between log β̃ and log β unclamped; v = Σ)."""


class DiffusersNet(nn.Module):
    """A diffusers ``UNet2DModel`` as a network ``net(x, k) → output``, its output as it is (2C
    channels with a learned variance, read by the score model's ``variance`` convention).
    ``sample_shape`` is the (C, H, W) it was built for."""

    def __init__(self, unet: nn.Module, sample_shape: Sequence[int]):
        super().__init__()
        self.unet = unet
        self.sample_shape = tuple(int(s) for s in sample_shape)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t, return_dict=False)[0]


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict, or a ValueError naming the file."""
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def _model_folders(path: str | os.PathLike) -> tuple[Path, Path]:
    """(network folder, scheduler config file) of a pipeline or a single model folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        text = str(path)
        hint = (
            f"download it first (e.g. huggingface-cli download {text} --local-dir "
            f"{text.rsplit('/', 1)[-1]}) and pass model.path=<that folder>"
        )
        raise ValueError(
            f"model.path={text!r} is not a local folder; sde_gen never downloads (offline): {hint}"
        )
    index = root / "model_index.json"
    if index.is_file():
        components = _read_json(index)
        for key in ("unet", "scheduler"):
            if key not in components:
                raise ValueError(f"{str(index)!r} has no {key!r} entry (a pipeline with a UNet)")
        net_dir, scheduler = root / "unet", root / "scheduler" / SCHEDULER
    else:
        net_dir, scheduler = root, root / SCHEDULER
        if not scheduler.is_file() and (root / "scheduler" / SCHEDULER).is_file():
            scheduler = root / "scheduler" / SCHEDULER
    if not scheduler.is_file():
        raise ValueError(
            f"{str(scheduler)!r} does not exist: model.path={str(path)!r} needs its scheduler "
            "config (a pipeline's scheduler/scheduler_config.json, or scheduler_config.json "
            "beside the model's config.json)"
        )
    return net_dir, scheduler


def _sample_shape(cfg: dict[str, Any], where: str) -> tuple[int, int, int]:
    """(C, H, W) from ``in_channels`` and ``sample_size`` (an int or [H, W])."""
    channels, size = cfg.get("in_channels", 3), cfg.get("sample_size")
    if isinstance(size, int):
        size = [size, size]
    ok = isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)
    if not ok or not isinstance(channels, int):
        raise ValueError(
            f"{where}: sample_size={cfg.get('sample_size')!r} and in_channels={channels!r} must "
            "be integers (sample_size may be [H, W])"
        )
    return channels, size[0], size[1]


def _check_network(
    cfg: dict[str, Any], sched: dict[str, Any], where: str, s_where: str
) -> LearnedVariance | None:
    """Refuse a network the scheduler cannot drive; its learned-variance convention, if any."""
    name = cfg.get("_class_name")
    if name not in NETWORKS:
        raise ValueError(f"{where}: _class_name={name!r} is not one of {NETWORKS}")
    fourier = cfg.get("time_embedding_type", "positional") == "fourier"
    ve = sched.get("_class_name") in VE_SCHEDULERS
    if fourier != ve:
        raise ValueError(
            f"{where}: time_embedding_type={cfg.get('time_embedding_type', 'positional')!r} does "
            f"not fit {s_where}'s _class_name={sched.get('_class_name')!r} (score-SDE VE models "
            "take σ through a fourier embedding; DDPM chains a positional timestep)"
        )
    c_in, c_out = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    variance = sched.get("variance_type", "fixed_small")
    if variance not in FIXED_VARIANCES and variance not in VARIANCE_TYPES:
        known = ", ".join(str(v) for v in FIXED_VARIANCES + tuple(VARIANCE_TYPES))
        raise ValueError(f"{s_where}: variance_type={variance!r} is not one of {known}")
    learned = variance in VARIANCE_TYPES
    if c_out != (2 * c_in if learned else c_in):
        raise ValueError(
            f"{where}: out_channels={c_out!r} does not fit in_channels={c_in!r} with "
            f"{s_where}'s variance_type={variance!r} (learned and learned_range need twice the "
            "channels)"
        )
    return VARIANCE_TYPES[variance]() if learned else None


def _weights(net_dir: Path) -> dict[str, Tensor]:
    """The safetensors weights of a model folder; a pickled-only folder is refused."""
    from safetensors.torch import load_file

    file = net_dir / WEIGHTS
    if not file.is_file():
        if (net_dir / PICKLED).is_file():
            raise ValueError(
                f"{str(net_dir / PICKLED)!r} is a pickle, which sde_gen does not load: convert it "
                f"to {WEIGHTS} (diffusers: model.save_pretrained(folder, safe_serialization=True))"
            )
        raise ValueError(f"{str(file)!r} does not exist (the model's weights)")
    try:
        return load_file(str(file))
    except Exception as e:  # noqa: BLE001 - any read error of a foreign file
        raise ValueError(f"{str(file)!r} is not a readable safetensors file: {e}") from None


def _unet(cfg: dict[str, Any], net_dir: Path, where: str) -> nn.Module:
    """The UNet2DModel of ``cfg`` with its folder's weights (strict)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ValueError(
            "model=diffusers needs the diffusers package (pip install 'sde_gen[bench]')"
        ) from None

    try:
        unet = UNet2DModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    except Exception as e:  # noqa: BLE001 - diffusers raises many kinds on a bad config
        raise ValueError(f"{where}: UNet2DModel cannot be built from it: {e}") from None
    state = _weights(net_dir)
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{str(net_dir / WEIGHTS)!r} does not fit {where}: {first}") from None
    return unet


def _interval(key: str, value: Any) -> tuple[float, float]:
    """[a, b] of finite numbers, a < b, or a ValueError naming ``key``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} must be two numbers [a, b] or null") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{key}={[low, high]} must be finite with a < b")
    return low, high


def load_diffusers(
    path: str,
    clip_x0: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> ScoreModel:
    """The score model of a locally saved diffusers UNet2DModel and its scheduler config.

    ``clip_x0`` = [a, b] clamps Tweedie's x̂0 to [a, b] in every evaluation (``ClippedX0``;
    diffusers' ``clip_sample=True`` is [−1, 1]); off by default. ``shape`` (the data's (C, H, W),
    given by the command lines when ``data=`` is chosen) must be the model's sample shape."""
    net_dir, sched_file = _model_folders(path)
    net_file = net_dir / "config.json"
    where, s_where = repr(str(net_file)), repr(str(sched_file))
    cfg, sched = _read_json(net_file), _read_json(sched_file)
    variance = _check_network(cfg, sched, where, s_where)
    sample = _sample_shape(cfg, where)
    if shape is not None and tuple(int(s) for s in shape) != sample:
        raise ValueError(
            f"{where}: in_channels and sample_size give samples of shape {sample}, but data= "
            f"gives {tuple(shape)}; pick a data set of the model's shape"
        )
    sde, param, time = scheduler_parts(sched, s_where)
    if clip_x0 is not None:
        param = ClippedX0(param, *_interval("model.clip_x0", clip_x0))
    net = DiffusersNet(_unet(cfg, net_dir, where), sample)
    model = ScoreModel(net, sde, param, time, variance)
    return model.eval()
