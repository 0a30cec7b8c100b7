"""diffusers' ``UNet2DModel`` as an sde_gen network, so that a trained one exports as a diffusers
folder (``networks.export``). Needs the ``diffusers`` package (``pip install diffusers``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["DiffusersUNet"]


class DiffusersUNet(nn.Module):
    """A fresh ``UNet2DModel`` for data of ``shape`` (C, H, W), built from ``config`` (its
    keyword arguments: ``block_out_channels``, ``down_block_types`` …); sample size and channels
    come from ``shape`` (2C output channels with ``learn_variance``, iDDPM's learned range).
    ``forward(x, t) = unet(x, t).sample``: the time is what ``model/time`` gives (for diffusers'
    timesteps, ``DiscreteIndex(N, 1)``)."""

    def __init__(self, shape: Sequence[int], learn_variance: bool = False, **config: Any):
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError as e:
            raise ValueError(f"model=diffusers_unet needs the diffusers package: {e}") from None
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"model=diffusers_unet needs square images (C, H, H), got {shape}")
        if not isinstance(learn_variance, bool):
            raise ValueError(f"learn_variance={learn_variance!r} must be true or false")
        for key in ("sample_size", "in_channels", "out_channels"):
            if key in config:
                raise ValueError(f"model.{key} is set from the data's shape {shape}; drop it")
        kwargs = {k: _plain(v) for k, v in config.items()}
        channels = shape[0] * (2 if learn_variance else 1)
        try:
            self.unet = UNet2DModel(
                sample_size=shape[1], in_channels=shape[0], out_channels=channels, **kwargs
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"model=diffusers_unet: UNet2DModel refuses the config: {e}") from e
        self.learn_variance = learn_variance

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t).sample


def _plain(value: Any) -> Any:
    """Config lists as tuples (what ``UNet2DModel`` records in its JSON config)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_plain(v) for v in value)
    return value
