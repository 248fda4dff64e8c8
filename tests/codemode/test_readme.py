"""The Code Mode example in the README runs as shown, so it cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_code_mode_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Code Mode", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "async def read_text_file(*, path: str, tail: float | Omit = OMIT, head: float | Omit = OMIT)" in out
    assert "-> filesystem__read_text_file {'path': 'notes.md', 'head': 1}" in out
    assert out.rstrip().endswith("{'content': '# Notes'}")
