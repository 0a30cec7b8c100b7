"""Named 2-D toy distributions without a closed-form density (sampled on demand)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sde_gen.data.base import DataSource, check_count


class _Toy2D(DataSource):
    shape = (2,)

    def __init__(self, noise: float = 0.05, scale: float = 1.0):
        if noise < 0:
            raise ValueError(f"noise={noise} must be >= 0")
        if scale <= 0:
            raise ValueError(f"scale={scale} must be > 0")
        self.noise, self.scale = float(noise), float(scale)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_count(n)
        x = self._clean(n, generator)
        x = x + self.noise * torch.randn(n, 2, dtype=torch.float64, generator=generator)
        return (self.scale * x).to(torch.float32)

    def _clean(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


class SwissRoll(_Toy2D):
    """2-D swiss roll: (θ cos θ, θ sin θ)/5 for θ ~ U(1.5π, 4.5π), roughly unit scale."""

    def _clean(self, n: int, generator: torch.Generator | None) -> Tensor:
        theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, dtype=torch.float64, generator=generator))
        return torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1) / 5.0


class TwoMoons(_Toy2D):
    """Two interleaved half circles, centred (scikit-learn's make_moons geometry)."""

    def _clean(self, n: int, generator: torch.Generator | None) -> Tensor:
        u = math.pi * torch.rand(n, dtype=torch.float64, generator=generator)
        upper = torch.rand(n, generator=generator) < 0.5
        x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
        y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
        return torch.stack([x - 0.5, y - 0.25], 1)


class Checkerboard(_Toy2D):
    """Uniform on the black squares of a 4×4 checkerboard on [−2, 2]²."""

    def __init__(self, noise: float = 0.0, scale: float = 1.0):
        super().__init__(noise, scale)

    def _clean(self, n: int, generator: torch.Generator | None) -> Tensor:
        x1 = 4 * torch.rand(n, dtype=torch.float64, generator=generator) - 2
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        k = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2 - 2
        x2 = u + k + (torch.floor(x1) % 2)
        return torch.stack([x1, x2], 1)
