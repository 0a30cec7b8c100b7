"""The discrete DDPM chain as a VP SDE (survey §3–4): every solver runs on a discrete schedule."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sde_gen.sde.base import SDE

__all__ = ["DiscreteVPSDE"]


class DiscreteVPSDE(SDE):
    """The discrete DDPM chain as a VP SDE: ᾱ(t) log-linear between t_i = i/N, ᾱ(0) = 1.

    At t_i it reproduces the chain exactly (γ_{t_i}² = ᾱ_i, σ_{t_i}² = 1 − ᾱ_i); between nodes
    β(t) is piecewise constant, β(t) = −N log(1 − β_i). Lets every solver run on a discrete
    schedule (linear or cosine) through the same SDE contract.
    """

    def __init__(self, betas: Tensor | np.ndarray):
        try:
            betas = torch.as_tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"betas must be a 1-D sequence of numbers in (0, 1): {e}") from None
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got {tuple(betas.shape)}")
        bad = (~torch.isfinite(betas)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"betas must be finite, got betas[{i}]={betas[i].item()}")
        if betas.min() <= 0 or betas.max() >= 1:
            raise ValueError(f"betas must lie in (0, 1), got range [{betas.min()}, {betas.max()}]")
        self.betas = betas
        self.N = len(betas)
        self.T = 1.0
        # log ᾱ at nodes 0..N
        self._log_alpha_bar = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)]
        )

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(N={self.N})"

    def variational_bound(self) -> str:
        """``ddpm_vlb``: L_vlb of the chain (survey §3.1), a bound on the data's levels."""
        return "ddpm_vlb"

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        pos = t * self.N
        i = pos.floor().clamp(0, self.N - 1).long()
        return i, pos - i

    def _f(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t)
        return 0.5 * self.N * torch.log1p(-self.betas.to(t.device)[i])

    def _g2(self, t: Tensor) -> Tensor:
        return -2 * self._f(t)

    def _log_gamma(self, t: Tensor) -> Tensor:
        i, u = self._segment(t)
        lab = self._log_alpha_bar.to(t.device)
        return 0.5 * (lab[i] + u * (lab[i + 1] - lab[i]))

    def _sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self._log_gamma(t))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Exact inverse: log ᾱ = log sigmoid(λ), then the segment of the piecewise-linear log ᾱ."""
        target = torch.nn.functional.logsigmoid(log_snr.to(torch.float64))
        neg = -self._log_alpha_bar.to(target.device)  # increasing from 0
        i = (torch.searchsorted(neg, -target.contiguous()) - 1).clamp(0, self.N - 1)
        u = (neg[i] + target) / (neg[i] - neg[i + 1])
        return ((i + u.clamp(0, 1)) / self.N).to(log_snr.dtype)

    @property
    def prior_std(self) -> float:
        return 1.0
