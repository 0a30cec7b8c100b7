"""sde-gen-eval: exact-mixture sanity run, a checkpoint with a closed-form score, discrete bpd."""

import json
import math
import subprocess
import sys

import pytest
import torch
from hand_checkpoints import checkpoint_state
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim.swa_utils import AveragedModel

from sde_gen.data import GaussianMixture, ring_mixture
from sde_gen.evaluate import likelihood_report, run_evaluation
from sde_gen.models.score_model import ScoreModel
from sde_gen.sde import VPSDE
from sde_gen.training.checkpoint import rng_state, save_checkpoint


def _cfg(*overrides: str):
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("eval", overrides=["progress=false", *overrides])


def test_exact_mixture_run_matches_exact_density(tmp_path):
    """data=ring, exact trace: the ODE NLL equals −log q_{t_min} of the mixture (within 0.01)."""
    summary = run_evaluation(_cfg("data=ring", "likelihood.exact_trace=true", "n=16"), tmp_path)
    assert abs(summary["nll_nats"] - summary["nll_exact_nats"]) < 0.01
    assert summary["bpd"] == pytest.approx(summary["nll_nats"] / (2 * math.log(2)))
    assert summary["vlb_bpd"] is None and summary["n"] == 16
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["nll_nats"] == pytest.approx(summary["nll_nats"])


def test_prior_group_is_recorded_and_standard_is_selectable(tmp_path):
    """likelihood/prior=matched (the default) and =standard are recorded; on the centred ring the
    matched prior's mean is zero, so both give the same NLL."""
    matched = run_evaluation(
        _cfg("data=ring", "likelihood.exact_trace=true", "n=8"), tmp_path / "m"
    )
    standard = run_evaluation(
        _cfg("data=ring", "likelihood.exact_trace=true", "n=8", "likelihood/prior=standard"),
        tmp_path / "s",
    )
    assert matched["prior"] == "MatchedPrior(pairs=16, seed=0)"
    assert standard["prior"] == "StandardPrior()"
    assert matched["nll_nats"] == pytest.approx(standard["nll_nats"], abs=1e-9)
    with pytest.raises(ValueError, match="config group 'likelihood' is invalid.*pairs=0"):
        run_evaluation(_cfg("data=ring", "likelihood.prior.pairs=0"), tmp_path / "bad")


def _zero_score_checkpoint(path, raw_bias: float):
    """A ring MLP whose EMA copy outputs ε ≡ 0 (zero-initialised last layer); the raw weights
    get a constant output bias so that ema=true/false differ."""
    cfg = OmegaConf.create(
        {
            "sde": {"_target_": "sde_gen.sde.VPSDE"},
            "data": {"_target_": "sde_gen.data.ring_mixture"},
            "model": {"_target_": "sde_gen.models.MLP", "hidden": 16, "num_layers": 1},
        }
    )
    model = ScoreModel(instantiate(cfg.model, shape=(2,)), instantiate(cfg.sde))
    ema = AveragedModel(model)
    with torch.no_grad():
        model.eps_net.out.bias.fill_(raw_bias)
    return save_checkpoint(path, checkpoint_state(model, cfg, ema=ema, rng=rng_state({})))


def test_checkpoint_with_zero_score_has_closed_form(tmp_path):
    """s ≡ 0: the flow is x_T = (γ_T/γ_{t_min}) x, so log p = log π(x_T) + D log(γ_T/γ_{t_min})."""
    ckpt = _zero_score_checkpoint(tmp_path / "step_00000000.pt", raw_bias=0.5)
    summary = run_evaluation(_cfg(f"checkpoint={ckpt}", "n=32"), tmp_path / "ema")
    sde, x = VPSDE(), ring_mixture().split("test", 32).to(torch.float64)
    t0, t1 = torch.full((32,), 1e-5, dtype=torch.float64), torch.ones(32, dtype=torch.float64)
    ratio = sde.gamma(t1) / sde.gamma(t0)
    logp = sde.prior_logp(ratio[:, None] * x) + 2 * torch.log(ratio)
    assert summary["nll_nats"] == pytest.approx(float(-logp.mean()), abs=1e-3)
    raw = run_evaluation(_cfg(f"checkpoint={ckpt}", "n=32", "ema=false"), tmp_path / "raw")
    assert abs(raw["nll_nats"] - summary["nll_nats"]) > 0.1


def test_discrete_report_relates_nats_and_bits():
    """bpd = (nll − D log Δ)/(D ln 2) with Δ = 2/(K−1), and it matches the Gaussian closed form
    E_u[−log N(x + Δw; 0, v)] within 4 Monte Carlo standard errors of the dequantization."""
    sde, num_bins, dim, s = VPSDE(), 17, 4, 0.6
    mix = GaussianMixture([1.0], torch.zeros(1, dim), s)
    width = 2.0 / (num_bins - 1)
    levels = torch.randint(0, num_bins, (24, dim), generator=torch.Generator().manual_seed(0))
    x = (width * levels - 1).to(torch.float64)
    report = likelihood_report(
        sde,
        mix.score_fn(sde),
        x,
        num_bins=num_bins,
        batch_size=10,
        num_dequant=2,
        generator=torch.Generator().manual_seed(1),
    )
    expected_bpd = (report["nll_nats"] - dim * math.log(width)) / (dim * math.log(2))
    assert report["bpd"] == pytest.approx(expected_bpd, abs=1e-9)
    v = s**2  # at t_min = 1e-5 the VP marginal variance is s² + O(1e-6)
    nll = 0.5 * dim * math.log(2 * math.pi * v) + ((x**2).sum(1) + dim * width**2 / 12) / (2 * v)
    var_sq = (x**2 * width**2 / 3 + width**4 * (1 / 80 - 1 / 144)).sum(1)  # Var Σ(x + Δw)²
    se = float(var_sq.mean().sqrt()) / (2 * v) / math.sqrt(2 * 24)
    assert report["nll_nats"] == pytest.approx(float(nll.mean()), abs=4 * se + 0.01)


def test_bad_config_names_the_value(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="split=valid") as err:
        _cfg("split=valid")
    assert "expected one of [train, test]" in str(err.value.__cause__)
    with pytest.raises(ValueError, match="batch_size=0"):
        run_evaluation(_cfg("batch_size=0"), tmp_path)
    with pytest.raises(ValueError, match="no exact score"):
        run_evaluation(_cfg("data=moons"), tmp_path)


def test_entry_point_prints_summary(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sde_gen.evaluate",
            "data=ring",
            "n=8",
            "progress=false",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "nll=" in out.stdout and "bpd=" in out.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 8


class _PointMassEps(torch.nn.Module):
    """The exact ε of point-mass data x0 = c (row by row): ε = (x_t − γ_t c)/σ_t."""

    def __init__(self, c: torch.Tensor, sde):
        super().__init__()
        self.c, self.sde = c, sde

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma, sigma = self.sde.gamma(t.double())[:, None], self.sde.sigma(t.double())[:, None]
        return ((x - gamma * self.c) / sigma).to(x.dtype)


def test_vlb_bits_per_dim_closed_form_for_exact_point_mass():
    """With the exact ε of point-mass data every KL term vanishes (x̂0 = x0, μ_θ = μ̃), so
    L_vlb = L_T + L_0: KL(N(√ᾱ_T c, 1−ᾱ_T) ‖ N(0, 1)) + −log ∫_bin N(c, β̃_2), per dimension."""
    from sde_gen.evaluate import vlb_bits_per_dim
    from sde_gen.sde import DiscreteVPSDE
    from sde_gen.sde.ddpm import LinearSchedule

    schedule, num_bins = LinearSchedule(T=8, beta_start=0.01, beta_end=0.5), 17
    sde = DiscreteVPSDE(schedule.betas)
    width = 2.0 / (num_bins - 1)
    c = torch.tensor([[-0.5, 0.5, 0.0], [0.25, -0.75, 0.125]], dtype=torch.float64)
    model = ScoreModel(_PointMassEps(c, sde), sde)
    bpd = vlb_bits_per_dim(model, c, num_bins, generator=torch.Generator().manual_seed(0))
    a_T = schedule.alpha_bar[-1]
    prior = 0.5 * (a_T * c**2 + (1 - a_T) - 1 - torch.log(1 - a_T))
    std = math.sqrt(schedule.posterior_variance[1])
    normal = torch.distributions.Normal(0.0, std)
    mass = normal.cdf(torch.tensor(width / 2)) - normal.cdf(torch.tensor(-width / 2))
    expected = float((prior - torch.log(mass)).sum(1).mean()) / (3 * math.log(2))
    assert bpd == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="discrete DDPM"):
        vlb_bits_per_dim(ScoreModel(_PointMassEps(c, VPSDE()), VPSDE()), c, num_bins)


def test_checkpoint_evaluates_an_explicit_data_choice(tmp_path):
    """``data=`` on the command line replaces the trained set (data_chosen): the closed form of
    the zero score on the other ring's test split."""
    ckpt = _zero_score_checkpoint(tmp_path / "step_00000000.pt", raw_bias=0.5)
    cfg = _cfg(f"checkpoint={ckpt}", "n=16", "data=ring", "data.radius=300.0")  # γ_1 x ≈ 2
    chosen = run_evaluation(cfg, tmp_path / "chosen", data_chosen=True)
    trained = run_evaluation(cfg, tmp_path / "trained", data_chosen=False)
    sde, x = VPSDE(), ring_mixture(radius=300.0).split("test", 16).to(torch.float64)
    t0, t1 = torch.full((16,), 1e-5, dtype=torch.float64), torch.ones(16, dtype=torch.float64)
    ratio = sde.gamma(t1) / sde.gamma(t0)
    logp = sde.prior_logp(ratio[:, None] * x) + 2 * torch.log(ratio)
    assert chosen["nll_nats"] == pytest.approx(float(-logp.mean()), abs=1e-3)
    assert abs(trained["nll_nats"] - chosen["nll_nats"]) > 0.5


def test_chunks_are_seeded_apart_and_reproducible(tmp_path):
    """Hutchinson probes come from each chunk's own seed: the same run twice is equal, and the
    chunking changes the estimate only within its Monte Carlo error."""
    over = ("data=mixture64", "n=12")
    a = run_evaluation(_cfg(*over, "batch_size=4"), tmp_path / "a")
    b = run_evaluation(_cfg(*over, "batch_size=4"), tmp_path / "b")
    c = run_evaluation(_cfg(*over, "batch_size=12"), tmp_path / "c")
    assert a["nll_nats"] == b["nll_nats"] and a["batch_size"] == 4 and a["world_size"] == 1
    assert a["nll_nats"] != c["nll_nats"]
    assert abs(a["nll_nats"] - c["nll_nats"]) < 4 * (a["nll_nats_se"] + c["nll_nats_se"])
