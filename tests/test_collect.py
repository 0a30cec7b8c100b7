"""sde-gen-collect over a real Hydra multirun of sde-gen-sample, and on hand-made summaries."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sde_gen.cli.summaries import collect, plot_rows, read_summaries
from sde_gen.collect import main
from sde_gen.runtime.files import write_summary

CLI = str(Path(sys.executable).with_name("sde-gen-sample"))


def test_multirun_two_solvers_two_steps_gives_four_rows_with_nfe(tmp_path):
    """Euler–Maruyama (denoise_final) costs steps + 1 evaluations, ancestral exactly steps."""
    sweep = tmp_path / "sweep"
    cmd = [
        CLI,
        "-m",
        "n=64",
        "progress=false",
        "plot=false",
        "solver=euler_maruyama,ancestral",
        "solver.steps=5,20",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(sweep.rglob("summary.json"))) == 4
    written = collect(sweep)
    with open(written["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    got = {(r["solver"], int(r["steps"])): int(r["nfe"]) for r in rows}
    assert got == {
        ("euler_maruyama", 5): 6,
        ("euler_maruyama", 20): 21,
        ("ancestral", 5): 5,
        ("ancestral", 20): 20,
    }
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"]
    assert all("solver=" in r["overrides"] for r in rows)
    md = Path(written["md"]).read_text().splitlines()
    assert len(md) == 2 + 4 and md[0].startswith("| run |")
    assert written["png"].stat().st_size > 1000
    # more steps, closer to the exact density (the NLL gap shrinks) for Euler–Maruyama
    em = {int(r["steps"]): float(r["nll_gap"]) for r in rows if r["solver"] == "euler_maruyama"}
    assert em[20] < em[5]
    # 5 coarse steps are far outside the Monte Carlo floor of the NLL gap at n = 64
    assert em[5] > 5 * float(rows[0]["nll_gap_floor"]) > 0


def test_collect_merges_keys_and_sorts_runs_numerically(tmp_path):
    for num, summary in [(10, {"nfe": 4, "loss": 0.5}), (2, {"nfe": 2, "extra": "a|b"})]:
        write_summary(tmp_path / str(num), {"solver": "s", **summary})
    rows = read_summaries(tmp_path)
    assert [r["run"] for r in rows] == ["2", "10"]
    written = collect(tmp_path, metric="loss")
    text = Path(written["csv"]).read_text().splitlines()
    assert text[0].split(",") == ["run", "extra", "nfe", "solver", "loss"]  # first-seen order
    assert text[1] == "2,a|b,2,s," and text[2] == "10,,4,s,0.5"
    assert "a\\|b" in Path(written["md"]).read_text()


def test_collect_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(ValueError, match="no summary.json"):
        read_summaries(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_summaries(tmp_path)
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"nfe": 3}))
    with pytest.raises(ValueError, match="metric='fid'"):
        collect(tmp_path, metric="fid")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err
    assert err.startswith("sde-gen-collect: error: ") and err.count("\n") == 1


def test_signed_metric_plot_keeps_the_sign_and_names_the_sweep(tmp_path):
    """A negative unbiased MMD² is drawn at its value on a symlog axis whose linear band is the
    runs' mean Monte Carlo floor; the title names the metric, the floor, solvers and steps."""
    runs = [("ddim", 2, 0.4, 0.06), ("ddim", 4, -0.05, 0.07), ("heun", 2, 0.02, 0.08)]
    for k, (solver, steps, mmd2, floor) in enumerate(runs):
        summary = {"solver": solver, "steps": steps, "nfe": steps, "mmd2": mmd2}
        write_summary(tmp_path / str(k), {**summary, "mmd2_floor": floor})
    rows = read_summaries(tmp_path)
    fig = plot_rows(rows, "mmd2")
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog"
    assert ax.yaxis.get_transform().linthresh == pytest.approx(0.07)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["ddim"].get_xdata()) == [2, 4]
    assert list(lines["ddim"].get_ydata()) == [0.4, -0.05]
    assert ax.get_ylabel() == "mmd2"
    assert ax.get_title().splitlines() == [
        "mmd2 vs NFE (Monte Carlo floor ± 0.07)",
        "solver ddim, heun, steps 2, 4",
    ]
    assert collect(tmp_path)["png"].stat().st_size > 1000


def test_metric_plot_ticks_nfe_as_numbers_and_names_the_floor(tmp_path):
    """The NFE axis is logarithmic with a plain-number tick at each NFE (``5``, not ``10⁰·⁷``),
    and the band's legend says what it is: ± the RMS of the metric between exact sample sets
    over the 5 draws of ``exact_metrics``."""
    runs = [("ddim", 5, 0.4), ("ddim", 10, 0.05), ("ddim", 20, 0.01), ("heun", 50, 0.002)]
    for k, (solver, nfe, mmd2) in enumerate(runs):
        summary = {"solver": solver, "steps": nfe, "nfe": nfe, "mmd2": mmd2, "mmd2_floor": 0.03}
        write_summary(tmp_path / str(k), summary)
    fig = plot_rows(read_summaries(tmp_path), "mmd2")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10", "20", "50"]
    assert [t.get_text() for t in ax.get_xticklabels(minor=True)] == [""] * len(
        ax.get_xticklabels(minor=True)
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["ddim", "heun", "Monte Carlo floor: ± RMS, exact vs exact, 5 draws"]
