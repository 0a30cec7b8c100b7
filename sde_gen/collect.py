"""``sde-gen-collect <multirun dir>``: every ``summary.json`` below a directory → one table
(``summaries.csv``, ``summaries.md`` and ``summaries.png`` in the directory; ``cli/summaries.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sde_gen.cli.summaries import collect


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sde-gen-collect", description="Gather summary.json files of a sweep into a table."
    )
    parser.add_argument("directory", help="a multirun directory (or any folder of runs)")
    parser.add_argument("--metric", default=None, help="metric to plot against nfe")
    parser.add_argument("--group", default="solver", help="key naming the curves (solver)")
    parser.add_argument("--all", action="store_true", help="every column in the Markdown table")
    args = parser.parse_args(argv)
    try:
        written = collect(args.directory, args.metric, args.group, args.all)
    except (ValueError, OSError) as e:
        parser.exit(2, f"sde-gen-collect: error: {e}\n")
    markdown = Path(written["md"]).read_text()
    print(markdown, end="")
    runs = len(markdown.splitlines()) - 2  # the header and its rule
    print(f"{runs} runs -> " + ", ".join(str(p) for p in written.values()))


if __name__ == "__main__":
    main()
