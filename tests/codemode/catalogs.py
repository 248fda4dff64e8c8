"""The tool catalogs of four real MCP servers, listed with the official ``mcp`` client over stdio.

The tests read the saved catalogs in ``tests/codemode/catalogs/`` so they need not start the servers;
one test (``test_catalog_fixtures.py``, marked ``npm``) lists the live servers and checks the files are
current. After changing a server's version in ``tests/npm/package.json`` (and ``make setup``), regenerate:

    .venv/bin/python -m tests.codemode.catalogs

Listing needs no network and no browser: when ``unshare --net`` works here (root), every server is
started in a network namespace of its own with only a loopback device. server-github reads its token
only when it calls the GitHub API, so a placeholder is enough to list; @playwright/mcp starts a browser
only for its first browser tool call. This module does not use ``codemode``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "npm" / "node_modules"
FIXTURES = Path(__file__).resolve().parent / "catalogs"


@dataclass(frozen=True)
class CatalogServer:
    """How to start one npm reference server for listing."""

    package: str
    entry: str
    """The script to run with node, relative to the package directory."""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


SERVERS: dict[str, CatalogServer] = {
    "everything": CatalogServer("@modelcontextprotocol/server-everything", "dist/index.js"),
    # Its tools need an allowed directory; the listing does not depend on which (the live test uses another).
    "filesystem": CatalogServer("@modelcontextprotocol/server-filesystem", "dist/index.js", ("{workdir}",)),
    "github": CatalogServer(
        "@modelcontextprotocol/server-github",
        "dist/index.js",
        env=(("GITHUB_PERSONAL_ACCESS_TOKEN", "placeholder-never-sent"),),
    ),
    "playwright": CatalogServer("@playwright/mcp", "cli.js"),
}


def package_version(name: str) -> str:
    """The installed version of a server's npm package."""
    manifest = NODE_MODULES / SERVERS[name].package / "package.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing; run `make setup` to install the npm test servers")
    return str(json.loads(manifest.read_text())["version"])


def _network_isolation() -> list[str]:
    """``unshare --net`` if it works here, else nothing (listing is offline either way)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return []
    ok = subprocess.run([unshare, "--net", "true"], capture_output=True, check=False).returncode == 0
    return [unshare, "--net"] if ok else []


def parameters(name: str, workdir: Path) -> StdioServerParameters:
    """The stdio launch parameters for server ``name``, run from ``workdir``."""
    server = SERVERS[name]
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is not installed; run `make setup`")
    script = NODE_MODULES / server.package / server.entry
    argv = [*_network_isolation(), node, str(script), *(a.format(workdir=workdir) for a in server.args)]
    return StdioServerParameters(command=argv[0], args=argv[1:], env=dict(server.env), cwd=workdir)


async def list_tools(name: str, workdir: Path) -> list[types.Tool]:
    """Every tool server ``name`` lists, following pagination."""
    tools: list[types.Tool] = []
    async with Client(parameters(name, workdir), mode="legacy") as client:
        cursor: str | None = None
        while True:
            result = await client.list_tools(cursor=cursor)
            tools.extend(result.tools)
            cursor = result.next_cursor
            if not cursor:
                return tools


def to_json(tools: Sequence[types.Tool]) -> list[dict[str, Any]]:
    """Tools as they travel in ``tools/list``."""
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]


def fixture_path(name: str) -> Path:
    return FIXTURES / f"{name}.json"


def read_fixture(name: str) -> dict[str, Any]:
    """The saved catalog: ``{"server", "package", "version", "tools"}``."""
    return json.loads(fixture_path(name).read_text())


def load_catalog(name: str) -> list[types.Tool]:
    """The saved tools of server ``name``."""
    return [types.Tool.model_validate(tool) for tool in read_fixture(name)["tools"]]


def load_catalogs() -> dict[str, list[types.Tool]]:
    """All four saved catalogs, by server name."""
    return {name: load_catalog(name) for name in SERVERS}


async def _regenerate() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        for name, server in SERVERS.items():
            tools = await list_tools(name, Path(workdir))
            document = {
                "server": name,
                "package": server.package,
                "version": package_version(name),
                "tools": to_json(tools),
            }
            fixture_path(name).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            print(f"{fixture_path(name).relative_to(ROOT)}: {len(tools)} tools", file=sys.stderr)


if __name__ == "__main__":
    anyio.run(_regenerate)
