"""Time embeddings t ↦ e(t) ∈ R^dim for the score networks (survey §4.3, network conditioning).

Two choices, each a config node with a ``_target_``:
``SinusoidalEmbedding`` (Transformer positions on s·t, Ho et al. 2020) and
``FourierEmbedding`` (random Fourier features with fixed Gaussian frequencies, Song et al. 2021).
Both take t of shape (B,) and return (B, dim).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalEmbedding", "FourierEmbedding"]


def _check_dim(dim: int) -> None:
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim={dim} must be an even integer >= 2")


def _out_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


class SinusoidalEmbedding(nn.Module):
    """e(t) = [sin(s t ω_k), cos(s t ω_k)]_{k<dim/2}, ω_k = P^{−k/(dim/2)}  (Vaswani et al. 2017).

    ``scale`` s maps continuous t ∈ [0, 1] to the step range of the discrete chain (s = 1000 as in
    DDPM); P = ``max_period``.
    """

    def __init__(self, dim: int = 128, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        _check_dim(dim)
        if scale <= 0 or max_period <= 1:
            raise ValueError(f"need scale={scale} > 0 and max_period={max_period} > 1")
        self.dim, self.scale, self.max_period = dim, float(scale), float(max_period)
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """(B,) → (B, dim); the phase is computed in float64, the result has t's dtype."""
        arg = self.scale * t.to(torch.float64)[:, None] * self.freqs.to(torch.float64)[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).to(_out_dtype(t))


class FourierEmbedding(nn.Module):
    """e(t) = [sin(2π t W_k), cos(2π t W_k)], W_k ~ N(0, scale²) fixed (Tancik et al. 2020).

    The frequencies are drawn once from a generator seeded with ``seed`` and stored as a buffer,
    so they travel with the network's state dict.
    """

    def __init__(self, dim: int = 128, scale: float = 16.0, seed: int = 0):
        super().__init__()
        _check_dim(dim)
        if scale <= 0:
            raise ValueError(f"Fourier scale={scale} must be > 0")
        self.dim, self.scale = dim, float(scale)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t.to(torch.float64)[:, None] * self.W.to(torch.float64)[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).to(_out_dtype(t))


class TimeMLP(nn.Module):
    """e(t) → Linear → SiLU → Linear: the learned part of the time conditioning."""

    def __init__(self, embedding: nn.Module, out_dim: int):
        super().__init__()
        if not isinstance(getattr(embedding, "dim", None), int):
            raise ValueError(f"embedding {embedding!r} must have an integer attribute `dim`")
        self.embedding = embedding
        self.net = nn.Sequential(
            nn.Linear(embedding.dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.net(self.embedding(t).to(self.net[0].weight.dtype))
