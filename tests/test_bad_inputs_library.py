"""Bad inputs to the library half (issue 9): each ends in an early ValueError that names the value,
key or file, and nothing on disk is changed. Checkpoints are crafted with ``torch.save`` as an
attacker would; data files are small arrays written into ``tmp_path``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hand_checkpoints import checkpoint_state
from hydra import compose, initialize_config_module

from sde_gen.data import GaussianMixture, NpzImages, TensorData, TwoMoons, ring_mixture
from sde_gen.evaluate import run_evaluation
from sde_gen.likelihood.ode import ode_log_likelihood
from sde_gen.losses.dsm import DSMLoss
from sde_gen.models import MLP, ScoreModel
from sde_gen.networks.checkpoint import load_score_model
from sde_gen.networks.source import load_score_source
from sde_gen.sample import run_sampling
from sde_gen.sde import VESDE, VPSDE, DiscreteVPSDE, LinearSDE, Polynomial, SubVPSDE

VICTIM_BYTES = b"the user's precious file\n"
RING = {"_target_": "sde_gen.data.ring_mixture", "std": 0.15}
MLP_CFG = {"_target_": "sde_gen.models.MLP", "hidden": 8, "num_layers": 1}
VP = {"_target_": "sde_gen.sde.VPSDE"}


def _compose(name: str, *overrides: str):
    with initialize_config_module(config_module="sde_gen.conf", version_base="1.3"):
        return compose(name, overrides=["progress=false", "device=cpu", *overrides])


def _craft(path: Path, config: Any, shape: tuple = (2,), **extra: Any) -> Path:
    """A file that passes ``torch.load(weights_only=True)`` and looks like an sde_gen checkpoint,
    with ``config`` (a dict, dumped to YAML, or a raw value) as its stored config."""
    net = ScoreModel(MLP(shape, hidden=8, num_layers=1), VPSDE())
    torch.save(checkpoint_state(net, config, step=1, **extra), path)
    return path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM_BYTES)
    return path


# -- 1. no code from checkpoints ----------------------------------------------------------------
def _hostile(victim: Path) -> dict[str, tuple[dict, str]]:
    """name -> (stored config, text the error must contain)."""
    v, d = str(victim), str(victim.parent / "made_dir")
    return {
        "open": ({"sde": {"_target_": "builtins.open", "file": v, "mode": "w"}}, "builtins.open"),
        "numpy.save": (
            {"data": {"_target_": "numpy.save", "file": v, "arr": [1]}},
            "numpy.save",
        ),
        "torch.save": ({"model": {"_target_": "torch.save", "obj": 1, "f": v}}, "torch.save"),
        "makedirs": ({"sde": {"_target_": "os.makedirs", "name": d}}, "os.makedirs"),
        "atomic_write": (
            {"sde": {"_target_": "sde_gen.runtime.atomic_write", "path": v, "write": "x"}},
            "sde_gen.runtime.atomic_write",
        ),
        "sde_in_data": ({"data": VP}, "data._target_='sde_gen.sde.VPSDE'"),
        "data_in_model": ({"model": RING}, "model._target_='sde_gen.data.ring_mixture'"),
        "nested_embedding": (
            {"model": {**MLP_CFG, "embedding": {"_target_": "builtins.open", "file": v}}},
            "model.embedding._target_='builtins.open'",
        ),
        "nested_betas": (
            {
                "sde": {
                    "_target_": "sde_gen.sde.DiscreteVPSDE",
                    "betas": {"_target_": "os.system", "command": f"rm {v}"},
                }
            },
            "sde.betas._target_='os.system'",
        ),
        "imported_name": (
            {"model": {"_target_": "sde_gen.models.mlp.torch.save", "obj": 1, "f": v}},
            "sde_gen.models.mlp.torch.save",
        ),
        "foreign_function_in_module": (
            {"sde": {"_target_": "sde_gen.sde.linear.solve_ivp"}},
            "sde_gen.sde.linear.solve_ivp",
        ),
        "no_such_module": ({"sde": {"_target_": "sde_gen.sde.nope.VPSDE"}}, "sde_gen.sde.nope"),
        "not_a_name": ({"sde": {"_target_": "open; rm -rf"}}, "'open; rm -rf'"),
        "target_not_str": ({"sde": {"_target_": 5}}, "sde._target_=5"),
        "args": (
            {"sde": {**VP, "_args_": [{"_target_": "builtins.open", "file": v, "mode": "w"}]}},
            "sde._args_",
        ),
        "partial": ({"sde": {**VP, "_partial_": True}}, "sde._partial_"),
        "recursive": ({"model": {**MLP_CFG, "_recursive_": False}}, "model._recursive_"),
        "env_interpolation": (
            {"data": {**RING, "std": "${oc.env:HOME}"}},
            "data.std='${oc.env:HOME}'",
        ),
        "interpolation_elsewhere": ({"trainer": {"lr": "${oc.env:HOME}"}}, "trainer.lr"),
        "custom_resolver": (
            {"model": {**MLP_CFG, "hidden": "${sde_gen_groups:data}"}},
            "model.hidden",
        ),
        "group_not_mapping": ({"sde": 3}, "group 'sde' is a int"),
        "group_without_target": ({"sde": {"beta_min": 0.1}}, "group 'sde' has no _target_"),
        "missing_value": ({"data": {**RING, "std": "???"}}, "data.std is missing"),
        "missing_group": ({"model": None, "__drop__": "model"}, "no 'model' group"),
    }


HOSTILE = sorted(_hostile(Path("/x")).keys())


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_stored_config_is_refused_before_anything_is_built(tmp_path, victim, case):
    overrides, expect = _hostile(victim)[case]
    config = {"sde": VP, "data": RING, "model": MLP_CFG, **overrides}
    if "__drop__" in config:
        config.pop(config.pop("__drop__"))
    path = _craft(tmp_path / "step_00000001.pt", config)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError) as err:
        load_score_model(path)
    assert expect in str(err.value) and "step_00000001.pt" in str(err.value)
    assert _snapshot(tmp_path) == before and victim.read_bytes() == VICTIM_BYTES


@pytest.mark.parametrize("command", ["sample", "eval"])
@pytest.mark.parametrize("target", ["builtins.open", "numpy.save"])
def test_sample_and_eval_refuse_a_checkpoint_that_names_a_writer(tmp_path, victim, command, target):
    group = "sde" if target == "builtins.open" else "data"
    args = (
        {"file": str(victim), "mode": "w"} if target == "builtins.open" else {"file": str(victim)}
    )
    config = {"sde": VP, "data": RING, "model": MLP_CFG, group: {"_target_": target, **args}}
    ckpt = _craft(tmp_path / "step_00000001.pt", config)
    cfg = _compose(command, f"checkpoint={ckpt}", "n=4")
    run = run_sampling if command == "sample" else run_evaluation
    with pytest.raises(ValueError, match=rf"{group}\._target_='{target}' is not allowed"):
        run(cfg, tmp_path / "out")
    assert victim.read_bytes() == VICTIM_BYTES
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config", ["not: [valid", ["a", "list"], "- a\n- list\n"])
def test_unreadable_stored_config_is_named(tmp_path, config):
    path = _craft(tmp_path / "step_00000001.pt", config)
    with pytest.raises(ValueError, match=r"step_00000001.pt.*stored config"):
        load_score_model(path)


@pytest.mark.parametrize("with_step", [False, True])
def test_checkpoint_directory_is_called_a_directory(tmp_path, with_step):
    if with_step:
        _craft(tmp_path / "step_00000007.pt", {"sde": VP, "data": RING, "model": MLP_CFG})
    with pytest.raises(ValueError, match="is a directory") as err:
        load_score_model(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert ("step_00000007.pt" in str(err.value)) == with_step


# -- 2. a checkpoint trained on an npz, without the npz ----------------------------------------
def _npz(path: Path, shape: tuple = (12, 1, 6, 6)) -> Path:
    x = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    np.savez(path, x=x)
    return path


def _npz_checkpoint(tmp_path: Path, data_path: Path, info: bool) -> Path:
    data = {"_target_": "sde_gen.data.NpzImages", "path": str(data_path)}
    extra = {"data_info": {"shape": [1, 6, 6], "num_bins": 256}} if info else {}
    config = {"sde": VP, "data": data, "model": MLP_CFG}
    return _craft(tmp_path / "step_00000001.pt", config, shape=(1, 6, 6), **extra)


SAMPLE = ("n=3", "solver=euler_maruyama", "solver.steps=2", "plot=false")


def test_npz_checkpoint_samples_with_the_npz_in_place(tmp_path):
    ckpt = _npz_checkpoint(tmp_path, _npz(tmp_path / "train.npz"), info=False)
    cfg = _compose("sample", f"checkpoint={ckpt}", *SAMPLE)
    summary = run_sampling(cfg, tmp_path / "o", data_chosen=False)
    assert summary["data_shape"] == [1, 6, 6]


def test_npz_checkpoint_without_the_npz_names_the_file_and_the_override(tmp_path):
    ckpt = _npz_checkpoint(tmp_path, tmp_path / "gone.npz", info=False)
    cfg = _compose("sample", f"checkpoint={ckpt}", *SAMPLE)
    with pytest.raises(ValueError, match=r"gone.npz' does not exist.*data.path=") as err:
        run_sampling(cfg, tmp_path / "o", data_chosen=False)
    assert "step_00000001.pt" in str(err.value) and not (tmp_path / "o").exists()


def test_npz_checkpoint_with_recorded_shape_samples_without_the_npz(tmp_path):
    ckpt = _npz_checkpoint(tmp_path, tmp_path / "gone.npz", info=True)
    cfg = _compose("sample", f"checkpoint={ckpt}", *SAMPLE)
    summary = run_sampling(cfg, tmp_path / "o", data_chosen=False)
    assert summary["data_shape"] == [1, 6, 6] and summary["finite"]
    assert np.load(tmp_path / "o" / "samples.npz")["x0"].shape == (3, 1, 6, 6)


def test_npz_checkpoint_without_the_npz_cannot_evaluate(tmp_path):
    ckpt = _npz_checkpoint(tmp_path, tmp_path / "gone.npz", info=True)
    with pytest.raises(ValueError, match=r"gone.npz' does not exist.*data.path="):
        run_evaluation(_compose("eval", f"checkpoint={ckpt}", "n=4"), tmp_path / "o")


@pytest.mark.parametrize("info", [False, True])
def test_data_path_override_replaces_the_missing_npz(tmp_path, info):
    ckpt = _npz_checkpoint(tmp_path, tmp_path / "gone.npz", info=info)
    new = _npz(tmp_path / "moved.npz")
    over = (f"checkpoint={ckpt}", "data=npz", f"data.path={new}")
    summary = run_sampling(_compose("sample", *over, *SAMPLE), tmp_path / "o", data_chosen=True)
    assert summary["data_shape"] == [1, 6, 6]
    src = load_score_source(_compose("eval", *over), torch.device("cpu"), data_chosen=True)
    assert src.data.split("test").shape == (1, 1, 6, 6)  # 12 images, 10% test: the moved file's


def test_data_path_override_of_another_shape_names_both(tmp_path):
    ckpt = _npz_checkpoint(tmp_path, tmp_path / "gone.npz", info=True)
    new = _npz(tmp_path / "big.npz", (12, 1, 8, 8))
    cfg = _compose("sample", f"checkpoint={ckpt}", "data=npz", f"data.path={new}", *SAMPLE)
    with pytest.raises(ValueError, match=r"shape \(1, 6, 6\).*shape \(1, 8, 8\)"):
        run_sampling(cfg, tmp_path / "o", data_chosen=True)


# -- 3. NaN and inf, point masses, empty draws -------------------------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VPSDE(T=NAN), "T=nan"),
        (lambda: VPSDE(T=INF), "T=inf"),
        (lambda: VPSDE(T=-INF), "T=-inf"),
        (lambda: SubVPSDE(T=NAN), "T=nan"),
        (lambda: VESDE(T=NAN), "T=nan"),
        (lambda: VESDE(T=INF), "T=inf"),
        (lambda: VPSDE(beta_min=NAN), "beta_min=nan"),
        (lambda: VPSDE(beta_max=NAN), "beta_max=nan"),
        (lambda: VPSDE(beta_max=INF), "beta_max=inf"),
        (lambda: VESDE(sigma_min=NAN), "sigma_min=nan"),
        (lambda: VESDE(sigma_max=INF), "sigma_max=inf"),
        (lambda: VPSDE(T="abc"), "T='abc'"),
        (lambda: VPSDE(T=True), "T=True"),
        (lambda: LinearSDE(Polynomial([-0.5]), Polynomial([1.0]), T=NAN), "T=nan"),
        (lambda: LinearSDE(Polynomial([-0.5]), Polynomial([1.0]), T=INF), "T=inf"),
        (lambda: LinearSDE(Polynomial([NAN]), Polynomial([1.0])), r"f\(t\) must be finite"),
        (lambda: LinearSDE(Polynomial([0.0]), Polynomial([INF])), r"g\(t\)² must be finite"),
        (lambda: LinearSDE(Polynomial([0.0]), Polynomial([1.0]), prior_std=NAN), "prior_std"),
        (lambda: LinearSDE(Polynomial([0.0]), 1.0), "g=1.0"),
        (lambda: DiscreteVPSDE([0.1, NAN, 0.2]), r"betas\[1\]=nan"),
        (lambda: DiscreteVPSDE([0.1, INF]), r"betas\[1\]=inf"),
        (lambda: DiscreteVPSDE(["a"]), "betas"),
    ],
)
def test_non_finite_sde_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "args, match",
    [
        (([1.0], [[NAN, 0.0]], 0.1), r"means\[0, 0\]=nan"),
        (([1.0, 1.0], [[0.0], [INF]], 0.1), r"means\[1, 0\]=inf"),
        (([1.0, NAN], [[0.0], [1.0]], 0.1), "weights must be positive and finite"),
        (([INF, 1.0], [[0.0], [1.0]], 0.1), "weights must be positive and finite"),
        (([1.0], [[0.0, 0.0]], NAN), r"stds\[0, 0\]=nan"),
        (([1.0], [[0.0, 0.0]], [[0.1, INF]]), r"stds\[0, 1\]=inf"),
    ],
)
def test_non_finite_mixture_parameters_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


@pytest.mark.parametrize("what", ["log_prob", "score"])
@pytest.mark.parametrize("t", [None, 0.0])
def test_point_mass_has_no_density_at_the_data(what, t):
    mix, x = GaussianMixture([1.0, 2.0], [[0.0], [1.0]], 0.0), torch.zeros(3, 1)
    times = None if t is None else torch.full((3,), t)
    with pytest.raises(ValueError, match=rf"stds=0.*t={t}"):
        getattr(mix, what)(x, times, VPSDE())


def test_point_mass_is_exact_at_positive_times():
    """Two atoms diffused by VP: q_t = Σ w_k N(γ_t μ_k, σ_t²), checked against torch's normal."""
    sde, t = VPSDE(), torch.full((5,), 0.3, dtype=torch.float64)
    mix = GaussianMixture([1.0, 2.0], [[0.0], [1.0]], 0.0)
    x = torch.linspace(-1, 2, 5, dtype=torch.float64)[:, None]
    gamma, sigma = sde.gamma(t[:1]).item(), sde.sigma(t[:1]).item()
    comps = torch.distributions.Normal(torch.tensor([0.0, gamma], dtype=torch.float64), sigma)
    ref = torch.logsumexp(comps.log_prob(x) + torch.log(torch.tensor([1 / 3, 2 / 3])), dim=1)
    logp = mix.log_prob(x, t, sde)
    assert torch.allclose(logp, ref.to(logp.dtype), atol=1e-12)
    assert torch.isfinite(mix.score(x, t, sde)).all()
    assert set(mix.sample(50, torch.Generator().manual_seed(0)).flatten().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
@pytest.mark.parametrize(
    "source",
    [lambda: ring_mixture(), lambda: TwoMoons(), lambda: TensorData(torch.zeros(10, 2))],
    ids=["mixture", "toy", "tensor"],
)
def test_empty_or_bad_draws_name_n(source, n):
    with pytest.raises(ValueError, match=rf"n={n!r} must be an integer >= 1"):
        source().sample(n)


def test_empty_split_names_n():
    with pytest.raises(ValueError, match="n=0"):
        TensorData(torch.zeros(10, 2)).split("test", 0)
    with pytest.raises(ValueError, match="n=0"):
        ring_mixture().split("test", 0)


# -- DSMLoss: empty batches and dtypes ----------------------------------------------------------
def _model(dtype=torch.float32) -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(MLP((2,), hidden=8, num_layers=1), VPSDE()).to(dtype)


@pytest.mark.parametrize(
    "x0, match",
    [
        (torch.zeros(0, 2), "batch size 0"),
        (torch.zeros(2), r"shape \(2,\)"),
        (torch.zeros(4, 2, dtype=torch.int64), "torch.int64"),
        (torch.zeros(4, 2, dtype=torch.uint8), "torch.uint8"),
        (torch.zeros(4, 2, dtype=torch.bool), "torch.bool"),
        (np.zeros((4, 2), np.float32), "ndarray"),
    ],
)
def test_dsm_rejects_empty_and_integer_batches(x0, match):
    with pytest.raises(ValueError, match=match):
        DSMLoss()(_model(), x0, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dsm_casts_float_data_to_the_model_dtype(dtype):
    x = ring_mixture().sample(16, torch.Generator().manual_seed(0))
    ref = DSMLoss()(_model(), x, torch.Generator().manual_seed(1))
    got = DSMLoss()(_model(), x.to(dtype), torch.Generator().manual_seed(1))
    assert got.dtype == torch.float32 and torch.isfinite(got)
    tol = 1e-6 if dtype == torch.float64 else 0.05 * abs(ref.item())
    assert abs(got.item() - ref.item()) <= tol


def test_dsm_keeps_a_float64_model_in_float64():
    x = ring_mixture().sample(8, torch.Generator().manual_seed(0))
    assert DSMLoss()(_model(torch.float64), x, torch.Generator()).dtype == torch.float64


# -- 4. npz files -------------------------------------------------------------------------------
def _array(path: Path, shape: tuple) -> Path:
    np.savez(path, x=np.zeros(shape, np.uint8))
    return path


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((6, 8, 8, 4), {}, r"\(6, 8, 8, 4\).*4 channels.*alpha"),
        ((6, 4, 8, 8), {}, r"\(6, 4, 8, 8\).*4 channels"),
        ((6, 4, 8, 3), {}, r"ambiguous layout \(6, 4, 8, 3\).*data.channels_last=true"),
        ((6, 3, 8, 3), {}, r"ambiguous.*data.channels_last=false"),
        ((6, 1, 8, 1), {}, "ambiguous"),
        ((6, 5, 8, 7), {}, r"\(6, 5, 8, 7\).*neither axis"),
        ((6, 8, 8, 4), {"channels_last": True}, r"\(6, 8, 8, 4\).*4 channels"),
        ((6, 8, 8, 3), {"channels_last": False}, "8 channels"),
        ((6, 8, 8, 3), {"channels_last": "no"}, "channels_last='no'"),
        ((10, 8, 8), {"test_fraction": 0.99}, r"test_fraction=0.99 of N=10.*no training"),
        ((10, 8, 8), {"test_fraction": NAN}, "test_fraction=nan"),
        ((10, 8, 8), {"test_fraction": "0.5"}, "test_fraction='0.5'"),
        ((6, 2, 8, 8, 1), {}, "expected 3 or 4 dims"),
    ],
)
def test_bad_npz_layouts_are_refused_up_front(tmp_path, shape, kwargs, match):
    path = _array(tmp_path / "imgs.npz", shape)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        NpzImages(str(path), **kwargs)
    assert "imgs.npz" in str(err.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "shape, channels_last, expect",
    [
        ((6, 4, 8, 3), True, (3, 4, 8)),
        ((6, 3, 8, 3), False, (3, 8, 3)),
        ((6, 8, 8, 3), None, (3, 8, 8)),
    ],
)
def test_channels_last_resolves_what_the_guess_cannot(tmp_path, shape, channels_last, expect):
    data = NpzImages(str(_array(tmp_path / "imgs.npz", shape)), channels_last=channels_last)
    assert data.shape == expect


def test_directory_as_data_path_is_called_a_directory(tmp_path):
    (tmp_path / "imgs.npz").mkdir()
    with pytest.raises(ValueError, match="imgs.npz' is a directory"):
        NpzImages(str(tmp_path / "imgs.npz"))


# -- 5. likelihood ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_score_is_named_with_its_time(bad):
    def score_fn(x, t):
        return torch.where(t[:, None] > 0.5, torch.full_like(x, bad), -x)

    with pytest.raises(ValueError, match=r"non-finite score.*t=(0\.[5-9]|1)"):
        ode_log_likelihood(VPSDE(), score_fn, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("method", ["FOO", "rk45", ""])
def test_unknown_ode_method_lists_the_allowed_names(method):
    with pytest.raises(ValueError, match=rf"method='{method}'.*'RK45'.*'LSODA'"):
        ode_log_likelihood(VPSDE(), lambda x, t: -x, torch.zeros(2, 2), method=method)


def test_every_allowed_method_runs():
    mix = ring_mixture()
    x = mix.sample(2, torch.Generator().manual_seed(0)).double()
    for method in ("RK23", "DOP853", "LSODA"):
        logp, _ = ode_log_likelihood(VPSDE(), mix.score_fn(VPSDE()), x, True, method=method)
        assert torch.isfinite(logp).all() and not math.isnan(float(logp.sum()))
