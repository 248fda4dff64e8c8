"""The manager on the bubblewrap backend: idle reaping, persistence, quotas, and the agent socket's safety."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servers.sandbox._backend import (
    Backend,
    BackendUnavailableError,
    Limits,
    Profile,
    SandboxNotFoundError,
    SandboxQuotaError,
    SandboxRequestError,
    SandboxStateError,
    backend_from_name,
)
from servers.sandbox._bubblewrap import BubblewrapBackend
from servers.sandbox._manager import SandboxManager, covered
from servers.sandbox._settings import SandboxSettings, parse_options
from tests.servers.sandbox.conftest import SMALL, make_box

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = backend_from_name("bubblewrap")
    await backend.check()
    try:
        yield backend
    finally:
        await backend.aclose()


def _manager(backend: Backend, root: Path, **settings: object) -> SandboxManager:
    return SandboxManager(SandboxSettings(defaults=SMALL, **settings), backend, root=root)  # type: ignore[arg-type]


async def test_idle_boxes_stop_and_long_idle_sandboxes_are_destroyed(backend: Backend, tmp_path: Path) -> None:
    manager = _manager(backend, tmp_path / "sandboxes", idle_stop=10.0, idle_timeout=100.0)
    async with manager.running():
        box = await make_box(manager, "user:alice")
        await box.sh("echo kept > /workspace/file")
        t0 = box.record.last_used_at
        assert await manager.reap(now=t0 + 5) == []
        assert await backend.is_running(box.record.id)
        await manager.reap(now=t0 + 11)
        assert not await backend.is_running(box.record.id)  # stopped: idle
        _, out = await box.sh("cat /workspace/file")  # started again on use, files intact
        assert out == "kept\n"

        agent = await box.agent()
        await agent.spawn(["sleep", "1000"])
        await manager.reap(now=box.record.last_used_at + 11)
        assert await backend.is_running(box.record.id)  # a running background process keeps it up

        assert await manager.reap(now=box.record.last_used_at + 101) == [box.record.id]
        assert manager.list("user:alice") == []
        assert not (manager.root / box.record.id).exists()
        assert not manager.runtime_dir(box.record.id).exists()


async def test_sandboxes_and_files_survive_a_new_manager(backend: Backend, tmp_path: Path) -> None:
    first = _manager(backend, tmp_path / "sandboxes")
    async with first.running():
        box = await make_box(first, "service:bot")
        await box.sh("echo durable > /workspace/f")
    second = _manager(backend, tmp_path / "sandboxes")
    async with second.running():
        [record] = second.list("service:bot")
        assert record.id == box.record.id and record.profile == box.record.profile
        async with second.use("service:bot", record.id, policy_egress=()) as agent:
            assert await agent.read_file("f", limit=100) == b"durable\n"


async def test_a_request_the_agent_refuses_leaves_the_box_and_its_processes_alone(
    backend: Backend, tmp_path: Path
) -> None:
    manager = _manager(backend, tmp_path / "sandboxes")
    async with manager.running():
        box = await make_box(manager, "user:alice")
        agent = await box.agent()
        server = await agent.spawn(["sleep", "1000"])
        with pytest.raises(SandboxRequestError, match="cannot run '/no/such/program'"):
            async with manager.use("user:alice", box.record.id, policy_egress=()) as agent:
                await agent.spawn(["/no/such/program"])
        [still] = await (await box.agent()).processes()
        assert still.id == server.id and still.running


async def test_a_box_cannot_redirect_the_host_to_another_socket(backend: Backend, tmp_path: Path) -> None:
    """The box swaps agent.sock for a symlink to a host socket: the host refuses it and never connects there."""
    decoy_path = tmp_path / "decoy.sock"
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoy.bind(str(decoy_path))
    decoy.listen()
    decoy.setblocking(False)
    manager = _manager(backend, tmp_path / "sandboxes")
    async with manager.running():
        box = await make_box(manager, "user:alice")
        agent = await box.agent()
        await agent.exec(
            [
                "/bin/sh",
                "-c",
                f"rm /run/dockyard/control/agent.sock; ln -s {decoy_path} /run/dockyard/control/agent.sock",
            ],
            timeout=5,
            output_limit=1000,
        )
        with pytest.raises(SandboxStateError, match=re.escape("agent.sock is not a socket")):
            await agent.ping()
        with pytest.raises(BlockingIOError):
            decoy.accept()
        _, out = await box.sh("echo restarted")  # the manager restarts the box on the next call
        assert out == "restarted\n"
    decoy.close()


async def test_quotas_limits_and_egress_are_checked_at_creation(backend: Backend, tmp_path: Path) -> None:
    manager = _manager(backend, tmp_path / "sandboxes", max_per_owner=1, maximum=Limits(memory_mb=256))
    with pytest.raises(SandboxQuotaError, match="memory_mb=512 is above the maximum of 256"):
        manager.profile(limits={"memory_mb": 512}, policy_egress=())
    with pytest.raises(SandboxQuotaError, match="unknown limit 'gpus'"):
        manager.profile(limits={"gpus": 1}, policy_egress=())
    with pytest.raises(SandboxQuotaError, match=re.escape("'evil.com' is not allowed for you")):
        manager.profile(egress=["api.github.com", "evil.com"], policy_egress=["*.github.com", "api.github.com"])
    assert manager.profile(policy_egress=["api.github.com"]).egress == ("api.github.com",)
    assert manager.profile(egress=[], policy_egress=["api.github.com"]).egress == ()
    await manager.create("user:alice", profile=Profile(limits=SMALL))
    with pytest.raises(SandboxQuotaError, match="already have 1 sandboxes"):
        await manager.create("user:alice", profile=Profile(limits=SMALL))
    await manager.create("user:bob", profile=Profile(limits=SMALL))
    with pytest.raises(SandboxNotFoundError):
        manager.get("user:bob", manager.list("user:alice")[0].id)


def test_a_requested_host_must_be_covered_by_the_policy() -> None:
    assert covered("api.github.com", ["api.github.com"])
    assert covered("raw.githubusercontent.com", ["*.githubusercontent.com"])
    assert covered("*.a.example.com", ["*.example.com"])
    assert covered("api.github.com:443", ["api.github.com"])
    assert not covered("api.github.com:8443", ["api.github.com"])
    assert not covered("api.github.com", ["api.github.com:443"])
    assert not covered("*.example.com", ["api.example.com"])
    assert not covered("example.com", ["*.example.com"])
    assert covered("anything.net:22", ["*"]) is False  # a bare * grants 80 and 443 only
    assert covered("anything.net", ["*"])


async def test_unavailable_backends_say_why_and_what_to_do() -> None:
    with pytest.raises(
        BackendUnavailableError, match="unknown sandbox backend 'vmware' \\(known: bubblewrap, docker\\)"
    ):
        backend_from_name("vmware")
    with pytest.raises(BackendUnavailableError, match="apt-get install bubblewrap"):
        await BubblewrapBackend({"bwrap": "/no/such/bwrap"}).check()
    with pytest.raises(BackendUnavailableError, match="unknown option"):
        BubblewrapBackend({"colour": "blue"})


def test_options_are_validated_with_the_offending_key() -> None:
    with pytest.raises(ValueError, match=re.escape("options.limits.memory_mb")):
        parse_options({"limits": {"memory_mb": "lots"}})
    with pytest.raises(ValueError, match=re.escape("options.colour: unknown option")):
        parse_options({"colour": "blue"})
    with pytest.raises(ValueError, match=re.escape("above options.max_limits.memory_mb")):
        parse_options({"limits": {"memory_mb": 8192}})
    parsed = parse_options(
        {"backend": "docker", "docker": {"image": "x"}, "credentials": [{"host": "h", "headers": {"A": "b"}}]}
    )
    assert parsed.backend_options == {"image": "x"}
    assert parsed.credentials[0].scheme == "https"


async def test_bubblewrap_puts_each_box_in_cgroups_with_its_limits(backend: Backend, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("cgroup limits need root")
    assert isinstance(backend, BubblewrapBackend)
    manager = _manager(backend, tmp_path / "sandboxes")
    async with manager.running():
        box = await make_box(manager, "user:alice")
        dirs = {d.relative_to("/sys/fs/cgroup").parts[0]: d for d in backend.cgroup_dirs(box.record.id)}
        assert set(dirs) == {"memory", "pids", "cpu"}
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(SMALL.memory_mb * 1024 * 1024)
        assert (dirs["pids"] / "pids.max").read_text().strip() == str(SMALL.pids)
        assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == str(int(SMALL.cpus * 100000))
        _, out = await box.sh("cat /proc/self/status | grep -E '^(Uid|NoNewPrivs)'")
        assert "65534" in out and "NoNewPrivs:\t1" in out
        inside = {int(p) for p in (dirs["pids"] / "cgroup.procs").read_text().split()}
        assert len(inside) >= 2  # bwrap, its init and the agent
        await manager.stop(box.record.id)
        assert not any(d.exists() for d in dirs.values())
