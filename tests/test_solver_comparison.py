"""The solver-comparison experiment end to end on a tiny problem: NFE budgets are met, ODE
solvers get an end-point error, the CSV/table/plot are written."""

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import solver_comparison as sc  # noqa: E402

from sde_gen.runtime import write_summary  # noqa: E402


def _job(tmp_path: Path, solver: str, nfe: int, *extra: str) -> dict:
    with initialize_config_dir(str(EXPERIMENTS / "conf"), version_base="1.3"):
        cfg = compose(
            "solver_comparison",
            overrides=[
                f"solver={solver}",
                f"nfe={nfe}",
                "data=ring",
                "n=64",
                "floor_seeds=2",
                f"out_dir={tmp_path}",
                *extra,
            ],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        return sc.run_job(cfg)


@pytest.mark.parametrize(
    "solver,nfe,ode", [("euler_maruyama", 10, False), ("heun", 10, True), ("pc", 20, False)]
)
def test_job_spends_its_budget(tmp_path, solver, nfe, ode):
    row = _job(tmp_path, solver, nfe)
    assert row["status"] == "ok"
    assert abs(row["nfe"] - nfe) <= 1  # heun 2·steps − 1, pc 2·steps + 1
    assert ("endpoint_error" in row) == ode
    assert row["mmd2"] > -0.05 and row["mmd2_floor_rms"] > 0


def test_adaptive_solver_gets_a_tolerance_and_collect_writes_outputs(tmp_path):
    row = _job(tmp_path, "pf_ode", 100)
    assert row["status"] == "ok" and row["rtol"] == 1e-4
    assert row["endpoint_error"] < 0.05  # RK45 at 1e-4 against DOP853 at 1e-8
    write_summary(tmp_path / "sweep" / "job0", row)
    sc.collect(tmp_path / "sweep", tmp_path)
    assert (tmp_path / "solver_comparison.csv").exists()
    assert "pf_ode" in (tmp_path / "solver_comparison.md").read_text()
    assert (tmp_path / "solver_comparison_ddpm_linear.png").exists()


def test_peer_on_the_wrong_schedule_is_skipped_not_failed(tmp_path):
    pytest.importorskip("diffusers")
    with initialize_config_dir(str(EXPERIMENTS / "conf"), version_base="1.3"):
        cfg = compose(
            "solver_comparison",
            overrides=[
                "solver=diffusers_ddim",
                "sde=vp",
                "n=32",
                "floor_seeds=2",
                f"out_dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        row = sc.run_job(cfg)
    assert row["status"] == "skipped" and "ddpm_linear" in row["reason"]


def test_adaptive_solver_with_top_level_tolerances(tmp_path):
    """solver=adaptive keeps rtol/atol at the top of its config (no backend): both are set."""
    row = _job(tmp_path, "adaptive", 100)
    assert row["status"] == "ok" and row["rtol"] == 1e-4 and row["endpoint_error"] < 1e-3


def test_fitted_job_fits_on_pilot_and_is_scored_on_held_out_x_T(tmp_path):
    """fit=true: the grid is fitted on pilot x_T (seed + 1000) and the job's x_T are held out; the
    last step lands on x̂0, so the end point is compared with the flow at t ≈ 0."""
    row = _job(tmp_path, "dpm_solver", 5, "fit=true", "fit_n=16", "fit_maxiter=15")
    assert row["status"] == "ok" and row["grid"] == "fitted" and row["fitted"]
    assert row["nfe"] == 5 and row["ends_at_zero"] and row["family"] == "DPMSolver-2"
    assert row["fit_pilot_error"] <= row["fit_start_pilot_error"]
    assert len(row["fit_times"]) == 6 and row["endpoint_error"] > 0


def test_peers_at_best_takes_the_best_of_each_family_and_the_ratio():
    from solver_comparison_report import peers_at_best

    base = {"sde": "ddpm_linear", "data": "ring", "status": "ok", "finite": True, "nfe": 10}
    rows = [
        {**base, "solver": "dpm_solver", "family": "DPMSolver-2", "grid": g, "endpoint_error": e}
        for g, e in (("logsnr", 0.04), ("trailing", 0.02))
    ]
    rows += [
        {
            **base,
            "solver": "dpm_solver",
            "family": "DPMSolver-2",
            "grid": "fitted",
            "fitted": True,
            "endpoint_error": 0.005,
        },
        {
            **base,
            "solver": "diffusers_dpm_2m_lu",
            "family": "diffusers X-2",
            "endpoint_error": 0.03,
        },
        {
            **base,
            "solver": "diffusers_deis",
            "family": "diffusers D-2",
            "endpoint_error": 0.06,
            "nfe": 11,
        },  # over budget: not counted
    ]
    for r in rows:
        r["nfe_budget"] = 10
    text = peers_at_best(rows)
    assert "0.02 (trailing)" in text and "0.06" not in text
    assert "| ratio diffusers ÷ ours fixed | 1.50 |" in text
    assert "| ratio diffusers ÷ ours fitted | 6.00 |" in text
