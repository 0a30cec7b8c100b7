"""The import graph of the package: wings import one way, and only the command layer uses Hydra.

Every ``import``/``from … import`` of ``sde_gen`` in every module (also those inside functions)
is an arrow; an arrow from a lower wing to a higher one, or a cycle among the wings of one level,
fails with the module and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sde_gen

ROOT = Path(sde_gen.__file__).parent

LEVEL = {
    "runtime": 0,
    "sde": 1,
    "data": 2,
    "models": 2,
    "losses": 2,
    "solvers": 2,
    "likelihood": 2,
    "metrics": 2,
    "plotting": 2,
    "training": 3,
    "networks": 4,
    "cli": 5,
    "conf": 5,
}
COMMANDS = 6
"""The root's modules are the command lines, above every wing."""


def wing(module: str) -> str:
    """``sde_gen.solvers.base`` → ``solvers``; a root module → ``<root>``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "<root>"
    return parts[1] if len(parts) > 2 or parts[1] in LEVEL else "<root>"


def level(w: str) -> int:
    return LEVEL.get(w, COMMANDS)


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported sde_gen module, line) for every module of the package."""
    arrows = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "sde_gen":
                    names = [f"sde_gen.{a.name}" for a in node.names]
                arrows += [(module, n, node.lineno) for n in names if n.startswith("sde_gen.")]
            elif isinstance(node, ast.Import):
                arrows += [
                    (module, a.name, node.lineno)
                    for a in node.names
                    if a.name.startswith("sde_gen.")
                ]
    return arrows


def test_only_command_lines_stand_at_the_root():
    root = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "__init__")
    assert root == sorted(
        ["train", "sample", "evaluate", "collect", "demo", "fit_grid"]
        + [p for p in root if p == "export"]
    )


def test_no_import_points_up():
    up = [
        f"{a}:{line} imports {b}"
        for a, b, line in imports()
        if a != "sde_gen" and level(wing(b)) > level(wing(a))
    ]
    assert up == []


def test_wings_of_one_level_import_without_cycles():
    graph: dict[str, set[str]] = {}
    for a, b, _ in imports():
        wa, wb = wing(a), wing(b)
        if wa != wb and level(wa) == level(wb) and level(wa) < COMMANDS:
            graph.setdefault(wa, set()).add(wb)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n}))
            for n in graph.get(start, ())
        )

    assert [w for w in graph if reaches(w, w, set())] == []


def test_only_the_command_layer_uses_hydra():
    users = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        text = path.read_text()
        if "import hydra" in text or "from hydra" in text:
            users.append(module)
    below = [m for m in users if level(wing(m)) < LEVEL["cli"]]
    assert below == ["sde_gen.runtime.instantiate"]
