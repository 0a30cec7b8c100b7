"""An MLP ε-network for low-dimensional data (toy 2-D sets, Gaussian mixtures)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sde_gen.models.embeddings import SinusoidalEmbedding, TimeMLP

__all__ = ["MLP"]


class MLP(nn.Module):
    """ε_θ(x, t) for x of per-sample shape ``shape`` (flattened): residual SiLU layers with the
    time embedding added to every hidden layer.

    h₀ = W_in x;  h_{k+1} = h_k + W_k SiLU(h_k + P_k e(t));  ε = W_out SiLU(h_L), W_out zero-init.
    ``learn_variance`` doubles the output (ε then v) along dimension 1.
    """

    def __init__(
        self,
        shape: tuple[int, ...] | list[int],
        hidden: int = 256,
        num_layers: int = 3,
        embedding: nn.Module | None = None,
        learn_variance: bool = False,
    ):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) == 0 or min(shape) < 1:
            raise ValueError(f"shape={shape} must be a non-empty per-sample shape")
        if hidden < 1 or num_layers < 1:
            raise ValueError(f"need hidden={hidden} >= 1 and num_layers={num_layers} >= 1")
        self.shape = shape
        self.learn_variance = learn_variance
        d = math.prod(shape)
        embedding = SinusoidalEmbedding(128) if embedding is None else embedding
        self.time = TimeMLP(embedding, hidden)
        self.inp = nn.Linear(d, hidden)
        self.time_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.out = nn.Linear(hidden, d * (2 if learn_variance else 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x has per-sample shape {tuple(x.shape[1:])}, expected {self.shape}")
        emb = torch.nn.functional.silu(self.time(t))
        h = self.inp(x.flatten(1))
        for proj, layer in zip(self.time_proj, self.layers):
            h = h + layer(torch.nn.functional.silu(h + proj(emb)))
        out = self.out(torch.nn.functional.silu(h))
        if self.learn_variance:
            eps, v = out.chunk(2, dim=1)
            return torch.cat([eps.reshape(x.shape), v.reshape(x.shape)], dim=1)
        return out.reshape(x.shape)
