"""Samplers of the discrete step t ∈ {1..T} for the DDPM losses, with importance weights.

A sampler is called as ``sampler(n, T, generator, device) -> (steps, weights)``: steps (n,) int64
in 1..T drawn from p_t, weights = 1/(T p_t), so that E_p[w ℓ_t] = E_{t~U}[ℓ_t] = (1/T) Σ_t ℓ_t.
``update(steps, losses, T)`` feeds back per-sample losses (a no-op for the uniform sampler).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["StepSampler", "UniformStepSampler", "LossAwareStepSampler"]


class StepSampler:
    learns = False  # True: ``update`` changes p_t (the trainer then gathers every rank's losses)

    def __call__(
        self, n: int, T: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor]:
        p = self.probs(T)
        dev = generator.device if generator is not None else "cpu"
        idx = torch.multinomial(p.to(dev), n, replacement=True, generator=generator).cpu()
        return (idx + 1).to(device), (1.0 / (T * p[idx])).to(device)

    def probs(self, T: int) -> Tensor:
        """p_t for t = 1..T (float64, shape (T,))."""
        return torch.full((T,), 1.0 / T, dtype=torch.float64)

    def update(self, steps: Tensor, losses: Tensor, T: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformStepSampler(StepSampler):
    """p_t = 1/T, weights 1."""

    def __call__(self, n, T, generator=None, device=None):
        dev = generator.device if generator is not None else "cpu"
        steps = torch.randint(1, T + 1, (n,), generator=generator, device=dev).to(device)
        return steps, torch.ones(n, dtype=torch.float64, device=device)

    def __repr__(self) -> str:
        return "UniformStepSampler()"


class LossAwareStepSampler(StepSampler):
    """p_t ∝ √E[L_t²] over the last ``history`` losses of each step, mixed with ``uniform_prob``
    of the uniform law (Nichol & Dhariwal 2021, §3.3); uniform until every step has ``history``
    values. The history is state: it is in ``state_dict()``. Under DDP the trainer gathers the
    losses of every rank, so every rank keeps the same history.
    """

    learns = True

    def __init__(self, history: int = 10, uniform_prob: float = 0.001):
        if history < 1:
            raise ValueError(f"history={history} must be >= 1")
        if not 0 < uniform_prob <= 1:
            raise ValueError(f"uniform_prob={uniform_prob} must lie in (0, 1]")
        self.history, self.uniform_prob = history, uniform_prob
        self.losses: Tensor | None = None  # (T, history) second-moment buffer
        self.counts: Tensor | None = None  # (T,)

    def __repr__(self) -> str:
        return f"LossAwareStepSampler(history={self.history}, uniform_prob={self.uniform_prob})"

    def _init(self, T: int) -> None:
        if self.losses is None or self.losses.shape[0] != T:
            self.losses = torch.zeros(T, self.history, dtype=torch.float64)
            self.counts = torch.zeros(T, dtype=torch.int64)

    def warmed_up(self, T: int) -> bool:
        self._init(T)
        return bool((self.counts >= self.history).all())

    def probs(self, T: int) -> Tensor:
        if not self.warmed_up(T):
            return super().probs(T)
        p = self.losses.pow(2).mean(1).sqrt()
        p = p / p.sum()
        return (1 - self.uniform_prob) * p + self.uniform_prob / T

    def update(self, steps: Tensor, losses: Tensor, T: int) -> None:
        """Append each per-sample loss to the history of its step (oldest dropped)."""
        self._init(T)
        for s, loss in zip(steps.tolist(), losses.detach().double().cpu().tolist()):
            i = s - 1
            if self.counts[i] == self.history:
                self.losses[i, :-1] = self.losses[i, 1:].clone()
                self.losses[i, -1] = loss
            else:
                self.losses[i, self.counts[i]] = loss
                self.counts[i] += 1

    def state_dict(self) -> dict:
        return {"losses": self.losses, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.losses, self.counts = state.get("losses"), state.get("counts")
