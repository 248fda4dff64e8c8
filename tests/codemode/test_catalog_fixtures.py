"""The saved catalogs are what the installed servers list today, and listing them needs no browser."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.codemode.catalogs import SERVERS, list_tools, package_version, parameters, read_fixture, to_json
from tests.support import cmdline, descendants

pytestmark = [pytest.mark.anyio, pytest.mark.npm]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_saved_catalogs_match_what_the_live_servers_list(tmp_path: Path) -> None:
    stale: list[str] = []
    with anyio.fail_after(60):
        for name in SERVERS:
            fixture = read_fixture(name)
            live = to_json(await list_tools(name, tmp_path))
            if fixture["version"] != package_version(name) or fixture["tools"] != live:
                stale.append(name)
    assert not stale, f"stale catalogs {stale}: run `.venv/bin/python -m tests.codemode.catalogs`"


async def test_playwright_lists_its_tools_without_starting_a_browser(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with Client(parameters("playwright", tmp_path), mode="legacy") as client:
            assert len((await client.list_tools()).tools) == len(read_fixture("playwright")["tools"])
            started = [cmdline(pid) for pid in descendants(os.getpid())]
    assert any("@playwright/mcp" in line for line in started)
    assert not [line for line in started if "chrom" in line.lower()]
