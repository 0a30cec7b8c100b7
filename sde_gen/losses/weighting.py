"""Loss weightings λ(t) of denoising score matching (survey §4.3, eq. of the weighted DSM loss).

A weighting is a ``Weighting``: ``weighting(sde, t) -> λ(t)`` (float64, shape (B,)). The base
class gives λ(t)/σ_t² (``over_sigma2``), the unnormalised time density r(t) of every sampler and
plot; subclasses may give its antiderivative F(t) = ∫ λ(s)/σ_s² ds and the inverse, which lets the
importance time sampler draw t ~ r(t) ∝ λ(t)/σ_t² exactly. Configs pick one from the group
``loss/weighting`` (``sigma2``, ``likelihood``, ``ones``).
"""

from __future__ import annotations

from torch import Tensor

from sde_gen.sde import SDE

__all__ = ["Weighting", "SigmaSquaredWeighting", "LikelihoodWeighting", "OnesWeighting"]


class Weighting:
    """λ(t); subclasses with a closed-form F(t) = ∫ λ/σ² override ``antiderivative`` and
    ``inverse_antiderivative`` (else both return None and samplers integrate numerically)."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        raise NotImplementedError

    def over_sigma2(self, sde: SDE, t: Tensor) -> Tensor:
        """λ(t)/σ_t² in float64: the factor of ‖ε − ε_θ‖² in the loss and r(t) up to Z (§4.3)."""
        t = t.double()
        return self(sde, t) / sde.sigma(t) ** 2

    def antiderivative(self, sde: SDE, t: Tensor) -> Tensor | None:
        return None

    def inverse_antiderivative(self, sde: SDE, value: Tensor) -> Tensor | None:
        return None


class SigmaSquaredWeighting(Weighting):
    """λ(t) = σ_t² (Ho et al. 2020's "simple"/perceptual weighting): the integrand is ‖ε − ε_θ‖².

    λ/σ² = 1, so F(t) = t and importance sampling is uniform sampling.
    """

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return sde.sigma(t.double()) ** 2

    def antiderivative(self, sde: SDE, t: Tensor) -> Tensor:
        return t.double()

    def inverse_antiderivative(self, sde: SDE, value: Tensor) -> Tensor:
        return value.double()

    def __repr__(self) -> str:
        return "SigmaSquaredWeighting()"


class LikelihoodWeighting(Weighting):
    """λ(t) = g(t)² (= β(t) for the VP SDE): the DSM loss bounds −log p (Song et al. 2021).

    For every linear SDE, d/dt σ_t² = 2fσ_t² + g², so g²/σ² = −d/dt log SNR(t): F(t) = −log SNR(t),
    F⁻¹(u) = ``sde.t_from_log_snr(−u)``, and t ~ r(t) ∝ g²/σ² is log-SNR drawn uniformly.
    """

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return sde.g2(t.double())

    def antiderivative(self, sde: SDE, t: Tensor) -> Tensor:
        return -sde.log_snr(t.double())

    def inverse_antiderivative(self, sde: SDE, value: Tensor) -> Tensor:
        return sde.t_from_log_snr(-value.double()).double()

    def __repr__(self) -> str:
        return "LikelihoodWeighting()"


class OnesWeighting(Weighting):
    """λ(t) = 1: the integrand is ‖ε − ε_θ‖²/σ_t², i.e. ‖s_θ − ∇log q_t(x_t|x0)‖² (Vincent 2011)."""

    def __call__(self, sde: SDE, t: Tensor) -> Tensor:
        return t.double().new_ones(t.shape)

    def __repr__(self) -> str:
        return "OnesWeighting()"
