"""The sandbox package's public surface, pinned; and the server runs alone over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

import servers.sandbox


def test_the_public_names_of_servers_sandbox() -> None:
    assert sorted(servers.sandbox.__all__) == [
        "Backend",
        "BackendUnavailableError",
        "CALLER_META",
        "Limits",
        "Profile",
        "SandboxError",
        "SandboxSpec",
        "backend_from_name",
        "create_server",
    ]


def test_the_caller_meta_key_is_the_portals() -> None:
    from portal.gateway import CALLER_META

    assert servers.sandbox.CALLER_META == CALLER_META


@pytest.mark.anyio
async def test_the_server_runs_alone_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "servers.sandbox", "--data-dir", str(tmp_path)], cwd=str(Path.cwd())
    )
    async with Client(stdio_client(params)) as client:  # pyright: ignore[reportArgumentType]
        created = await client.call_tool("create", {"name": "alone"})
        box = created.structured_content
        assert box is not None and box["owner"] == "local"
        ran = await client.call_tool("exec", {"sandbox_id": box["id"], "command": "echo $((6*7))"})
        assert ran.structured_content is not None and ran.structured_content["stdout"] == "42\n"
        await client.call_tool("destroy", {"sandbox_id": box["id"]})
