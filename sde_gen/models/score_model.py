"""Preconditioning: any network, its parametrisation and its time convention as the score
function s_θ(x, t) = −ε̂(x, t)/σ_t that every solver, loss and the likelihood take."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sde_gen.models.learned_variance import LearnedVariance, SigmoidRange
from sde_gen.models.network_time import NetworkTime, SDETime
from sde_gen.models.parametrisation import Eps, Parametrisation
from sde_gen.sde import SDE


class ScoreModel(nn.Module):
    """The score function s_θ(x, t) = −ε̂/σ_t (survey §4.3) of a network ``eps_net`` whose output
    means what ``param`` says (ε by default; x0, v, the score or EDM's denoiser, see
    ``parametrisation``) and whose time input follows ``time`` (``network_time``; by default the
    SDE's own, t). The name ``eps_net`` is kept for checkpoints; the network sees
    ``param.input_scale · x`` in x's dtype and its time in x's dtype; the schedule is float64.
    A network with a learned variance returns 2C channels (its output, then v); only the first C
    enter the score, and ``variance`` (``learned_variance``; sigmoid_range by default) says how v
    becomes log Σ of a reverse step.
    """

    def __init__(
        self,
        eps_net: nn.Module,
        sde: SDE,
        param: Parametrisation | None = None,
        time: NetworkTime | None = None,
        variance: LearnedVariance | None = None,
    ):
        super().__init__()
        self.eps_net = eps_net
        self.sde = sde
        self.param = Eps() if param is None else param
        self.time = SDETime() if time is None else time
        self.variance = SigmoidRange() if variance is None else variance

    def _coefficients(self, x: Tensor, t: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """(γ_t, σ_t) shaped to broadcast against x, or (1, 1) when ``param`` reads neither."""
        if not self.param.uses_coefficients:
            return 1.0, 1.0
        shape = (-1,) + (1,) * (x.dim() - 1)
        s = t.to(torch.float64)
        return self.sde.gamma(s).view(shape), self.sde.sigma(s).view(shape)

    def eps_and_extra(
        self, x: Tensor, t: Tensor, level: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """ε̂(x, t) implied by the network and, for learned-variance networks, the extra output v
        (else None). The network's time is ``time(sde, t)``, or ``level`` when given (a loss that
        has it already, with its gradient)."""
        net_t = self.time(self.sde, t) if level is None else level
        gamma, sigma = self._coefficients(x, t)
        c_in = self.param.input_scale(gamma, sigma)
        x_in = x if isinstance(c_in, float) and c_in == 1.0 else (c_in * x).to(x.dtype)
        out = self.eps_net(x_in, net_t.to(x.dtype))
        out, extra = _split(out, x)
        eps = self.param.eps(out, x, gamma, sigma)
        return eps.to(x.dtype), extra

    def eps(self, x: Tensor, t: Tensor, level: Tensor | None = None) -> Tensor:
        """ε̂(x, t) (``level``: as in ``eps_and_extra``)."""
        return self.eps_and_extra(x, t, level)[0]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """s_θ(x, t) = −ε̂(x, t) / σ_t."""
        return self.sde.score_from_eps(x, t, self.eps(x, t))

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's x̂₀ = (x + σ_t² s_θ)/γ_t = (x − σ_t ε̂)/γ_t."""
        return self.sde.x0_from_score(x, t, self(x, t))


def _split(out: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """The network's output as (prediction, learned-variance channels or None)."""
    if out.shape == x.shape:
        return out, None
    if (
        out.shape[0] == x.shape[0]
        and out.shape[1] == 2 * x.shape[1]
        and out.shape[2:] == x.shape[2:]
    ):
        pred, extra = out.chunk(2, dim=1)
        return pred, extra
    raise ValueError(
        f"the network returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
        "expected the input shape (or twice its channels for a learned variance)"
    )


__all__ = ["ScoreModel"]
