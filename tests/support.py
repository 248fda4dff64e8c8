"""Helpers shared by the end-to-end tests: a real portal on a real socket, real upstream servers, /proc."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from portal.app import Portal, create_app
from portal.config import Settings, settings_from_mapping
from portal.gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
NPM = ROOT / "tests" / "npm" / "node_modules"
EVERYTHING_JS = NPM / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
SERVERS = Path(__file__).resolve().parent / "servers"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed; run `make setup` (scripts/setup-system.sh installs it)")
    return found


def everything_stdio() -> dict[str, Any]:
    """Config table for the npm reference server over stdio."""
    if not EVERYTHING_JS.exists():
        pytest.fail(f"{EVERYTHING_JS} is missing; run `make setup` to install the npm test servers")
    return {"command": node(), "args": [str(EVERYTHING_JS)]}


def python_server(script: str, *args: str) -> dict[str, Any]:
    """Config table for one of the small Python MCP servers in tests/servers, over stdio."""
    return {"command": sys.executable, "args": [str(SERVERS / script), *args]}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


@dataclass
class RunningPortal:
    url: str
    portal: Portal
    settings: Settings

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def gateway(self) -> Gateway:
        return self.portal.gateway


def make_settings(
    tmp_path: Path, servers: dict[str, dict[str, Any]], *, auth: dict[str, Any] | None = None, **portal: Any
) -> Settings:
    """Settings for a test portal; authentication is off (``auth = {mode = "none"}``) unless ``auth`` says otherwise."""
    raw: dict[str, Any] = {
        "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 1.0, "retry_max_backoff": 1.0, **portal},
        "auth": auth if auth is not None else {"mode": "none"},
        "servers": servers,
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)


@asynccontextmanager
async def running_portal(settings: Settings, *, wait_ready: bool = True) -> AsyncIterator[RunningPortal]:
    """Serve a portal on a free loopback port in this event loop, with uvicorn as in production."""
    sock = free_socket()
    try:
        port = int(sock.getsockname()[1])
        settings = settings.with_overrides(host="127.0.0.1", port=port)
        app = create_app(settings)  # may refuse the settings: the socket is closed below all the same
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(30):
                while not server.started:
                    await anyio.sleep(0.01)
            running = RunningPortal(f"http://127.0.0.1:{port}", app.state.portal, settings)
            if wait_ready:
                with anyio.fail_after(60):
                    await running.gateway.ready.wait()
            try:
                yield running
            finally:
                server.should_exit = True
    finally:
        sock.close()


async def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy, failing after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await anyio.sleep(interval)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
