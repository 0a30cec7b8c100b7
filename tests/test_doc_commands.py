"""Every shell command in README.md and docs/guide.md runs as written, shortened.

Each fenced ```bash block is cut into commands (``\\`` continuations joined, ``#`` comments
dropped) and run in order in one temporary folder per page, so a checkpoint or sweep folder a
command names was written by an earlier command of the same page. The shortening appended to each
command is ``SHORTEN`` (documented in docs/guide.md, "The documented commands are tested"); a
checkpoint path ``…/checkpoints/step_<8 digits>.pt`` is read as the newest checkpoint of that
folder (the shortened run ends at another step). A block the page marks with
``<!-- not run by the tests: <name> -->`` just before its fence (SLURM, GPUs, downloads) and a
command whose comment says ``not run by the tests`` are skipped; both lists are pinned below by
name, so a new skip is a visible change of this file.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sde_gen.cli.commands import command_modules

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/guide.md")
SKIP_MARK = "not run by the tests"

SKIPPED_BLOCKS = {
    "docs/guide.md": {
        "slurm-launcher",
        "slurm-torchrun",
        "slurm-submitit",
        "slurm-sampling",
        "clean-fid-downloads",
        "vlb-analytic-snippet",  # 1000 network evaluations of 500 digits: minutes
        "pretrained-download",  # needs the network; a stand-in model replaces it
    },
    "README.md": set(),
}
SKIPPED_COMMANDS = {
    "bash scripts/setup.sh",
    "bash scripts/test.sh",
}

MODULES = command_modules()
TRAIN = [
    "trainer.batch_size=16",
    "trainer.log_every=2",
    "trainer.checkpoint_every=null",
    "trainer.sample_every=null",
    "trainer.sample_count=64",
    "trainer.progress=false",
    "solver.steps=4",
]
SHORTEN = {
    "sde-gen-train": TRAIN,  # + trainer.steps=4 (6 when resuming)
    "sde-gen-sample": ["plot=false", "progress=false"],  # + n=64 when the command gives no n
    "sde-gen-eval": ["n=16", "batch_size=16", "progress=false"],
    "sde-gen-demo": ["n=200"],
    "sde-gen-collect": [],
    "sde-gen-fit-grid": ["n=32", "maxiter=4"],
    "sde-gen-export": [],
    "experiments/trajectories.py": ["--n", "20", "--solvers", "ddim:5,pf_ode"],
}
ANALYTIC = ["solver.mc_samples=1000", "solver.mc_batch=1000", "solver.grid.candidates=30"]


@dataclass
class Command:
    page: str
    section: str
    text: str
    python: bool = False  # a ```python block, run as a script


def blocks(page: str) -> list[tuple[str, str, str, str | None]]:
    """(section heading, language, block, skip name or None) of ``page``'s bash and python
    blocks in order."""
    text = (ROOT / page).read_text()
    out, section = [], ""
    pattern = re.compile(
        r"^(#+ [^\n]*)$|(?:<!-- " + SKIP_MARK + r": (\S+) -->\n)?```(bash|python)\n(.*?)```",
        re.M | re.S,
    )
    for m in pattern.finditer(text):
        if m.group(1):
            section = m.group(1).lstrip("# ").strip()
        else:
            out.append((section, m.group(3), m.group(4), m.group(2)))
    return out


def commands(page: str) -> tuple[list[Command], set[str], set[str]]:
    """The commands of ``page`` to run, and the names of the skipped blocks and commands."""
    runs, skipped_blocks, skipped = [], set(), set()
    for section, language, block, skip in blocks(page):
        if skip is not None:
            skipped_blocks.add(skip)
            continue
        if language == "python":
            runs.append(Command(page, section, block, python=True))
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            command = command.strip()
            if not command or command.startswith("#"):
                continue
            if SKIP_MARK in comment:
                skipped.add(command)
                continue
            runs.append(Command(page, section, " ".join(command.split())))
    return runs, skipped_blocks, skipped


def newest(m: re.Match, cwd: Path) -> str:
    """The newest checkpoint in the folder ``m.group(1)`` names (relative to ``cwd``)."""
    found = sorted((cwd / m.group(1)).glob("step_*.pt"))
    return str(found[-1] if found else m.group(0))


def newest_checkpoint(arg: str, cwd: Path) -> str:
    """``checkpoint=<dir>/checkpoints/step_NNNNNNNN.pt`` → the newest checkpoint in that folder."""
    pattern = r"(?<=^checkpoint=)(.*/checkpoints)/step_\d{8}\.pt"
    return re.sub(pattern, lambda m: newest(m, cwd), arg)


def argv(command: Command | str, cwd: Path) -> tuple[list[str], dict[str, str]]:
    """The process to start for a documented command, with its shortening appended."""
    if isinstance(command, Command) and command.python:
        script = re.sub(r"(\S*/checkpoints)/step_\d{8}\.pt", lambda m: newest(m, cwd), command.text)
        return [sys.executable, "-c", script], dict(os.environ)
    command = command.text if isinstance(command, Command) else command
    words = shlex.split(command)
    env = dict(os.environ)
    while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    program, args = words[0], [newest_checkpoint(a, cwd) for a in words[1:]]
    name = program.removeprefix(".venv/bin/")
    if name in MODULES:
        extra = list(SHORTEN[name])
        if name == "sde-gen-train":
            resume = any(a.startswith("trainer.resume=") for a in args)
            extra.append(f"trainer.steps={6 if resume else 4}")
        if name == "sde-gen-sample" and not any(a.startswith("n=") for a in args):
            extra.append("n=64")
        if "solver=analytic_dpm" in args:
            extra += ANALYTIC
        return [sys.executable, "-m", MODULES[name], *args, *extra], env
    if name == "python" and args[:1] == ["-c"]:  # a one-line snippet
        return [sys.executable, *args], env
    if name == "python" and args and args[0] in SHORTEN:
        return [sys.executable, str(ROOT / args[0]), *args[1:], *SHORTEN[args[0]]], env
    raise AssertionError(f"no way to run {command!r}: mark it '{SKIP_MARK}' or teach this test")


STAND_IN = "ddpm-cifar10-32"
"""A page naming this folder gets a stand-in: a tiny random DDPM pipeline of that name and fake
CIFAR-10 batches (``diffusers_folders.stand_in_cifar_model``), so its commands run offline."""


def run_page(page: str, tmp_path: Path) -> list[tuple[str, float]]:
    runs, _, _ = commands(page)
    if any(STAND_IN in c.text for c in runs):
        from diffusers_folders import stand_in_cifar_model

        stand_in_cifar_model(tmp_path)
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    times = []
    for c in runs:
        cmd, env = argv(c, tmp_path)
        env.update(PYTHONPATH=env_path, MPLBACKEND="Agg", HYDRA_FULL_ERROR="0")
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        times.append((c.text[:60], round(time.perf_counter() - t0, 1)))
        assert done.returncode == 0, (
            f"{page} ({c.section}): `{c.text}` failed with status {done.returncode}:\n"
            f"{' '.join(cmd)}\n{done.stderr[-3000:]}"
        )
    print(page, "seconds a command:", times)
    return times


def test_skips_are_named_and_every_command_is_runnable(tmp_path):
    """The skipped blocks and commands are exactly the named ones; every other command maps to a
    process (an unknown program would fail here, not silently pass)."""
    for page in PAGES:
        runs, skipped_blocks, skipped = commands(page)
        assert skipped_blocks == SKIPPED_BLOCKS[page], page
        assert skipped <= SKIPPED_COMMANDS, page
        assert runs, page
        for c in runs:
            argv(c, tmp_path)
    assert set().union(*(commands(p)[2] for p in PAGES)) == SKIPPED_COMMANDS


def test_readme_commands_run(tmp_path):
    times = run_page("README.md", tmp_path)
    assert len(times) >= 8
    assert (tmp_path / "outputs/train/toy2d/checkpoints").is_dir()
    # the mixed sweep ran all nine jobs: steps=N is N evaluations of DPM-Solver++ and N (+1 for
    # the final denoising) of Euler–Maruyama, and leaves the adaptive PF-ODE as it is
    with (tmp_path / "multirun/sample/solvers/summaries.csv").open() as f:
        rows = [(r["solver"], r["steps"], int(r["nfe"])) for r in csv.DictReader(f)]
    assert sorted((s, st, nfe) for s, st, nfe in rows if s != "pf_ode") == sorted(
        [("dpm_solver", str(n), n) for n in (10, 20, 50)]
        + [("euler_maruyama", str(n), n + 1) for n in (10, 20, 50)]
    )
    ode = [(st, nfe) for s, st, nfe in rows if s == "pf_ode"]
    assert len(ode) == 3 and len(set(ode)) == 1 and ode[0][0] == ""


@pytest.mark.slow
def test_guide_commands_run(tmp_path):
    times = run_page("docs/guide.md", tmp_path)
    assert len(times) >= 20
