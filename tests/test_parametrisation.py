"""Parametrisations and time conventions: the identities of ``models.parametrisation`` on every
SDE family, EDM's Table 1, and one exact score wrapped five ways giving the same samples for every
solver and the same loss for every DSM weighting (float64)."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from hand_checkpoints import checkpoint_state
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import Tensor, nn

from sde_gen.data import ring_mixture
from sde_gen.models.learned_variance import Direct, LinearRange, SigmoidRange
from sde_gen.models.network_time import (
    DiscreteIndex,
    EDMNoise,
    LogSigma,
    NetworkTime,
    ScaledTime,
    SDETime,
    Sigma,
)
from sde_gen.models.parametrisation import EDM, X0, Eps, Parametrisation, Score, V
from sde_gen.models.score_model import ScoreModel
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.networks.wrap import score_model_from_config, wrap_network
from sde_gen.sde import (
    SDE,
    VDMSDE,
    VESDE,
    VPSDE,
    DiscreteVPSDE,
    LearnedNegLogSNR,
    LinearSDE,
    SubVPSDE,
)
from sde_gen.sde.ddpm import linear_betas
from sde_gen.training.checkpoint import rng_state, save_checkpoint

F64 = torch.float64
PARAMS: dict[str, Parametrisation] = {
    "eps": Eps(),
    "x0": X0(),
    "v": V(),
    "score": Score(),
    "edm": EDM(0.5),
}


def sdes() -> dict[str, SDE]:
    """One SDE of every family of the contract."""
    return {
        "vp": VPSDE(0.1, 20.0),
        "subvp": SubVPSDE(0.1, 20.0),
        "ve": VESDE(0.01, 50.0),
        "linear": LinearSDE(lambda t: -1.0 - torch.sin(3 * t), lambda t: 0.5 + t),
        "ddpm": DiscreteVPSDE(linear_betas(1000)),
        "vdm": VDMSDE(LearnedNegLogSNR(hidden=8), level_input=False),  # the net sees t
    }


SDE_NAMES = list(sdes())


@pytest.fixture
def float64():
    """float64 as the default dtype inside the test, restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(old)


def coefficients(sde: SDE, t: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return sde.gamma(t)[:, None], sde.sigma(t)[:, None]


# -- the identities ----------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", SDE_NAMES)
@pytest.mark.parametrize("name", list(PARAMS))
def test_eps_of_target_is_eps_on_every_sde(sde_name, name):
    """ε̂(target(x0, ε), γ x0 + σ ε) = ε to float64 round-off, from t = 10⁻³ to T."""
    sde, param = sdes()[sde_name], PARAMS[name]
    g = torch.Generator().manual_seed(1)
    t = torch.cat([torch.tensor([1e-3, sde.T], dtype=F64), torch.rand(62, generator=g, dtype=F64)])
    x0 = 2 * torch.randn(64, 3, generator=g, dtype=F64)
    eps = torch.randn(64, 3, generator=g, dtype=F64)
    gamma, sigma = coefficients(sde, t)
    out = param.target(x0, eps, gamma, sigma)
    back = param.eps(out, gamma * x0 + sigma * eps, gamma, sigma)
    assert torch.allclose(back, eps, rtol=0, atol=1e-11), (back - eps).abs().max()


def table1(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Karras et al. (2022), Table 1, EDM column: c_skip, c_out, c_in, c_noise at noise σ."""
    d2 = sigma_data**2
    c_skip = d2 / (sigma**2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(sigma**2 + d2)
    c_in = 1 / torch.sqrt(sigma**2 + d2)
    return c_skip, c_out, c_in, torch.log(sigma) / 4


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_edm_is_table_1_in_sigma_tilde(sde_name):
    """In x̃ = x/γ, σ̃ = σ/γ: the network sees c_in x̃ at c_noise, and ε̂ = (x̃ − D)/σ̃ with
    D = c_skip x̃ + c_out F (Table 1), for any output F."""
    sde, param = sdes()[sde_name], EDM(sigma_data=0.7)
    g = torch.Generator().manual_seed(2)
    t = 1e-3 + (sde.T - 1e-3) * torch.rand(32, generator=g, dtype=F64)
    gamma, sigma = coefficients(sde, t)
    s = sigma / gamma
    c_skip, c_out, c_in, c_noise = table1(s, 0.7)
    x, out = 3 * torch.randn(32, 4, generator=g, dtype=F64), torch.randn(32, 4, generator=g)
    x_tilde = x / gamma
    d = c_skip * x_tilde + c_out * out.to(F64)
    assert torch.allclose(param.input_scale(gamma, sigma) * x, c_in * x_tilde, rtol=1e-13)
    assert torch.allclose(param.eps(out.to(F64), x, gamma, sigma), (x_tilde - d) / s, rtol=1e-11)
    with torch.no_grad():
        assert torch.allclose(EDMNoise()(sde, t), c_noise[:, 0], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_edm_input_has_unit_variance_for_data_of_std_sigma_data(sde_name):
    """Var[c_in x_t] = c_in² (γ² σ_d² + σ²) = 1 for x0 of std σ_d, at every t."""
    sde, param = sdes()[sde_name], EDM(sigma_data=0.5)
    t = torch.linspace(1e-3, sde.T, 50, dtype=F64)
    gamma, sigma = coefficients(sde, t)
    var = param.input_scale(gamma, sigma) ** 2 * (gamma**2 * 0.25 + sigma**2)
    assert torch.allclose(var, torch.ones_like(var), rtol=1e-13)


def test_edm_keeps_a_ve_input_of_size_sigma_max_at_unit_scale():
    """x_T ~ N(0, σ_max² I) on VE(σ_max = 80): ε-networks see std 80, EDM's see std ≈ 1."""
    sde, g = VESDE(0.002, 80.0), torch.Generator().manual_seed(3)
    x_T = sde.prior_sample((20000, 2), g)
    gamma, sigma = coefficients(sde, torch.ones(1, dtype=F64))
    seen = EDM(0.5).input_scale(gamma, sigma) * x_T
    assert abs(x_T.std().item() - 80.0) < 80.0 * 0.02  # 2 % ≫ 1/√(2·40000) ≈ 0.35 %
    assert abs(seen.std().item() - 1.0) < 0.02
    assert Eps().input_scale(gamma, sigma) == 1.0


# -- one exact score wrapped as every parametrisation ------------------------------------------
class ExactNet(nn.Module):
    """A network whose output is ``param.target`` of the exact mixture's (x̂0, ε) at the time
    it is given (``SDETime``: t itself), undoing the input scale c_in. Learned-variance copy:
    ``extra`` appends 0.25 · c_in x as v."""

    def __init__(self, mixture, sde: SDE, param: Parametrisation, extra: bool = False):
        super().__init__()
        self.mixture, self.sde, self.param, self.extra = mixture, sde, param, extra

    def forward(self, x_in: Tensor, t: Tensor) -> Tensor:
        gamma, sigma = coefficients(self.sde, t.to(F64))
        x = x_in / self.param.input_scale(gamma, sigma)
        eps = -sigma * self.mixture.score(x, t, self.sde)
        x0 = (x - sigma * eps) / gamma
        out = self.param.target(x0, eps, gamma, sigma)
        return torch.cat([out, 0.25 * x_in], 1) if self.extra else out


def wrapped(name: str, sde: SDE, extra: bool = False) -> ScoreModel:
    mixture = ring_mixture(num_modes=4, radius=1.5, std=0.2)
    return wrap_network(ExactNet(mixture, sde, PARAMS[name], extra), sde, PARAMS[name])


CONF = Path(__file__).resolve().parents[1] / "sde_gen" / "conf"
SOLVERS = sorted(p.stem for p in (CONF / "solver").glob("*.yaml"))
FEW = {"steps": 6}


def solver(name: str):
    """conf/solver/<name>.yaml with few steps (where it has steps) and a small calibration."""
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=[f"solver={name}"]).solver
    for key, value in {**FEW, "mc_samples": 256, "mc_batch": 256}.items():
        if key in cfg:
            cfg[key] = value
    if "backend" in cfg and "steps" in cfg.backend:
        cfg.backend.steps = FEW["steps"]
    return hydra.utils.instantiate(cfg)


def samples(solver_name: str, model: ScoreModel, x_T: Tensor) -> Tensor:
    s = solver(solver_name)
    if hasattr(s, "calibrate"):
        mixture = ring_mixture(num_modes=4, radius=1.5, std=0.2)
        s.calibrate(model.sde, model, mixture.sample64(256, torch.Generator().manual_seed(8)))
    with torch.no_grad():
        return s(model.sde, model, x_T, generator=torch.Generator().manual_seed(7)).x0


@pytest.mark.parametrize("solver_name", SOLVERS)
def test_every_parametrisation_gives_the_same_samples_for_every_solver(solver_name, float64):
    """The exact ring-mixture score as ε, x0, v, score and EDM networks (VP SDE): the samples
    of every configured solver (6 steps, same x_T and noise) agree to 1e-10."""
    sde = VPSDE(0.1, 20.0)
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(5), dtype=F64)
    ref = samples(solver_name, wrapped("eps", sde), x_T)
    assert torch.isfinite(ref).all() and ref.dtype == F64
    for name in ("x0", "v", "score", "edm"):
        got = samples(solver_name, wrapped(name, sde), x_T)
        assert torch.allclose(got, ref, rtol=0, atol=1e-10), (name, (got - ref).abs().max())


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_every_parametrisation_gives_the_same_ddim_samples_on_every_sde(sde_name, float64):
    sde = sdes()[sde_name]
    x_T = sde.prior_sample((16, 2), torch.Generator().manual_seed(5), dtype=F64)
    ref = samples("ddim", wrapped("eps", sde), x_T)
    for name in ("x0", "v", "score", "edm"):
        got = samples("ddim", wrapped(name, sde), x_T)
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10), (name, (got - ref).abs().max())


def dsm_loss(weighting: str, time_sampler: str):
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "loss=dsm",
                f"loss/weighting={weighting}",
                f"loss/time_sampler={time_sampler}",
            ],
        )
    return hydra.utils.instantiate(cfg.loss)


@pytest.mark.parametrize("time_sampler", ["uniform", "importance"])
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "ones"])
def test_every_parametrisation_has_the_same_dsm_loss(weighting, time_sampler, float64):
    """loss=dsm with each weighting: the same implied score gives the same loss value (1e-12
    relative) whatever the network's output means: the loss is on ε̂, not on the raw output."""
    sde, loss = VPSDE(0.1, 20.0), dsm_loss(weighting, time_sampler)
    x0 = ring_mixture(num_modes=4, radius=1.5, std=0.2).sample64(
        256, torch.Generator().manual_seed(1)
    )
    values = {
        name: loss(wrapped(name, sde), x0, torch.Generator().manual_seed(2)).item()
        for name in PARAMS
    }
    assert values["eps"] > 0 and math.isfinite(values["eps"])
    for name, value in values.items():
        assert math.isclose(value, values["eps"], rel_tol=1e-12), (name, values)


@pytest.mark.parametrize("name", list(PARAMS))
def test_learned_variance_output_stays_available(name, float64):
    """A 2C-channel network: ``eps_and_extra`` gives the exact ε̂ from the first C channels and
    the last C unchanged (v = 0.25 c_in x), with every parametrisation."""
    sde = VPSDE(0.1, 20.0)
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(32, 2, generator=g), 0.05 + 0.9 * torch.rand(32, generator=g)
    eps, v = wrapped(name, sde, extra=True).eps_and_extra(x, t)
    ref, none = wrapped("eps", sde).eps_and_extra(x, t)
    gamma, sigma = coefficients(sde, t)
    assert none is None
    assert torch.allclose(eps, ref, rtol=0, atol=1e-12)
    assert torch.allclose(v, 0.25 * PARAMS[name].input_scale(gamma, sigma) * x, rtol=1e-15)


# -- time conventions --------------------------------------------------------------------------
def inverse(time: NetworkTime, sde: SDE, tau: Tensor) -> Tensor:
    """t from the network's time input τ (each convention undone in closed form)."""
    if isinstance(time, ScaledTime):
        return (tau - time.shift) / time.scale
    if isinstance(time, Sigma):
        return sde.t_from_log_snr(-2 * tau.log())
    if isinstance(time, LogSigma):
        return sde.t_from_log_snr(-2 * tau)
    if isinstance(time, EDMNoise):
        return sde.t_from_log_snr(-8 * tau)
    return tau


class TimedNet(ExactNet):
    """``ExactNet`` behind a time convention: it recovers t from what it is given."""

    def __init__(self, mixture, sde, param, time: NetworkTime):
        super().__init__(mixture, sde, param)
        self.time = time

    def forward(self, x_in: Tensor, tau: Tensor) -> Tensor:
        return super().forward(x_in, inverse(self.time, self.sde, tau))


TIMES = {
    "sde": SDETime(),
    "scaled": ScaledTime(999.0),
    "discrete": DiscreteIndex(1000, 1),
    "sigma": Sigma(),
    "log_sigma": LogSigma(),
    "edm_noise": EDMNoise(),
}


@pytest.mark.parametrize("time_name", list(TIMES))
@pytest.mark.parametrize("sde_name", ["vp", "ve", "ddpm"])
def test_every_time_convention_feeds_the_network_its_clock(sde_name, time_name, float64):
    """A network that undoes the convention gives the exact score (to 1e-9 relative)."""
    sde, time = sdes()[sde_name], TIMES[time_name]
    mixture = ring_mixture(num_modes=4, radius=1.5, std=0.2)
    model = wrap_network(TimedNet(mixture, sde, EDM(), time), sde, EDM(), time)
    g = torch.Generator().manual_seed(6)
    x, t = 2 * torch.randn(32, 2, generator=g), 0.01 + 0.98 * torch.rand(32, generator=g)
    exact = mixture.score(x, t, sde)
    assert torch.allclose(model(x, t), exact, rtol=1e-9, atol=1e-9 * exact.abs().max())


def test_discrete_index_is_diffusers_timestep():
    """sde_gen's chain node n = k + 1 at t = n/N is diffusers' timestep k."""
    sde = DiscreteVPSDE(linear_betas(1000))
    k = torch.tensor([0, 1, 499, 999], dtype=F64)
    assert torch.equal(DiscreteIndex(1000, 1)(sde, (k + 1) / 1000), k)


# -- the config groups and checkpoints ---------------------------------------------------------
def compose_train(*overrides: str):
    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


PARAM_CLASSES = {"eps": Eps, "x0": X0, "v": V, "score": Score, "edm": EDM}


@pytest.mark.parametrize("name", list(PARAM_CLASSES))
def test_model_param_group_builds_the_parametrisation(name):
    """``model/param=<name>`` (and ``model/time``) reach the ScoreModel; the network is built
    from the rest of the node."""
    cfg = compose_train(f"model/param={name}", "model/time=edm_noise", "model.hidden=8")
    model = score_model_from_config(cfg.model, VPSDE(), (2,))
    assert type(model.param) is PARAM_CLASSES[name] and type(model.time) is EDMNoise
    assert model.eps_net.out.in_features == 8
    default = score_model_from_config(compose_train().model, VPSDE(), (2,))
    assert type(default.param) is Eps and type(default.time) is SDETime


VARIANCE_CLASSES = {"sigmoid_range": SigmoidRange, "linear_range": LinearRange, "direct": Direct}


@pytest.mark.parametrize("name", list(VARIANCE_CLASSES))
def test_model_variance_group_builds_the_convention(name):
    """``model/variance=<name>`` reaches the ScoreModel (sigmoid_range by default), and its log Σ
    at v = 0.5 between log β = −2 and log β̃ = −4 is eq. 15's with f = sigmoid(½) or ¾, or log ½."""
    cfg = compose_train(f"model/variance={name}", "model.learn_variance=true", "model.hidden=8")
    model = score_model_from_config(cfg.model, VPSDE(), (2,))
    assert type(model.variance) is VARIANCE_CLASSES[name]
    f = {"sigmoid_range": 1 / (1 + math.exp(-0.5)), "linear_range": 0.75}.get(name)
    expected = math.log(0.5) if f is None else -2 * f - 4 * (1 - f)
    got = model.variance.log_variance(torch.tensor([0.5], dtype=torch.float64), -2.0, -4.0)
    assert float(got) == pytest.approx(expected, rel=1e-15)
    default = score_model_from_config(compose_train().model, VPSDE(), (2,))
    assert type(default.variance) is SigmoidRange


def _checkpoint(path: Path, model_node: dict) -> Path:
    """A checkpoint of a freshly built ring network, its config's model node ``model_node``."""
    cfg = OmegaConf.create(
        {
            "sde": {"_target_": "sde_gen.sde.VPSDE"},
            "data": {"_target_": "sde_gen.data.ring_mixture"},
            "model": model_node,
        }
    )
    net = score_model_from_config(cfg.model, VPSDE(), (2,))
    return save_checkpoint(path, checkpoint_state(net, cfg, rng=rng_state({})))


MLP_NODE = {"_target_": "sde_gen.models.MLP", "hidden": 8, "num_layers": 1}


def test_checkpoint_keeps_its_parametrisation_and_old_ones_load_as_eps(tmp_path):
    v_node = {**MLP_NODE, "param": {"_target_": "sde_gen.models.parametrisation.V"}}
    v_node["time"] = {"_target_": "sde_gen.models.network_time.DiscreteIndex", "steps": 10}
    model, cfg, _ = load_score_model(_checkpoint(tmp_path / "step_00000001.pt", v_node))
    assert type(model.param) is V and model.time.steps == 10 and model.time.offset == 1.0
    old, _, _ = load_score_model(_checkpoint(tmp_path / "step_00000002.pt", MLP_NODE))
    assert type(old.param) is Eps and type(old.time) is SDETime
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    assert torch.equal(old.eps(x, t), old.eps_net(x, t))


def test_checkpoint_keeps_its_variance_convention_and_old_ones_load_as_sigmoid(tmp_path):
    """A stored ``model.variance`` is rebuilt (through the allow-list); a checkpoint without one
    reads its variance output as before (``SigmoidRange``)."""
    node = {**MLP_NODE, "learn_variance": True}
    stored = {**node, "variance": {"_target_": "sde_gen.models.learned_variance.LinearRange"}}
    model, _, _ = load_score_model(_checkpoint(tmp_path / "step_00000001.pt", stored))
    assert type(model.variance) is LinearRange
    old, _, _ = load_score_model(_checkpoint(tmp_path / "step_00000002.pt", node))
    assert type(old.variance) is SigmoidRange


@pytest.mark.parametrize("key", ["param", "time", "variance"])
def test_stored_param_outside_sde_gen_models_is_refused(tmp_path, key):
    """A stored ``model.param._target_`` naming another module never runs: one line naming it."""
    ok = _checkpoint(tmp_path / "step_00000001.pt", MLP_NODE)
    state = torch.load(ok, weights_only=True)
    cfg = OmegaConf.create(state["config"])
    cfg.model[key] = {"_target_": "os.system", "command": "echo pwned"}
    state["config"] = OmegaConf.to_yaml(cfg)
    bad = save_checkpoint(tmp_path / "step_00000002.pt", state)
    with pytest.raises(ValueError, match=rf"model\.{key}\._target_='os\.system' is not allowed"):
        load_score_model(bad)
    cfg.model[key] = {"_target_": "sde_gen.sde.VPSDE"}  # sde_gen's, but not the model group's
    state["config"] = OmegaConf.to_yaml(cfg)
    with pytest.raises(ValueError, match=rf"model\.{key}\._target_='sde_gen\.sde\.VPSDE'"):
        load_score_model(save_checkpoint(tmp_path / "step_00000003.pt", state))


class Doubler(nn.Module):
    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return 2 * x


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module": lambda x, t: x}, r"module=function is invalid: need a torch\.nn\.Module"),
        ({"sde": "vp"}, r"sde=str is invalid: need an sde_gen\.sde\.SDE"),
        ({"param": "v"}, r"param=str is invalid: need a Parametrisation"),
        ({"time": 999.0}, r"time=float is invalid: need a NetworkTime"),
        ({"variance": "direct"}, r"variance=str is invalid: need a LearnedVariance"),
        ({"sample_shape": (0, 2)}, r"sample_shape=\(0, 2\) is invalid"),
    ],
)
def test_wrap_network_names_the_bad_argument(kwargs, message):
    args = {"module": Doubler(), "sde": VPSDE(), "param": X0(), "time": SDETime(), **kwargs}
    with pytest.raises(ValueError, match=message):
        wrap_network(**args)


def test_wrap_network_probes_the_sample_shape():
    """The probe runs one forward pass: a network for 3 features refuses samples of 2."""
    with pytest.raises(ValueError, match=r"module does not take samples of shape \(2,\)"):
        wrap_network(nn.Linear(3, 3), VPSDE(), sample_shape=(2,))
    model = wrap_network(Doubler(), VPSDE(), X0(), sample_shape=(2,))
    x, t = torch.randn(3, 2), torch.full((3,), 0.5)
    gamma, sigma = VPSDE().gamma(t)[:, None], VPSDE().sigma(t)[:, None]
    assert torch.allclose(model.eps(x, t), (x - gamma * 2 * x) / sigma, rtol=1e-6)


def test_sampling_refuses_a_network_config_naming_it():
    """``sde-gen-sample model=mlp``: a network to train, not a saved model; one line."""
    from sde_gen.networks.source import load_model_node

    with initialize_config_module("sde_gen.conf", version_base="1.3"):
        cfg = compose("sample", overrides=["model=mlp"])
    with pytest.raises(ValueError, match=r"model=sde_gen\.models\.MLP is a network to train"):
        load_model_node(cfg, torch.device("cpu"), data_chosen=False)
