"""The README's Sandbox example runs as shown (on the default backend, bubblewrap)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Sandbox\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_sandbox_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [block] = re.findall(r"```python\n(.*?)```", _section(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "'exit_code': 0, 'stdout': '42\\n'" in out
    assert list((tmp_path / ".dockyard" / "sandboxes").iterdir()) == []  # destroyed


def test_the_readme_sandbox_policy_snippet_is_a_valid_egress_entry() -> None:
    import yaml

    [block] = re.findall(r"```yaml\n(.*?)```", _section(), flags=re.S)
    [entry] = yaml.safe_load(block)["egress"]
    assert entry["servers"] == ["sandbox"] and entry["hosts"]
