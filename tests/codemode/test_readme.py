"""The Code Mode examples in the README run as shown, so they cannot rot."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import anyio
import pytest

from tests.support import everything_stdio, make_settings, running_portal

ROOT = Path(__file__).resolve().parents[2]


def _blocks(fence: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Code Mode", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{fence}\n(.*?)```", section, flags=re.S)


def test_the_readme_code_mode_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    block = _blocks("python")[0]
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "async def read_text_file(*, path: str, tail: float | Omit = OMIT, head: float | Omit = OMIT)" in out
    assert "-> filesystem__read_text_file {'path': 'notes.md', 'head': 1}" in out
    assert out.rstrip().endswith("{'content': '# Notes'}")


@pytest.mark.anyio
@pytest.mark.npm
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_readme_mcp_code_example_prints_what_the_readme_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    block = _blocks("python")[1]
    [shown] = _blocks("text")
    settings = make_settings(tmp_path, {"everything": everything_stdio()})
    async with running_portal(settings) as portal:
        source = block.replace("http://127.0.0.1:8000", portal.url)
        # The example runs its own event loop, so it runs in a thread while this loop serves the portal.
        await anyio.to_thread.run_sync(exec, compile(source, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    expected = shown.splitlines()
    assert printed[:2] == expected[:2]
    got, want = ast.literal_eval(printed[2]), ast.literal_eval(expected[2])
    for call in [*got["calls"], *want["calls"]]:
        call["ms"] = 0
    assert got == want
