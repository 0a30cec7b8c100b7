"""The experiments' caches (experiments/caching.py): the key moves with every setting and with the
versions; a record made under another key, or under none, is recomputed, never returned; the
digits studies and the network reference use it. Also the statistics across seeds: the weighting
study's Δ over training seeds and Analytic-DPM's NLL gap over calibration seeds."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import caching  # noqa: E402

SETTINGS = {"steps": 2500, "batch_size": 64, "lr": 2e-3, "seed": 0, "arm": ["sde=vp", "loss=dsm"]}


def test_key_changes_with_every_setting_and_with_either_version():
    base = caching.cache_key(SETTINGS)
    assert caching.cache_key(dict(reversed(SETTINGS.items()))) == base  # order is not a setting
    changed = {"steps": 2501, "batch_size": 32, "lr": 1e-3, "seed": 1, "arm": ["sde=vp"]}
    keys = {caching.cache_key(SETTINGS | {k: v}) for k, v in changed.items()}
    assert len(keys) == len(changed) and base not in keys
    assert caching.cache_key(SETTINGS | {"extra": None}) != base
    now = caching.versions()
    assert set(now) == {"sde_gen", "torch"} and now["torch"] == torch.__version__
    assert caching.cache_key(SETTINGS, now) == base
    for name in now:
        assert caching.cache_key(SETTINGS, now | {name: now[name] + ".post1"}) != base


def test_cached_json_recomputes_under_another_key_and_says_why(tmp_path, monkeypatch, capsys):
    path, calls = tmp_path / "eval.json", []

    def compute() -> dict:
        calls.append(1)
        return {"bpd": float(len(calls))}

    assert caching.cached_json(path, SETTINGS, compute) == {"bpd": 1.0}
    assert caching.cached_json(path, SETTINGS, compute) == {"bpd": 1.0} and len(calls) == 1
    assert capsys.readouterr().out == ""
    assert caching.cached_json(path, SETTINGS | {"seed": 3}, compute) == {"bpd": 2.0}
    assert "settings changed: seed" in capsys.readouterr().out
    moved = caching.versions() | {"torch": "0.0.1"}
    monkeypatch.setattr(caching, "versions", lambda: moved)
    assert caching.cached_json(path, SETTINGS | {"seed": 3}, compute) == {"bpd": 3.0}
    assert f"versions changed: torch {torch.__version__} → 0.0.1" in capsys.readouterr().out
    stored = json.loads(path.read_text())
    assert stored["stamp"]["versions"]["torch"] == "0.0.1" and stored["result"] == {"bpd": 3.0}


def test_a_cache_from_before_keys_is_recomputed(tmp_path, capsys):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"key": {"steps": 2500}, "result": {"bpd": 9.0}}))  # the old form
    assert caching.cached_json(path, SETTINGS, lambda: {"bpd": 1.0}) == {"bpd": 1.0}
    assert "no cache key stored" in capsys.readouterr().out
    torch.save({"result": 9.0}, tmp_path / "old.pt")
    assert caching.cached_torch(tmp_path / "old.pt", SETTINGS, lambda: 1.0) == 1.0
    assert caching.cached_torch(tmp_path / "old.pt", SETTINGS, lambda: 2.0) == 1.0


def test_a_run_folder_under_another_key_is_moved_aside_not_reused(tmp_path, capsys):
    run = tmp_path / "sigma2"
    assert not caching.folder_is_current(run, SETTINGS)  # fresh: stamped, to be trained
    (run / "summary.json").write_text("{}")
    assert caching.folder_is_current(run, SETTINGS)
    assert not caching.folder_is_current(run, SETTINGS | {"steps": 100})
    assert "settings changed: steps" in capsys.readouterr().out
    (aside,) = tmp_path.glob("sigma2.stale-*")
    assert (aside / "summary.json").read_text() == "{}"  # the old run is kept
    assert sorted(p.name for p in run.iterdir()) == [caching.KEY_FILE]
    assert caching.folder_is_current(run, SETTINGS | {"steps": 100})


def test_digits_arm_keys_follow_seed_steps_and_evaluation_and_pin_the_clip():
    from digits_study import eval_settings, training_settings
    from weighting_study import ARMS, EVAL_KEYS, config

    args = argparse.Namespace(
        steps=50, batch_size=64, lr=2e-3, ema_decay=0.995, seed=0, n_eval=None, num_dequant=1,
        n_samples=500, sample_steps=200, classifier_epochs=40,
    )  # fmt: skip
    cfg = config(ARMS["sigma2_deq"][0], args)
    assert cfg.trainer.grad_clip == 1.0  # the documented set-up, not the trainer's default
    assert config(ARMS["likelihood_is_noclip"][0], args).trainer.grad_clip is None
    key = caching.cache_key(eval_settings(cfg, args, EVAL_KEYS))
    train_key = caching.cache_key(training_settings(cfg))
    for name, value in {"seed": 1, "steps": 60, "lr": 1e-3}.items():
        other = argparse.Namespace(**{**vars(args), name: value})
        cfg_other = config(ARMS["sigma2_deq"][0], other)
        assert caching.cache_key(training_settings(cfg_other)) != train_key, name
        assert caching.cache_key(eval_settings(cfg_other, other, EVAL_KEYS)) != key, name
    other = argparse.Namespace(**{**vars(args), "sample_steps": 100})
    cfg_other = config(ARMS["sigma2_deq"][0], other)  # the sampler does not change training
    assert caching.cache_key(training_settings(cfg_other)) == train_key
    assert caching.cache_key(eval_settings(cfg_other, other, EVAL_KEYS)) != key


def test_network_reference_is_recomputed_for_another_network(tmp_path, monkeypatch, capsys):
    """N(0, I) data under VP: the marginal stays N(0, I) and the score is −x, so the PF-ODE
    drift −½β(x + s) vanishes and every end point is x_T itself."""
    import network_reference as nr

    from sde_gen.sde import VPSDE

    sde = VPSDE()
    net = nr.Network(sde, lambda x, t: -x, (2,), "gauss", {"checkpoint": "a"})
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    opts = {"t_min": 1e-3, "t_zero": 1e-4, "method": "RK45", "rtol": 1e-8, "atol": 1e-10}
    solves = []
    solve = nr.pf_ode_ends
    monkeypatch.setattr(nr, "pf_ode_ends", lambda *a, **k: solves.append(1) or solve(*a, **k))
    first = nr.reference_set(tmp_path / "ref.pt", net, x_T, **opts)
    for end in nr.ENDS:
        torch.testing.assert_close(first["ends"][end], x_T, atol=1e-6, rtol=0)
    nr.reference_set(tmp_path / "ref.pt", net, x_T, **opts)
    assert len(solves) == 1
    net.identity = {"checkpoint": "b"}
    nr.reference_set(tmp_path / "ref.pt", net, x_T, **opts)
    assert len(solves) == 2 and "settings changed: network" in capsys.readouterr().out
    nr.reference_set(tmp_path / "ref.pt", net, x_T, **opts | {"rtol": 1e-7})
    assert len(solves) == 3
    with pytest.raises(ValueError, match="cached for other x_T"):
        nr.reference_set(tmp_path / "ref.pt", net, x_T + 1, **opts | {"rtol": 1e-7})


def test_weighting_study_delta_and_its_spread_across_seeds():
    from weighting_study import paired_delta, spread

    base = {"bpd_per_sample": [2.0, 2.5, 3.0, 2.0]}
    arm = {"bpd_per_sample": [1.9, 2.6, 2.8, 2.1]}  # differences −0.1, 0.1, −0.2, 0.1
    d, se = paired_delta(arm, base)
    assert d == pytest.approx(-0.025, abs=1e-12)
    assert se == pytest.approx(np.std([-0.1, 0.1, -0.2, 0.1], ddof=1) / 2, abs=1e-12)
    s = spread([-0.06, 0.0, -0.03])
    assert s["mean"] == pytest.approx(-0.03) and s["sd"] == pytest.approx(0.03)
    assert s["se"] == pytest.approx(0.03 / math.sqrt(3)) and (s["min"], s["max"]) == (-0.06, 0.0)


def test_analytic_dpm_spread_is_over_calibration_seeds_only():
    """Seed k of the spread is the default σ*² arm calibrated with mc_seed = k, on the same x_T
    and sampling noise; the calibration seed moves the gap; mean and s.d. are those of the gaps."""
    from analytic_dpm_study import calibration_spread, gap_and_se, problem

    from sde_gen.sde import VPSDE
    from sde_gen.solvers import AnalyticDPM

    sde = VPSDE()
    mix, ref, x_T = problem(sde, "ring", 500)
    s = calibration_spread(sde, mix, x_T, ref, 5, 200, 3, "ring", None)
    solver = AnalyticDPM(steps=5, mc_samples=200, mc_batch=200, mc_seed=1)
    solver.calibrate(sde, mix.score_fn(sde), mix.sample64)
    x0 = solver(sde, mix.score_fn(sde), x_T, torch.Generator().manual_seed(0)).x0
    assert (s["gaps"][1], s["ses"][1]) == gap_and_se(mix, x0, ref)
    assert len(set(s["gaps"])) == 3
    assert s["mean"] == pytest.approx(np.mean(s["gaps"]), abs=1e-12)
    assert s["sd"] == pytest.approx(np.std(s["gaps"], ddof=1), abs=1e-12)
    assert (s["min"], s["max"]) == (min(s["gaps"]), max(s["gaps"]))
