"""The likelihood as an object from the config group ``likelihood`` (pf_ode, ddpm_vlb, vdm_vlb).

The pinned numbers are those of the 16-parameter ``ode_log_likelihood`` / ``bits_per_dim`` and of
``evaluate.vlb_bpd`` before the likelihood became an object (commit 3aca789), on the same inputs.
"""

import inspect
import math
import re
from pathlib import Path

import pytest
import torch
from hand_checkpoints import checkpoint_state
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import sde_gen.evaluate
from sde_gen.data import GaussianMixture, ring_mixture
from sde_gen.evaluate import own_bound, vlb_bpd
from sde_gen.likelihood.base import Likelihood, LikelihoodResult
from sde_gen.likelihood.divergence import GaussianProbe, RademacherProbe
from sde_gen.likelihood.ode import PFODELikelihood, ode_log_likelihood
from sde_gen.likelihood.priors import MatchedPrior, StandardPrior
from sde_gen.losses.bounds import DDPMBound, VDMBound
from sde_gen.models import MLP
from sde_gen.models.embeddings import SinusoidalEmbedding
from sde_gen.models.score_model import ScoreModel
from sde_gen.sde import VDMSDE, VPSDE, DiscreteVPSDE, LearnedNegLogSNR
from sde_gen.sde.coordinates import AngleCoordinates, ScaledCoordinates, TimeCoordinates
from sde_gen.sde.ddpm import LinearSchedule

MIX = GaussianMixture([0.3, 0.7], [[1.0, -0.5], [-0.5, 0.25]], [0.3, 0.5])
OLD_EXACT = [-2.3742877261314623, -1.2415181680868212, -1.1482455049520668, -1.0026462717217577]
OLD_HUTCHINSON = [-3.509053033956591, -2.1966122380395308, -1.9749294406467515, -0.6495347844182542]
OLD_BPD = [4.288385337295103, 6.207152059936535, 5.6773424925857645]  # 2 draws, 33 NFE
OLD_BPD_OPTIONS = [4.295053316066747, 6.244436537509407, 5.700565828886013]  # 74 NFE
OLD_VDM = [5.961714761327649, 2.7740562960069615, 5.362260528809305, 5.885196270929742,
           -0.32852147982135665, 4.339586103673698]  # fmt: skip
OLD_VDM_LEVELS = [8.955871558001617, 5.7703106879223505, 8.358145347215757, 8.881111760913676,
                  2.664719005415302, 7.332841521130042]  # fmt: skip
OLD_DDPM = [5.766016603970142, 4.604375807676393, 9.775676083628976, 14.50789648385814,
            10.185491789734192, 6.360320189876603]  # fmt: skip


def _compose(*overrides: str):
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def _x() -> torch.Tensor:
    return MIX.sample64(4, torch.Generator().manual_seed(0))


def _levels(n: int, seed: int = 0) -> torch.Tensor:
    levels = torch.randint(0, 17, (n, 2), generator=torch.Generator().manual_seed(seed))
    return (levels * 2 / 16 - 1).double()


def test_pf_ode_object_equals_the_old_function_and_the_closed_form():
    """On the exact mixture score: the object's log p equals the old function's to 1e-10 (exact
    trace, and Hutchinson with 2 Gaussian probes), 27 NFE (1 for the matched prior), and lies
    within 1e-3 nats of the closed form log q_{t_min}(x)."""
    sde, x = VPSDE(), _x()
    exact = PFODELikelihood(exact_trace=True)(sde, MIX.score_fn(sde), x)
    assert isinstance(exact, LikelihoodResult) and exact.nfe == 27
    torch.testing.assert_close(exact.logp, torch.tensor(OLD_EXACT, dtype=torch.float64),
                               rtol=0, atol=1e-10)  # fmt: skip
    closed = MIX.log_prob(x, torch.full((4,), 1e-5, dtype=torch.float64), sde)
    assert float((exact.logp - closed).abs().max()) < 1e-3
    assert torch.allclose(exact.bpd, -exact.logp / (2 * math.log(2)), rtol=1e-14, atol=0)
    hutch = PFODELikelihood(probe=GaussianProbe(), num_probes=2)
    result = hutch(sde, MIX.score_fn(sde), x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(result.logp, torch.tensor(OLD_HUTCHINSON, dtype=torch.float64),
                               rtol=0, atol=1e-10)  # fmt: skip
    assert result.nfe == 27
    logp, nfe = ode_log_likelihood(sde, MIX.score_fn(sde), x, exact_trace=True)
    assert torch.equal(logp, exact.logp) and nfe == exact.nfe


def test_pf_ode_bits_per_dim_equals_the_old_function():
    """``bits_per_dim`` on levels (dequantization and probes from one generator) equals the old
    function's numbers to 1e-10, with its options and without (2 stacked draws: 33 NFE)."""
    sde, x = VPSDE(), _levels(3)
    result = PFODELikelihood().bits_per_dim(
        sde, MIX.score_fn(sde), x, 17, 2, torch.Generator().manual_seed(4)
    )
    assert result.nfe == 33
    torch.testing.assert_close(result.bpd, torch.tensor(OLD_BPD, dtype=torch.float64),
                               rtol=0, atol=1e-10)  # fmt: skip
    expected_logp = -(result.bpd * 2 * math.log(2) + 2 * math.log(2 / 16))
    torch.testing.assert_close(result.logp, expected_logp, rtol=0, atol=1e-12)
    options = PFODELikelihood(
        prior=StandardPrior(), coordinates=TimeCoordinates(), method="DOP853", rtol=1e-6
    )
    other = options.bits_per_dim(sde, MIX.score_fn(sde), x, 17, 1, torch.Generator().manual_seed(4))
    assert other.nfe == 74
    torch.testing.assert_close(other.bpd, torch.tensor(OLD_BPD_OPTIONS, dtype=torch.float64),
                               rtol=0, atol=1e-10)  # fmt: skip


def test_pf_ode_entry_builds_the_object_with_its_nested_groups():
    """``likelihood=pf_ode`` (the default) builds PFODELikelihood with the function's defaults
    and the nested groups coordinates, prior and probe; every option of the group is a key."""
    default = instantiate(_compose().likelihood)
    assert isinstance(default, PFODELikelihood)
    assert repr(default) == repr(PFODELikelihood())
    assert isinstance(default.coordinates, AngleCoordinates)
    assert default.prior == MatchedPrior() and isinstance(default.probe, RademacherProbe)
    chosen = instantiate(
        _compose(
            "likelihood/coordinates=scaled", "likelihood/prior=standard",
            "likelihood/probe=gaussian", "likelihood.exact_trace=true",
            "likelihood.num_probes=3", "likelihood.method=DOP853", "likelihood.t_min=1e-4",
            "likelihood.rtol=1e-6", "likelihood.atol=1e-6", "likelihood.logp_atol=1e-4",
        ).likelihood
    )  # fmt: skip
    assert isinstance(chosen.coordinates, ScaledCoordinates)
    assert isinstance(chosen.prior, StandardPrior) and isinstance(chosen.probe, GaussianProbe)
    assert (chosen.exact_trace, chosen.num_probes, chosen.method) == (True, 3, "DOP853")
    assert (chosen.t_min, chosen.rtol, chosen.atol, chosen.logp_atol) == (1e-4, 1e-6, 1e-6, 1e-4)
    time = instantiate(_compose("likelihood/coordinates=time").likelihood).coordinates
    assert type(time) is TimeCoordinates


def _vdm_model() -> ScoreModel:
    torch.manual_seed(0)
    net = MLP((2,), hidden=32, num_layers=2, embedding=SinusoidalEmbedding(16))
    return ScoreModel(net, VDMSDE(LearnedNegLogSNR(hidden=16, seed=6))).double()


def _ddpm_model() -> ScoreModel:
    sde = DiscreteVPSDE(LinearSchedule(T=8, beta_start=0.01, beta_end=0.5).betas)
    torch.manual_seed(1)
    net = MLP((2,), hidden=16, num_layers=1, embedding=SinusoidalEmbedding(16))
    return ScoreModel(net, sde).double()


def _ring_points() -> tuple[torch.Tensor, torch.Tensor]:
    x = ring_mixture().split("test", 6).double()
    return x, torch.round((x.clamp(-1, 1) + 1) / 2 * 16) * 2 / 16 - 1


def test_bound_entries_equal_the_old_evaluate_numbers():
    """The entries ``vdm_vlb`` and ``ddpm_vlb`` (as the config builds them) give the bits/dim of
    the old ``evaluate.vlb_bpd`` to 1e-10: VDM on continuous and on 17-level data, DDPM's L_vlb
    on levels; ``vlb_bpd`` (now through the SDE's own bound) gives them too."""
    x, levels = _ring_points()
    vdm, ddpm = _vdm_model(), _ddpm_model()
    vdm_bound = instantiate(_compose("likelihood=vdm_vlb").likelihood)
    ddpm_bound = instantiate(_compose("likelihood=ddpm_vlb").likelihood)
    assert isinstance(vdm_bound, VDMBound) and vdm_bound.time_draws == 16
    assert isinstance(ddpm_bound, DDPMBound) and ddpm_bound.bound and vdm_bound.bound

    def close(got: torch.Tensor, old: list[float]) -> None:
        torch.testing.assert_close(got, torch.tensor(old, dtype=torch.float64), rtol=0, atol=1e-10)

    g = torch.Generator
    cont = vdm_bound(vdm.sde, vdm, x, g().manual_seed(5))
    close(cont.bpd, OLD_VDM)
    assert cont.nfe == 1
    close(vdm_bound.bits_per_dim(vdm.sde, vdm, levels, 17, 1, g().manual_seed(5)).bpd,
          OLD_VDM_LEVELS)  # fmt: skip
    chain = ddpm_bound.bits_per_dim(ddpm.sde, ddpm, levels, 17, 1, g().manual_seed(5))
    close(chain.bpd, OLD_DDPM)
    assert chain.nfe == 8  # one network call per step of the T = 8 chain
    close(vlb_bpd(vdm, x, None, g().manual_seed(5)), OLD_VDM)
    close(vlb_bpd(vdm, levels, 17, g().manual_seed(5)), OLD_VDM_LEVELS)
    close(vlb_bpd(ddpm, levels, 17, g().manual_seed(5)), OLD_DDPM)


def test_bounds_name_what_they_cannot_measure():
    """DDPM's bound needs levels; a bound needs the trained ScoreModel, not a bare score."""
    ddpm, (x, levels) = _ddpm_model(), _ring_points()
    assert DDPMBound.discrete_only and not VDMBound.discrete_only
    with pytest.raises(ValueError, match="ddpm_vlb needs discrete data"):
        DDPMBound()(ddpm.sde, ddpm, x)
    sde = VPSDE()
    with pytest.raises(ValueError, match="vdm_vlb needs a trained ScoreModel.*MixtureScore"):
        VDMBound()(sde, MIX.score_fn(sde), x)
    with pytest.raises(ValueError, match="discrete DDPM"):
        DDPMBound().bits_per_dim(sde, ScoreModel(ddpm.eps_net, sde), levels, 17)
    with pytest.raises(ValueError, match="time_draws=0"):
        VDMBound(time_draws=0)


@pytest.mark.parametrize(
    ("sde_entry", "bound_entry", "bound_class"),
    [
        ("vp", None, None),
        ("subvp", None, None),
        ("ve", None, None),
        ("linear", None, None),
        ("ddpm_linear", "ddpm_vlb", DDPMBound),
        ("ddpm_cosine", "ddpm_vlb", DDPMBound),
        ("vdm", "vdm_vlb", VDMBound),
    ],
)
def test_the_sde_names_its_own_bound(sde_entry, bound_entry, bound_class):
    """``SDE.variational_bound()`` names the ``likelihood`` entry of each SDE family's bound
    (None: only the PF-ODE); ``own_bound`` builds it from that entry's config file."""
    sde = instantiate(_compose(f"sde={sde_entry}").sde)
    assert sde.variational_bound() == bound_entry
    bound = own_bound(sde)
    if bound_class is None:
        assert bound is None
    else:
        assert type(bound) is bound_class and isinstance(bound, Likelihood) and bound.bound


def test_every_sde_entry_is_covered_and_evaluate_has_no_isinstance_on_sdes():
    """The families above are every file of conf/sde; evaluate.py asks the SDE, never its class."""
    conf = Path(sde_gen.evaluate.__file__).parent / "conf" / "sde"
    names = {p.stem for p in conf.glob("*.yaml")}
    assert names == {"vp", "subvp", "ve", "linear", "ddpm_linear", "ddpm_cosine", "vdm"}
    source = inspect.getsource(sde_gen.evaluate)
    assert not re.search(r"isinstance\([^)]*(sde|SDE)", source)
    assert "VDMSDE" not in source and "DiscreteVPSDE" not in source


def test_likelihood_options_name_the_bad_value():
    with pytest.raises(ValueError, match="t_min=inf must be a finite number > 0"):
        PFODELikelihood(t_min=math.inf)
    with pytest.raises(ValueError, match="num_probes=True"):
        PFODELikelihood(num_probes=True)
    with pytest.raises(ValueError, match=r"t_min=2.0 must lie in \(0, T=1.0\)"):
        PFODELikelihood(t_min=2.0)(VPSDE(), MIX.score_fn(VPSDE()), _x())


def _ddpm_checkpoint(path: Path) -> Path:
    """A ring MLP on an 8-step DDPM chain, saved as sde-gen-train would."""
    from omegaconf import OmegaConf

    from sde_gen.training.checkpoint import rng_state, save_checkpoint

    betas = {"_target_": "sde_gen.sde.ddpm.linear_betas", "T": 8, "beta_start": 0.01,
             "beta_end": 0.5}  # fmt: skip
    cfg = OmegaConf.create(
        {
            "sde": {"_target_": "sde_gen.sde.DiscreteVPSDE", "betas": betas},
            "data": {"_target_": "sde_gen.data.ring_mixture"},
            "model": {"_target_": "sde_gen.models.MLP", "hidden": 8, "num_layers": 1},
        }
    )
    model = ScoreModel(instantiate(cfg.model, shape=(2,)), instantiate(cfg.sde))
    return save_checkpoint(path, checkpoint_state(model, cfg, rng=rng_state({})))


def test_evaluate_refuses_what_the_likelihood_cannot_measure(tmp_path):
    """Before any work: a bound without a trained model, DDPM's bound as the likelihood or as
    the SDE's own ``vlb`` on continuous data — each a one-line error naming the key."""
    from sde_gen.evaluate import run_evaluation

    def run(*overrides: str):
        return run_evaluation(_compose("progress=false", "n=4", *overrides), tmp_path / "o")

    with pytest.raises(ValueError, match="needs a trained model: give checkpoint="):
        run("data=ring", "likelihood=vdm_vlb")
    ckpt = _ddpm_checkpoint(tmp_path / "step_00000000.pt")
    with pytest.raises(ValueError, match="vlb=true needs discrete data"):
        run(f"checkpoint={ckpt}")
    with pytest.raises(ValueError, match=r"DDPMBound\(.*needs discrete data.*likelihood=pf_ode"):
        run(f"checkpoint={ckpt}", "likelihood=ddpm_vlb", "vlb=false")
    assert not (tmp_path / "o" / "summary.json").exists()
