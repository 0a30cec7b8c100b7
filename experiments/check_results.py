"""Rerun the cheap documented commands of docs/results.md and compare what they print with the
numbers the page states.

A check is one marked line of the page, beside the command it repeats:

    <!-- check: sde-gen-eval data=ring likelihood.exact_trace=true n=64 => nll=1.1923 nfe=63 -->

The command runs in a temporary folder (``sde-gen-<name>`` as ``python -m sde_gen.<module>``,
``experiments/<script>.py`` with this Python; one torch thread). Each stated ``key=value`` is
compared with the last ``key=<number>`` the command prints, or with the cell of a printed
Markdown table named ``<row>.<k>`` (its first cell, lower case, and the k-th cell after it:
``heun.2``) or ``<row>.<column>`` under a header (units in brackets dropped: ``heun.nll_gap``):
it must agree to the stated digits
(within half a unit of the last one, so deterministic output matches exactly as printed), or
within ``tol`` when stated as ``key=value±tol``. Values that are off are printed as a diff and the
script exits 1; 0 when every value matches.

    python experiments/check_results.py                  # every check of docs/results.md
    python experiments/check_results.py --only data=ring # the checks whose command contains it
    python experiments/check_results.py --list           # the checks, not run
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sde_gen.cli.commands import command_modules

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
MODULES = command_modules()
MARK = re.compile(r"^\s*<!--\s*check:\s*(?P<command>.+?)\s*=>\s*(?P<values>.+?)\s*-->")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
PRINTED = re.compile(rf"(?<![\w.])(?P<key>[A-Za-z_][\w.]*)\s*=\s*(?P<value>{NUMBER})")
STATED = re.compile(rf"^(?P<key>[A-Za-z_][\w.]*)=(?P<value>{NUMBER})(?:±(?P<tol>{NUMBER}))?$")


@dataclass(frozen=True)
class Expected:
    """A stated value: its text as written and the tolerance it implies."""

    text: str
    tol: float

    @property
    def value(self) -> float:
        return float(self.text)


@dataclass(frozen=True)
class Check:
    """One documented command and the values it must print."""

    command: str
    expected: dict[str, Expected]
    line: int


def digits_tolerance(text: str) -> float:
    """Half a unit of the last stated digit: ``1.1923`` → 5e-5, ``63`` → 0.5, ``2.78e-03`` →
    5e-6."""
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation as err:
        raise ValueError(f"{text!r} is not a number") from err
    return 0.5 * 10.0 ** int(exponent)


def parse_values(text: str, where: str) -> dict[str, Expected]:
    """``nll=1.1923 nfe=63 time=0.5±0.5`` → {key: Expected}; a malformed item is a ValueError."""
    expected = {}
    for item in text.split():
        match = STATED.match(item)
        if match is None:
            raise ValueError(f"{where}: {item!r} is not key=number or key=number±tol")
        tol = match["tol"]
        expected[match["key"]] = Expected(
            match["value"], float(tol) if tol else digits_tolerance(match["value"])
        )
    if not expected:
        raise ValueError(f"{where}: a check states no values")
    return expected


def parse_checks(page: str, name: str = "docs/results.md") -> list[Check]:
    """Every line of the page that is ``<!-- check: <command> => key=value ... -->``, in order."""
    checks = []
    for number, line in enumerate(page.splitlines(), start=1):
        match = MARK.match(line)
        if match is not None:
            values = parse_values(match["values"], f"{name}:{number}")
            checks.append(Check(match["command"], values, number))
    return checks


def slug(cell: str) -> str:
    """A table cell as a key: ``NLL gap (nats)`` → ``nll_gap``, ``MMD²`` → ``mmd2``."""
    text = re.sub(r"\(.*?\)", "", cell).replace("²", "2").strip().lower()
    return re.sub(r"\W+", "_", text).strip("_")


def table_values(output: str) -> dict[str, float]:
    """The numbers of each Markdown table printed, keyed by the row's first cell and the column:
    ``<row>.<k>`` for the k-th cell after the first (``heun.2``), and ``<row>.<header>`` when the
    table has a header (``heun.nfe``); row and header through ``slug``."""
    blocks: list[list[list[str]]] = [[]]
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and len(line) > 1:
            blocks[-1].append([c.strip() for c in line[1:-1].split("|")])
        elif blocks[-1]:
            blocks.append([])
    values: dict[str, float] = {}
    for rows in blocks:
        separator = len(rows) > 1 and all(set(c) <= set("-: ") and c for c in rows[1])
        header = [slug(c) for c in rows[0]] if separator else None
        for cells in rows[2:] if separator else rows:
            row = slug(cells[0])
            for k, cell in enumerate(cells[1:], start=1):
                if re.fullmatch(NUMBER, cell):
                    values[f"{row}.{k}"] = float(cell)
                    if header is not None and k < len(header):
                        values[f"{row}.{header[k]}"] = float(cell)
    return values


def printed_values(output: str) -> dict[str, float]:
    """The last ``key=<number>`` of each key in the output (``nll=1.19±0.14`` gives 1.19), and
    the numbers of its Markdown tables (``table_values``)."""
    values = table_values(output)
    values.update({m["key"]: float(m["value"]) for m in PRINTED.finditer(output)})
    return values


def compare(check: Check, printed: dict[str, float]) -> list[str]:
    """The diff of the stated values that are off (empty when all match): ``-`` stated, ``+``
    printed, with the difference and the tolerance."""
    lines = []
    for key, want in check.expected.items():
        if key not in printed:
            lines += [f"- {key}={want.text}", f"+ {key} not printed"]
            continue
        got = printed[key]
        off = abs(got - want.value)
        if not off <= want.tol * (1 + 1e-9):
            lines += [f"- {key}={want.text}", f"+ {key}={got:g}  (off by {off:.3g} > {want.tol:g})"]
    return lines


def argv_of(command: str) -> list[str]:
    """The process to run for a documented command."""
    words = shlex.split(command)
    if not words:
        raise ValueError("empty command")
    head, rest = words[0], words[1:]
    if head in MODULES:
        return [sys.executable, "-m", MODULES[head], *rest]
    if head.endswith(".py"):
        return [sys.executable, str(ROOT / head), *rest]
    raise ValueError(f"command {head!r} is neither one of {sorted(MODULES)} nor a .py script")


def run(command: str, timeout: float = 600.0) -> str:
    """stdout and stderr of the command, run in a temporary folder; a failure is a RuntimeError
    with the last lines of its output."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    with tempfile.TemporaryDirectory(prefix="check_results_") as folder:
        done = subprocess.run(
            argv_of(command), cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
        )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-5:])
        raise RuntimeError(f"{command!r} exited {done.returncode}:\n{tail}")
    return output


def check(one: Check) -> list[str]:
    """Run one check: its diff (empty when it holds)."""
    return compare(one, printed_values(run(one.command)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", type=Path, default=PAGE, help="the page (docs/results.md)")
    parser.add_argument("--only", default=None, help="run the checks whose command contains this")
    parser.add_argument("--list", action="store_true", help="list the checks, run nothing")
    args = parser.parse_args(argv)
    try:
        checks = parse_checks(args.page.read_text(encoding="utf-8"), str(args.page))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.only is not None:
        checks = [c for c in checks if args.only in c.command]
    if not checks:
        print(f"error: no check in {args.page} matches --only={args.only!r}", file=sys.stderr)
        return 2
    failed = 0
    for one in checks:
        stated = " ".join(f"{k}={v.text}" for k, v in one.expected.items())
        if args.list:
            print(f"{one.line}: {one.command} => {stated}")
            continue
        diff = check(one)
        print(f"{'FAIL' if diff else 'ok  '} line {one.line}: {one.command}")
        for line in diff:
            print(f"    {line}")
        failed += bool(diff)
    if not args.list:
        print(f"{len(checks) - failed} of {len(checks)} checks hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
