"""Fixtures of the sandbox tests: each real backend, a manager over it, a box, and a real HTTP target.

The ``backend`` fixture runs every test that uses it once per backend (``bubblewrap``, ``docker``). A
backend this machine cannot run is skipped with the reason, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from servers.sandbox._agent_client import AgentClient
from servers.sandbox._backend import Backend, BackendUnavailableError, Limits, Profile, backend_from_name
from servers.sandbox._manager import Record, SandboxManager
from servers.sandbox._proxy import Credential
from servers.sandbox._settings import SandboxSettings

SMALL = Limits(memory_mb=128, cpus=1.0, pids=64, wall_seconds=20.0, disk_mb=64, tmp_mb=16, output_bytes=64 * 1024)
"""Limits small enough that the bombs of the escape suite hit them fast."""
SECRET = "sk-dockyard-test-9f8e7d6c5b4a"
"""The credential the egress proxy injects; it must reach the target and nothing else."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs every sandbox backend: {reason}")
    pytest.skip(reason)


@pytest.fixture(params=["bubblewrap", "docker"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    name: str = request.param
    try:
        backend = backend_from_name(name)
        await backend.check()
    except BackendUnavailableError as error:
        unavailable(f"{name} backend unavailable: {error}")
        raise
    try:
        yield backend
    finally:
        await backend.aclose()


@dataclass
class Target:
    """A real HTTP server on the host's loopback that records what reaches it."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    received: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def target() -> Iterator[Target]:
    found: list[dict[str, Any]] = []
    event = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found.append({"path": self.path, "headers": dict(self.headers.items())})
            event.set()
            body = b"hello from the target\n"  # never echoes a header back
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Target(port=int(server.server_address[1]), requests=found, received=event)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def manager(backend: Backend, tmp_path: Path, target: Target) -> AsyncIterator[SandboxManager]:
    settings = SandboxSettings(
        backend=backend.name,
        defaults=SMALL,
        credentials=(Credential(host=f"127.0.0.1:{target.port}", scheme="http", headers={"Authorization": SECRET}),),
    )
    manager = SandboxManager(settings, backend, root=tmp_path / "sandboxes")
    async with manager.running():
        yield manager


@dataclass
class Box:
    """A running sandbox of ``owner`` through a real manager and backend."""

    manager: SandboxManager
    record: Record
    owner: str

    async def sh(self, command: str, *, timeout: float = 15.0) -> tuple[int | None, str]:
        """Run a shell command; returns (exit code, stdout + stderr)."""
        async with self.manager.use(self.owner, self.record.id, policy_egress=self.record.profile.egress) as agent:
            result = await agent.exec(["/bin/sh", "-c", command], timeout=timeout, output_limit=1 << 20)
        return result.exit_code, (result.stdout + result.stderr).decode(errors="replace")

    async def python(self, code: str, *, timeout: float = 15.0) -> tuple[int | None, str]:
        """Run Python code; returns (exit code, stdout + stderr)."""
        async with self.manager.use(self.owner, self.record.id, policy_egress=self.record.profile.egress) as agent:
            result = await agent.exec(["python3", "-c", code], timeout=timeout, output_limit=1 << 20)
        return result.exit_code, (result.stdout + result.stderr).decode(errors="replace")

    async def agent(self) -> AgentClient:
        """The agent, the box started."""
        async with self.manager.use(self.owner, self.record.id, policy_egress=self.record.profile.egress) as agent:
            return agent


async def make_box(manager: SandboxManager, owner: str, *, egress: tuple[str, ...] = ()) -> Box:
    profile = Profile(limits=manager.settings.defaults, egress=egress)
    record = await manager.create(owner, name="test", profile=profile)
    box = Box(manager, record, owner)
    await box.agent()
    return box


@pytest.fixture
async def box(manager: SandboxManager) -> Box:
    return await make_box(manager, "user:alice")


async def host_is_healthy(tmp_path: Path) -> None:
    """The portal's side still works: it can run a process, write a file and schedule tasks promptly."""
    with anyio.fail_after(10):
        result = await anyio.run_process(["/bin/echo", "alive"])
    assert result.stdout == b"alive\n"
    probe = tmp_path / "probe"
    probe.write_text("ok")
    assert probe.read_text() == "ok"
