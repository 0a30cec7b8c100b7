"""Preconditioning: an ε-predicting network as a score function, s_θ(x, t) = −ε_θ(x, t)/σ_t."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sde_gen.sde import SDE


class ScoreModel(nn.Module):
    """s_θ = −ε_θ/σ_t (survey §4.3) around a network ``eps_net(x, t)`` with continuous t ∈ [0, T].

    The network sees x in its own dtype and t as float32; the schedule is evaluated in float64.
    A network with a learned variance returns 2C channels (ε then v); only ε enters the score.
    """

    def __init__(self, eps_net: nn.Module, sde: SDE):
        super().__init__()
        self.eps_net = eps_net
        self.sde = sde

    def eps_and_extra(
        self, x: Tensor, t: Tensor, level: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """ε_θ(x, t) and, for learned-variance networks, the extra output v (else None). The
        network sees ``sde.network_time(t)`` (t itself but for a learned schedule), or ``level``
        when given (a loss that has it already, with its gradient)."""
        net_t = self.sde.network_time(t) if level is None else level
        out = self.eps_net(x, net_t.to(x.dtype))
        if out.shape == x.shape:
            return out, None
        if (
            out.shape[0] == x.shape[0]
            and out.shape[1] == 2 * x.shape[1]
            and out.shape[2:] == x.shape[2:]
        ):
            return out.chunk(2, dim=1)
        raise ValueError(
            f"eps_net returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
            "expected the input shape (or twice its channels for a learned variance)"
        )

    def eps(self, x: Tensor, t: Tensor, level: Tensor | None = None) -> Tensor:
        """ε_θ(x, t) (``level``: as in ``eps_and_extra``)."""
        return self.eps_and_extra(x, t, level)[0]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """s_θ(x, t) = −ε_θ(x, t) / σ_t."""
        return self.sde.score_from_eps(x, t, self.eps(x, t))

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's x̂₀ = (x + σ_t² s_θ)/γ_t = (x − σ_t ε_θ)/γ_t."""
        return self.sde.x0_from_score(x, t, self(x, t))


def eps_from_score(
    score_fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, x: Tensor, t: Tensor
) -> Tensor:
    """ε = −σ_t s(x, t) for any score function (``SDE.eps_from_score``)."""
    return sde.eps_from_score(x, t, score_fn(x, t))


__all__ = ["ScoreModel", "eps_from_score"]
