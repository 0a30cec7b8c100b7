"""∇·drift for the instantaneous change of variables: exact, or Hutchinson's estimate with probes.

The exact divergence takes one backward pass per dimension; Hutchinson's unbiased estimate
E_ε[εᵀ (∂drift/∂x) ε] (Hutchinson 1989; Grathwohl et al. 2019) one per probe, with probes ε
(E εεᵀ = I) fixed along the whole path. A probe is drawn as ``probe(shape, generator, dtype,
device)`` (config group ``likelihood/probe``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "Probe",
    "RademacherProbe",
    "GaussianProbe",
    "exact_divergence",
    "hutchinson_divergence",
]

Shape = tuple[int, ...]
Device = torch.device | str | None
Probe = Callable[[Shape, torch.Generator | None, torch.dtype, Device], Tensor]
"""Draws Hutchinson probes ε with E εεᵀ = I: ``probe(shape, generator, dtype, device)``."""


class _DrawnProbe(ABC):
    """A ``Probe`` from ``draw(shape, generator, device)``, cast to the requested dtype."""

    def __call__(
        self, shape: Shape, generator: torch.Generator | None, dtype: torch.dtype, device: Device
    ) -> Tensor:
        return self.draw(shape, generator, device).to(dtype)

    @abstractmethod
    def draw(self, shape: Shape, generator: torch.Generator | None, device: Device) -> Tensor:
        """ε of ``shape`` in torch's default dtype."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RademacherProbe(_DrawnProbe):
    """ε with i.i.d. entries ±1 (E εεᵀ = I; zero variance when the Jacobian is diagonal)."""

    def draw(self, shape: Shape, generator: torch.Generator | None, device: Device) -> Tensor:
        return 2 * torch.randint(0, 2, shape, generator=generator, device=device) - 1


class GaussianProbe(_DrawnProbe):
    """ε ~ N(0, I)."""

    def draw(self, shape: Shape, generator: torch.Generator | None, device: Device) -> Tensor:
        return torch.randn(shape, generator=generator, device=device)


def exact_divergence(drift: Tensor, x: Tensor) -> Tensor:
    """∇·drift = Σ_i ∂drift_i/∂x_i per sample, by one backward pass per dimension."""
    flat = drift.flatten(1)
    div = torch.zeros(x.shape[0], dtype=drift.dtype, device=drift.device)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
        div = div + grad.flatten(1)[:, i]
    return div


def hutchinson_divergence(drift: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """(1/P) Σ_p ε_pᵀ (∂drift/∂x) ε_p per sample (Hutchinson 1989); probes: (P, *x.shape)."""
    div = torch.zeros(x.shape[0], dtype=drift.dtype, device=drift.device)
    for eps in probes:
        (vjp,) = torch.autograd.grad((drift * eps).sum(), x, retain_graph=True)
        div = div + (vjp * eps).flatten(1).sum(1)
    return div / probes.shape[0]
