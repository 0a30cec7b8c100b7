"""docs/api.md is a notebook: its ```python blocks run in order, and the asserts inside them
(finite samples, an NLL gap below 1 nat, a PF-ODE NLL within 0.5 nats of the exact density)
hold."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "trained to step 1500" in out and "NLL gap" in out and "Hutchinson" in out
    assert Path(namespace["path"]).is_file()
    assert namespace["result"].nfe > 0
