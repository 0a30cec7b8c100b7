"""experiments/check_results.py: the documented numbers of docs/results.md are what the cheap
commands print today (to the printed digits), and the checker reports a value that is off."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import check_results  # noqa: E402

CHEAPEST = (  # a few seconds each: exact-score likelihoods, deterministic
    "sde-gen-eval data=ring likelihood.exact_trace=true n=64",
    "sde-gen-eval data=mixture64 n=32",
)


def test_stated_digits_set_the_tolerance_and_an_off_value_is_a_diff():
    page = "x\n<!-- check: sde-gen-eval n=4 => nll=1.1923 nfe=63 mmd2=2.78e-03 t=0.5±0.5 -->\n"
    (one,) = check_results.parse_checks(page)
    assert one.command == "sde-gen-eval n=4" and one.line == 2
    assert one.expected["nll"].tol == pytest.approx(5e-5)
    assert one.expected["nfe"].tol == 0.5
    assert one.expected["mmd2"].tol == pytest.approx(5e-6)
    assert one.expected["t"].tol == 0.5
    out = "INFO - nll=1.19234±0.14 nats nfe=63 n=4 mmd2=0.0027849 t=0.9s nll_exact=1.1912"
    printed = check_results.printed_values(out)
    assert printed["nll"] == 1.19234 and printed["nll_exact"] == 1.1912
    assert check_results.compare(one, printed) == []
    off = check_results.printed_values("nll=1.1926 nfe=64 mmd2=0.00278 t=1.2")
    assert check_results.compare(one, off) == [
        "- nll=1.1923",
        "+ nll=1.1926  (off by 0.0003 > 5e-05)",
        "- nfe=63",
        "+ nfe=64  (off by 1 > 0.5)",
        "- t=0.5",
        "+ t=1.2  (off by 0.7 > 0.5)",
    ]
    assert check_results.compare(one, {"nfe": 63.0})[:2] == ["- nll=1.1923", "+ nll not printed"]
    table = "| solver | NFE | NLL gap (nats) | MMD² |\n|---|---|---|---|\n"
    table += "| heun | 35 | 0.216 | -4.10e-04 |"
    assert check_results.printed_values(table) == {
        "heun.1": 35.0,
        "heun.nfe": 35.0,
        "heun.2": 0.216,
        "heun.nll_gap": 0.216,
        "heun.3": -4.1e-4,
        "heun.mmd2": -4.1e-4,
    }
    rows = "| pf_ode | adaptive | 98 |\n| DPM (2M) | 20 | 20 |\nfigures in x"
    assert check_results.printed_values(rows) == {"pf_ode.2": 98.0, "dpm.1": 20.0, "dpm.2": 20.0}
    with pytest.raises(ValueError, match="x:3: 'nll~1' is not key=number"):
        check_results.parse_checks("\n\n<!-- check: a => nll~1 -->", "x")


@pytest.mark.parametrize("command", CHEAPEST)
def test_documented_cheap_commands_print_the_documented_numbers(command):
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    checks = [c for c in check_results.parse_checks(page) if c.command == command]
    assert len(checks) == 1, f"docs/results.md has no check line for {command!r}"
    assert check_results.check(checks[0]) == []
