"""VDM (Kingma et al. 2021): the learned-schedule SDE ``VDMSDE`` and the continuous-time bound
``VDMLoss``, against closed forms (the VP SDE), finite differences, autograd and the exact
density of a Gaussian mixture."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from sde_gen.data import ring_mixture
from sde_gen.losses import DSMLoss, LikelihoodWeighting, UniformTimeSampler, VDMLoss, vdm_vlb
from sde_gen.losses.base import take
from sde_gen.models import MLP, ScoreModel, SinusoidalEmbedding
from sde_gen.sde import VDMSDE, VPSDE, LearnedNegLogSNR, NegLogSNR

RING = ring_mixture(std=0.15)
RING_SQ = 4.0 + 2 * 0.15**2  # E‖x‖² of the ring


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class VPNegLogSNR(NegLogSNR):
    """γ(t) = −log SNR of VPSDE(0.1, 20) exactly, γ' = g²/σ² (γ(0) = −∞: use t > 0)."""

    vp = VPSDE(0.1, 20.0)

    def forward(self, t: Tensor, gate=None) -> tuple[Tensor, Tensor]:
        return -self.vp.log_snr(t), self.vp.g2(t) / self.vp.sigma(t) ** 2


class ExactEps(nn.Module):
    """ε* = −σ_t ∇log q_t of a Gaussian mixture diffused by ``sde``."""

    def __init__(self, mix, sde):
        super().__init__()
        self.mix, self.sde = mix, [sde]  # a list: not a submodule

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        sde = self.sde[0]
        score = self.mix.score(x.double(), t.double(), sde)
        return (-sde.sigma(t.double())[:, None] * score).to(x.dtype)


def tiny_net(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((2,), hidden=32, num_layers=2, embedding=SinusoidalEmbedding(16))


def learned(seed: int = 0, hidden: int = 16, **kw) -> VDMSDE:
    return VDMSDE(LearnedNegLogSNR(hidden=hidden, seed=seed, **kw))


def interior(sde: VDMSDE) -> list[nn.Parameter]:
    return list(sde.neg_log_snr.net.parameters())


# ------------------------------------------------------------------------------------------ SDE
def test_frozen_to_the_vp_schedule_it_is_the_vp_sde():
    """With γ(t) = −log SNR_VP(t): f, g², γ_t, σ_t, log SNR equal VPSDE's closed forms (1e-10)."""
    vdm, vp = VDMSDE(VPNegLogSNR(), level_input=False), VPSDE(0.1, 20.0)
    t = torch.logspace(-6, 0, 60, dtype=torch.float64)
    for name in ("f", "g2", "gamma", "sigma", "log_snr"):
        torch.testing.assert_close(getattr(vdm, name)(t), getattr(vp, name)(t), rtol=1e-10, atol=0)


def test_vp_init_approximates_the_vp_schedule():
    """init=vp between γ_0 = −13.3 and γ_1 = γ_VP(1): log SNR within 0.01 of VP's on
    [0.01, 1] and g² within 0.2 % (the time shift τ_0 ≈ 1.7e-5 alone moves β(0.01) by 0.11 %);
    against VP in its own shifted time τ_0 + (1 − τ_0) t (what it fits) within 1e-3 at every
    t ∈ [0, 1]."""
    vp = VPSDE(0.1, 20.0)
    top = -float(vp.log_snr(torch.ones(1, dtype=torch.float64)))
    sde = VDMSDE(LearnedNegLogSNR(gamma_max=top, init="vp", learned=False))
    t = torch.linspace(0.01, 1, 200, dtype=torch.float64)
    assert (sde.log_snr(t) - vp.log_snr(t)).abs().max() < 0.01
    assert ((sde.g2(t) - vp.g2(t)) / vp.g2(t)).abs().max() < 2e-3
    tau0 = vp.t_from_log_snr(torch.tensor([13.3], dtype=torch.float64))
    u = torch.linspace(0, 1, 2001, dtype=torch.float64)
    shifted = -vp.log_snr(tau0 + (1 - tau0) * u)
    assert (-sde.log_snr(u) - shifted).abs().max() < 1e-3


def test_coefficients_follow_from_the_schedule():
    """σ² + α² = 1; f = d log α/dt and g² = dσ²/dt − 2fσ² by central differences; γ' is the
    exact derivative of γ; γ(0), γ(1) are the end points exactly (random weights)."""
    sde = learned(seed=3, hidden=32)
    with torch.no_grad():
        for p in interior(sde):
            p.add_(torch.randn(p.shape, generator=gen(4)))
    t = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        a2, s2 = sde.gamma(t) ** 2, sde.sigma(t) ** 2
        torch.testing.assert_close(a2 + s2, torch.ones_like(t), rtol=0, atol=1e-15)
        dlog_a = (sde._log_gamma(t + h) - sde._log_gamma(t - h)) / (2 * h)
        torch.testing.assert_close(sde.f(t), dlog_a, rtol=1e-6, atol=0)
        ds2 = (sde._sigma2(t + h) - sde._sigma2(t - h)) / (2 * h)
        torch.testing.assert_close(sde.g2(t), ds2 - 2 * sde.f(t) * s2, rtol=1e-6, atol=1e-12)
        gamma, slope = sde.schedule(t)
        fd = (sde.schedule(t + h)[0] - sde.schedule(t - h)[0]) / (2 * h)
        torch.testing.assert_close(slope, fd, rtol=1e-7, atol=0)
        net = sde.neg_log_snr.net  # D(t) = γ̃(t) − γ̃(0) of the network as written
        torch.testing.assert_close(net.increment(t)[0], net(t) - net(torch.zeros_like(t)))
        g01, _ = sde.schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
        assert g01.tolist() == [float(g) for g in sde.neg_log_snr.ends()]
        assert sde.prior_std == 1.0


def _check_monotone(sde: VDMSDE) -> None:
    t = torch.cat([torch.logspace(-12, -3, 200, dtype=torch.float64), torch.linspace(0, 1, 4001)])
    t = t.double().sort().values
    with torch.no_grad():
        gamma, slope = sde.schedule(t)
        g0, g1 = sde.neg_log_snr.ends()
    assert torch.isfinite(gamma).all() and torch.isfinite(slope).all()
    assert (slope > 0).all() and (torch.diff(gamma) >= 0).all() and g1 >= g0
    assert float(gamma[0]) == float(g0) and float(gamma[-1]) == float(g1)


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
def test_schedule_is_monotone_for_any_weights(scale):
    """Random weights of any size, then 20 Adam steps at lr = 10 (each weight moves by ~10 a step)
    pushing γ both ways: γ stays increasing (γ' > 0), finite, with γ(0) = γ_0, γ(1) = γ_1
    exactly."""
    sde = learned(seed=1, hidden=64)
    g = gen(int(scale))
    with torch.no_grad():
        for p in sde.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    _check_monotone(sde)
    opt = torch.optim.Adam(sde.parameters(), lr=10.0)
    t = torch.rand(64, generator=g, dtype=torch.float64)
    for k in range(20):
        gamma, slope = sde.schedule(t)
        sign = 1 if k % 2 else -1
        loss = sign * (gamma**2).mean() + (slope.log() * torch.cos(7 * t)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _check_monotone(sde)


def test_t_from_log_snr_inverts_the_schedule():
    """Newton inside a bracket: |log SNR(t(λ)) − λ| ≤ 1e-12 on a steep (VP-shaped) and a
    random schedule; targets beyond the end points clamp to t = 0 and 1."""
    steep = VDMSDE(LearnedNegLogSNR(gamma_max=10.0, init="vp", hidden=256, learned=False))
    for sde in (steep, learned(seed=2)):
        g0, g1 = (float(g.detach()) for g in sde.neg_log_snr.ends())
        lam = -torch.linspace(g0, g1, 101, dtype=torch.float64)
        t = sde.t_from_log_snr(lam)
        assert (sde.log_snr(t) - lam).abs().max() < 1e-12
        ends = sde.t_from_log_snr(torch.tensor([-g0 + 5, -g1 - 5], dtype=torch.float64))
        assert ends.tolist() == [0.0, 1.0]


# ----------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("schedule", ["vp", "learned"])
def test_diffusion_loss_is_half_dsm_with_likelihood_weighting(schedule):
    """Same (t, ε): DSM with λ = g² (per sample g²/σ² ‖ε − ε̂‖², no ½) is twice VDM's
    ½ γ' ‖ε − ε̂‖², so L_∞ = ½ (T − t_min) L_DSM. ``vp``: the VDM loss on the VP schedule against
    DSM on VPSDE itself; ``learned``: both on a learned schedule."""
    net = tiny_net()
    vdm_sde = VDMSDE(VPNegLogSNR(), level_input=False) if schedule == "vp" else learned(seed=5)
    dsm_sde = VPSDE(0.1, 20.0) if schedule == "vp" else vdm_sde
    x0 = RING.sample(256, gen(1))
    dsm = DSMLoss(LikelihoodWeighting(), UniformTimeSampler(), t_min=1e-4)
    dsm_model = ScoreModel(net, dsm_sde)
    draws = dsm.draw(dsm_model, x0, gen(2))
    with torch.no_grad():
        per_dsm = dsm.evaluate(dsm_model, x0, draws).loss
        terms = VDMLoss().terms(ScoreModel(net, vdm_sde), x0, draws)
    torch.testing.assert_close(per_dsm.double(), 2 * terms.diffusion.double(), rtol=2e-5, atol=0)


def _double_model(seed: int = 0, sde: VDMSDE | None = None) -> ScoreModel:
    return ScoreModel(tiny_net(seed), sde if sde is not None else learned(seed=6)).double()


def test_end_points_get_the_gradient_of_the_bound():
    """On fixed draws, d(mean bound)/dγ_0 and d/dρ (γ_1 = γ_0 + softplus ρ) by autograd equal
    central finite differences of the bound (float64, 1e-6)."""
    model = _double_model()
    x0 = RING.sample(64, gen(3)).double()
    loss = VDMLoss()
    draws = loss.draw(model, x0, gen(4))
    loss.evaluate(model, x0, draws).loss.mean().backward()
    schedule = model.sde.neg_log_snr
    for p in (schedule.gamma_min, schedule.gap_raw):
        assert p.grad is not None and p.grad.abs() > 0
        with torch.no_grad():
            p += 1e-5
            up = loss.evaluate(model, x0, draws).loss.mean()
            p -= 2e-5
            down = loss.evaluate(model, x0, draws).loss.mean()
            p += 1e-5
        assert float(p.grad) == pytest.approx(float(up - down) / 2e-5, rel=1e-6)


def test_interior_descends_the_variance_of_the_diffusion_loss():
    """variance_gradient=true: the interior weights get ∇ mean(L_∞,i²) (L_∞ in bits/dim) on a
    fixed batch, as autograd of that objective gives it (1e-9); the end points and the
    network get the bound's gradient, as with variance_gradient=false; a finite difference of
    mean(L²) in one interior weight agrees (1e-5)."""
    x0 = RING.sample(64, gen(5)).double()
    dim_ln2 = 2 * math.log(2.0)

    def grads(variance: bool, square: bool) -> list[Tensor]:
        model = _double_model()
        loss = VDMLoss(variance_gradient=variance)
        draws = loss.draw(model, x0, gen(6))
        if square:
            objective = (loss.terms(model, x0, draws).diffusion / dim_ln2).pow(2).mean()
        else:
            objective = loss.evaluate(model, x0, draws).loss.mean()
        objective.backward()
        return [p.grad.clone() for p in model.parameters()]

    names = [n for n, _ in _double_model().named_parameters()]
    variance, bound, square = grads(True, False), grads(False, False), grads(False, True)
    for name, v, b, s in zip(names, variance, bound, square, strict=True):
        if name.startswith("sde.neg_log_snr.net."):
            torch.testing.assert_close(v, s, rtol=1e-9, atol=1e-15)
            assert not torch.allclose(v, b)
        else:
            torch.testing.assert_close(v, b, rtol=1e-12, atol=1e-15)
    model, loss = _double_model(), VDMLoss(variance_gradient=False)
    draws = loss.draw(model, x0, gen(6))
    a_raw = model.sde.neg_log_snr.net.a_raw

    def mean_square() -> float:
        return float((loss.terms(model, x0, draws).diffusion / dim_ln2).pow(2).mean())

    with torch.no_grad():
        a_raw += 1e-4
        up = mean_square()
        a_raw -= 2e-4
        down = mean_square()
    k = names.index("sde.neg_log_snr.net.a_raw")
    assert float(variance[k]) == pytest.approx((up - down) / 2e-4, rel=1e-5)


@pytest.mark.parametrize("gamma_max", [0.0, 5.0])
def test_bound_with_the_exact_score_is_above_the_exact_nll(gamma_max):
    """Ring mixture, exact ε under the VDM SDE (γ_0 = −13.3): mean over 256 x of the Monte Carlo
    bound (1024 stratified (t, ε) per x) minus the exact −log q(x). Theory: E[bound − NLL] =
    KL(q(z_1) ‖ N(0, I)) + E KL(q(x|z_0) ‖ p(x|z_0)); the diffusion term adds 0 for the exact
    ε and the decoder's KL is O(e^{γ_0}) ≈ 1e-6, so the gap is the prior's KL, estimated from
    40000 exact log q_1: 0.157 nats at γ_1 = 0, 3e-5 at γ_1 = 5. Control variate of mean 0
    given (x, t): ½γ'(‖r‖² − E‖r‖²), r = ε − ε*_k(z_t) the residual of x's own component k
    alone (closed form). Asserted: |gap − KL| < 3 SE (SE ≈ 0.013 nats), and at γ_1 = 0
    gap − 3 SE > 0 (the bound is above the NLL)."""
    sde = VDMSDE(LearnedNegLogSNR(gamma_max=gamma_max, hidden=16, learned=False), False)
    model = ScoreModel(ExactEps(RING, sde), sde).double()
    n, k, g, dim, s2_data = 256, 1024, gen(7), 2, 0.15**2
    x = RING.sample64(n, g)
    tiled = x.repeat(k, 1)
    loss = VDMLoss(variance_gradient=False)
    with torch.no_grad():
        draws = loss.draw(model, tiled, g)
        terms = loss.terms(model, tiled, draws)
        gamma, slope = sde.schedule(draws["t"])
    a2, s2 = torch.sigmoid(-gamma), torch.sigmoid(gamma)
    offset = tiled - RING.means[torch.cdist(tiled, RING.means).argmin(1)]  # x − μ_k
    v = a2 * s2_data + s2  # Var(z_t | component k) per dimension
    r = draws["noise"] * (1 - s2 / v)[:, None] - ((s2 * a2).sqrt() / v)[:, None] * offset
    mean_r2 = dim * (1 - s2 / v) ** 2 + s2 * a2 * offset.pow(2).sum(1) / v**2
    control = 0.5 * slope * (r.pow(2).sum(1) - mean_r2)
    diffusion = (terms.diffusion - control).reshape(k, n).mean(0)
    bound = diffusion + terms.prior[:n] + terms.reconstruction[:n]
    gap = bound - (-RING.log_prob(x))
    se = float(gap.std() / math.sqrt(n))
    ones = torch.ones(40000, dtype=torch.float64)
    z1 = sde.marginal_sample(RING.sample64(40000, g), ones)
    with torch.no_grad():
        log_ratio = RING.log_prob(z1, ones, sde) + 0.5 * z1.pow(2).sum(1) + math.log(2 * math.pi)
    kl, kl_se = float(log_ratio.mean()), float(log_ratio.std() / 200)
    assert se < 0.02
    assert abs(float(gap.mean()) - kl) < 3 * math.hypot(se, kl_se)
    if gamma_max == 0.0:
        assert kl > 0.1 and float(gap.mean()) - 3 * se > 0


def test_gaussian_data_bound_in_closed_form():
    """1-D data N(m, s²), exact ε: E‖ε − ε*‖² = α²s²/(α²s² + σ²), so E[L_∞] = ½∫γ' α²s²/V dt
    = ½[v − log(1 + e^v/s²)]_{γ_0}^{γ_1} whatever the interior (quadrature on two random
    schedules with the same end points, 1e-9); with the loss's L_prior and L_recon, E[bound] −
    E[−log p(x)] = KL(q(z_1) ‖ N(0, 1)) + E KL(q(x|z_0) ‖ N(z_0/α_0, e^{γ_0})) (1e-10)."""
    from scipy.integrate import quad

    from sde_gen.losses.vdm import prior_kl, reconstruction

    m, s = 0.7, 0.3
    values = []
    for seed in (1, 2):
        sde = learned(seed=seed, hidden=16, learned=False)
        with torch.no_grad():
            for p in interior(sde):
                p.add_(torch.randn(p.shape, generator=gen(seed)))

        def integrand(t: float, sde=sde) -> float:
            gamma, slope = sde.schedule(torch.tensor([t], dtype=torch.float64))
            a2, s2 = torch.sigmoid(-gamma), torch.sigmoid(gamma)
            return float(0.5 * slope * a2 * s * s / (a2 * s * s + s2))

        values.append(quad(integrand, 0, 1, epsabs=1e-13, epsrel=1e-12, limit=200)[0])
    g0, g1 = (float(g) for g in sde.neg_log_snr.ends())

    def antiderivative(v: float) -> float:
        return 0.5 * (v - math.log1p(math.exp(v) / s**2))

    closed = antiderivative(g1) - antiderivative(g0)
    assert values[0] == pytest.approx(closed, rel=1e-9) and values[1] == pytest.approx(
        closed, rel=1e-9
    )
    x = torch.tensor([[m - s], [m + s]], dtype=torch.float64)  # exact for a quadratic in x
    g0_t, g1_t = (torch.tensor(g, dtype=torch.float64) for g in (g0, g1))
    prior = float(prior_kl(x, g1_t).mean())
    bound = closed + prior + float(reconstruction(x, g0_t)[0])
    nll = 0.5 * math.log(2 * math.pi * s**2) + 0.5
    a1, s1 = 1 / (1 + math.exp(g1)), 1 / (1 + math.exp(-g1))  # α_1², σ_1²
    v1 = a1 * s**2 + s1
    kl_prior = 0.5 * (v1 + a1 * m**2 - 1 - math.log(v1))
    a0, s0 = 1 / (1 + math.exp(g0)), 1 / (1 + math.exp(-g0))
    v0 = a0 * s**2 + s0
    post = s**2 * s0 / v0  # Var(x | z_0)
    kl_decoder = 0.5 * (g0 - math.log(post) + (post + s0**2 / (a0 * v0)) / math.exp(g0) - 1)
    assert bound - nll == pytest.approx(kl_prior + kl_decoder, rel=1e-8, abs=1e-10)


def test_vdm_vlb_averages_stratified_draws_of_the_loss():
    """``vdm_vlb`` (what ``sde-gen-eval`` reports) is the loss's bound averaged over k draws per
    sample whose times are stratified: sample b's times are u + b/(kB) + j/k (mod 1)."""
    model, x, k = _double_model(), RING.sample64(8, gen(8)), 4
    vlb = vdm_vlb(model, x, None, gen(9), time_draws=k)
    loss = VDMLoss(variance_gradient=False)
    tiled = x.repeat(k, 1)
    draws = loss.draw(model, tiled, gen(9))
    with torch.no_grad():
        manual = loss.terms(model, tiled, draws).total().reshape(k, 8).mean(0)
    torch.testing.assert_close(vlb, manual, rtol=1e-12, atol=0)
    t = draws["t"].reshape(k, 8).sort(0).values
    torch.testing.assert_close(torch.diff(t, dim=0), torch.full((k - 1, 8), 1 / k, dtype=t.dtype))


def test_time_draws_and_dequantisation():
    """antithetic: the n times are (u + i/n) mod 1, sorted spacing exactly 1/n; i.i.d. otherwise
    (mean within 4 SE of ½). Discrete data (K levels): offsets uniform on (−Δ/2, Δ/2),
    Δ = 2/(K − 1), and the bits/dim are the continuous bound of x + offset shifted by
    log₂((K − 1)/2) (``nats_to_bits_per_dim``)."""
    model, n = _double_model(), 4096
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    t = VDMLoss().draw(model, x0, gen(10))["t"].sort().values
    torch.testing.assert_close(torch.diff(t), torch.full((n - 1,), 1 / n, dtype=t.dtype))
    iid = VDMLoss(antithetic=False).draw(model, x0, gen(10))["t"]
    assert abs(float(iid.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)
    K, width = 17, 2.0 / 16
    x = (torch.randint(0, K, (64, 2), generator=gen(11)) * width - 1).double()
    discrete = VDMLoss(num_bins=K)
    draws = discrete.draw(model, x, gen(12))
    off = draws["dequant"]
    assert off.abs().max() < width / 2 and abs(float(off.mean())) < 4 * width / math.sqrt(12 * 128)
    with torch.no_grad():
        bpd = discrete.evaluate(model, x, draws).loss
        cont = VDMLoss().evaluate(
            model, x + off, {k: v for k, v in draws.items() if k != "dequant"}
        )
    torch.testing.assert_close(bpd, cont.loss + math.log2(16 / 2), rtol=1e-12, atol=1e-12)


def test_loss_is_the_mean_of_its_evaluated_slices():
    """loss(model, x0, g) = mean of evaluate(draw) with the same generator; slices add up (the
    trainer's DDP/accumulation path)."""
    model, loss = _double_model(), VDMLoss()
    x0 = RING.sample64(10, gen(13))
    whole = loss(model, x0, gen(14))
    draws = loss.draw(model, x0, gen(14))
    parts = [loss.evaluate(model, x0[s], take(draws, s)).loss for s in (slice(0, 3), slice(3, 10))]
    torch.testing.assert_close(torch.cat(parts).mean(), whole, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="sde=vdm"):
        loss(ScoreModel(tiny_net(), VPSDE()), x0, gen(0))
