"""The docker backend on the real dockerd, with the real agent: what the escape suite does not cover.

Needs dockerd and the image (``make sandbox-image``, which `make test` runs first). Without them these tests
skip with the reason, except in CI (``CI`` set), where a docker that does not work is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import docker
import docker.errors
import pytest

from servers.sandbox._agent_client import AgentClient
from servers.sandbox._backend import (
    Backend,
    BackendUnavailableError,
    Limits,
    Profile,
    SandboxSpec,
    SandboxStateError,
    backend_from_name,
)
from servers.sandbox._docker import CONTAINER_PREFIX, DockerBackend, _check_runtime, sandbox_image_name

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a working docker for the sandbox's docker backend: {reason}")
    pytest.skip(f"docker backend unavailable: {reason}")


@pytest.fixture
async def backend() -> AsyncIterator[DockerBackend]:
    backend = backend_from_name("docker")
    assert isinstance(backend, DockerBackend)
    try:
        await backend.check()
    except BackendUnavailableError as error:
        _unavailable(str(error))
    try:
        yield backend
    finally:
        await backend.aclose()


_counter = 0


def make_spec(root: Path, *, limits: Limits | None = None, egress: bool = False) -> SandboxSpec:
    global _counter
    _counter += 1
    sandbox_id = f"t{os.getpid()}x{_counter}"
    dirs = {name: root / sandbox_id / name for name in ("workspace", "control", "state", "egress")}
    for path in dirs.values():
        path.mkdir(parents=True)
        os.chown(path, 65534, 65534)
    return SandboxSpec(
        id=sandbox_id,
        profile=Profile(limits=limits or Limits(), egress=("example.com",) if egress else ()),
        workspace=dirs["workspace"],
        control_dir=dirs["control"],
        egress_dir=dirs["egress"] if egress else None,
        state_dir=dirs["state"],
    )


async def started(backend: DockerBackend, spec: SandboxSpec) -> AgentClient:
    with anyio.fail_after(30):
        await backend.start(spec)  # returns once the agent answers
    agent = AgentClient(spec.control_dir)
    await agent.ping()
    return agent


async def sh(agent: AgentClient, script: str) -> tuple[int | None, str]:
    result = await agent.exec(["sh", "-c", script], timeout=20, output_limit=65536)
    return result.exit_code, (result.stdout + result.stderr).decode()


async def test_a_missing_image_is_reported_with_the_command_that_builds_it(tmp_path: Path) -> None:
    backend = DockerBackend({"image": "dockyard-sandbox:no-such-tag"})
    try:
        with pytest.raises(
            BackendUnavailableError, match=r"'dockyard-sandbox:no-such-tag' is missing.*make sandbox-image"
        ):
            await backend.check()
    except BackendUnavailableError as error:  # dockerd itself is not there
        _unavailable(str(error))
    finally:
        await backend.aclose()


async def test_an_unreachable_dockerd_is_reported_with_how_to_start_it(tmp_path: Path) -> None:
    backend = DockerBackend({"docker_host": f"unix://{tmp_path}/docker.sock"})
    with pytest.raises(BackendUnavailableError, match=r"dockerd does not answer at unix://.*start-dockerd\.sh"):
        await backend.check()
    with pytest.raises(BackendUnavailableError, match="dockerd does not answer"):
        await backend.start(make_spec(tmp_path))


def test_the_default_image_is_the_one_the_build_script_makes() -> None:
    script = Path(__file__).resolve().parents[3] / "scripts" / "build-sandbox-image.sh"
    named = subprocess.run(["bash", str(script), "--name"], capture_output=True, text=True, check=True).stdout.strip()
    assert sandbox_image_name() == named
    assert DockerBackend({}).image == named


def test_the_docker_backend_is_a_backend() -> None:
    backend: Backend = DockerBackend({})  # pyright checks the protocol statically, isinstance at run time
    assert isinstance(backend, Backend)
    assert backend.name == "docker"


def test_options_are_validated() -> None:
    with pytest.raises(BackendUnavailableError, match=r"unknown option\(s\) 'imgae'.*known: docker_host, image"):
        DockerBackend({"imgae": "x"})
    with pytest.raises(BackendUnavailableError, match="'runtime' must be a runtime name, not ''"):
        DockerBackend({"runtime": ""})
    with pytest.raises(BackendUnavailableError, match="'timeout' must be a positive number, not -1"):
        DockerBackend({"timeout": -1})
    assert DockerBackend({"runtime": "runsc"}).runtime == "runsc"


async def test_a_runtime_dockerd_does_not_know_is_reported(backend: DockerBackend) -> None:
    other = DockerBackend({"runtime": "no-such-runtime"})
    try:
        with pytest.raises(BackendUnavailableError, match=r"'no-such-runtime' is not registered with dockerd.*runc"):
            await other.check()
    finally:
        await other.aclose()


def test_gvisor_is_refused_without_host_unix_sockets_and_network_none() -> None:
    good = ["--host-uds=all", "--network=none"]
    _check_runtime("runsc", {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": good}, "runc": {}})
    with pytest.raises(BackendUnavailableError, match="without --host-uds=all and --network=none"):
        _check_runtime("runsc", {"runsc": {"path": "/usr/bin/runsc"}})
    with pytest.raises(BackendUnavailableError, match="without --network=none: "):
        _check_runtime("gvisor", {"gvisor": {"path": "/usr/local/bin/runsc", "runtimeArgs": ["--host-uds=all"]}})


async def test_the_box_runs_under_gvisor_when_runsc_is_registered(tmp_path: Path) -> None:
    backend = DockerBackend({"runtime": "runsc"})
    try:
        await backend.check()
    except BackendUnavailableError as error:
        pytest.skip(f"gVisor is optional (never required, in CI neither): {error}")
    try:
        spec = make_spec(tmp_path)
        with anyio.fail_after(60):
            agent = await started(backend, spec)
            code, out = await sh(agent, "id -u; grep CapEff /proc/self/status; echo hi > note; cat /proc/net/dev")
        assert code == 0
        assert out.startswith("65534\nCapEff:\t0000000000000000\n")
        assert "lo:" in out and "eth0" not in out
        assert (spec.workspace / "note").read_text() == "hi\n"
    finally:
        await backend.aclose()


async def test_the_container_is_hardened_as_configured(backend: DockerBackend, tmp_path: Path) -> None:
    limits = Limits(memory_mb=256, cpus=0.5, pids=64, tmp_mb=16, open_files=256)
    spec = make_spec(tmp_path, limits=limits)
    await started(backend, spec)
    client = docker.DockerClient(base_url=backend.docker_host, version="auto")
    try:
        attrs = client.containers.get(CONTAINER_PREFIX + spec.id).attrs
    finally:
        client.close()
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "65534:65534"
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert host["Privileged"] is False
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert (host["Memory"], host["MemorySwap"]) == (256 * 2**20, 256 * 2**20)
    assert (host["PidsLimit"], host["NanoCpus"]) == (64, 500_000_000)
    assert {u["Name"]: u["Hard"] for u in host["Ulimits"]} == {"nofile": 256, "fsize": 1024 * 2**20, "core": 0}
    assert sorted((m["Destination"], m["RW"]) for m in attrs["Mounts"]) == [
        ("/etc/resolv.conf", False),
        ("/run/dockyard/agent.py", False),
        ("/run/dockyard/control", True),
        ("/workspace", True),
    ]


async def test_inside_the_box_nobody_has_no_capabilities_no_network_and_a_read_only_root(
    backend: DockerBackend, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, limits=Limits(pids=64, memory_mb=256, tmp_mb=16))
    agent = await started(backend, spec)
    assert await sh(agent, "id -u; id -g") == (0, "65534\n65534\n")
    code, status = await sh(agent, "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status")
    assert code == 0
    fields = dict(line.split(":\t") for line in status.splitlines())
    assert fields == {**{f"Cap{k}": "0000000000000000" for k in ("Inh", "Prm", "Eff", "Bnd", "Amb")}, "NoNewPrivs": "1"}
    code, out = await sh(agent, "touch /etc/x /usr/x /x 2>&1; echo; cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    assert out.count("Read-only file system") == 3
    assert out.split()[-1:] == ["lo"] and "eth0" not in out
    assert await sh(agent, "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes") == (
        0,
        f"64\n{256 * 2**20}\n",
    )
    assert await sh(agent, "echo hi > /tmp/t && cat /tmp/t && df -m /tmp | tail -1 | tr -s ' ' | cut -d' ' -f2") == (
        0,
        "hi\n16\n",
    )
    assert (await sh(agent, "cat /etc/resolv.conf"))[1].startswith("# no DNS in the sandbox")


async def test_the_workspace_survives_stop_and_start_and_start_is_idempotent(
    backend: DockerBackend, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path)
    agent = await started(backend, spec)
    assert await sh(agent, "echo kept > /workspace/note && pwd && echo $HOME") == (0, "/workspace\n/workspace\n")
    assert (spec.workspace / "note").stat().st_uid == 65534
    await backend.start(spec)  # already running: nothing happens
    assert await sh(agent, "cat note") == (0, "kept\n")
    await backend.stop(spec.id)
    assert not await backend.is_running(spec.id)
    await backend.stop(spec.id)
    agent = await started(backend, spec)
    assert await backend.is_running(spec.id)
    assert await sh(agent, "cat note") == (0, "kept\n")
    await backend.destroy(spec.id)
    assert not await backend.is_running(spec.id)


async def test_concurrent_starts_of_one_box_make_one_container(backend: DockerBackend, tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(backend.start, spec)
    assert await sh(await started(backend, spec), "echo one") == (0, "one\n")
    client = docker.DockerClient(version="auto")
    try:
        assert len(client.containers.list(all=True, filters={"label": f"dockyard.sandbox={spec.id}"})) == 1
    finally:
        client.close()


async def test_the_egress_directory_is_mounted_read_only_only_when_the_profile_has_egress(
    backend: DockerBackend, tmp_path: Path
) -> None:
    closed = await started(backend, make_spec(tmp_path))
    assert await sh(closed, "test -e /run/dockyard/egress || echo absent") == (0, "absent\n")
    spec = make_spec(tmp_path, egress=True)
    (spec.egress_dir or spec.state_dir).joinpath("marker").write_text("x")
    opened = await started(backend, spec)
    code, out = await sh(opened, "cat /run/dockyard/egress/marker; touch /run/dockyard/egress/y")
    assert out.startswith("x") and "Read-only file system" in out and code != 0


async def test_aclose_removes_every_box_it_started(tmp_path: Path) -> None:
    backend = DockerBackend({})
    try:
        await backend.check()
    except BackendUnavailableError as error:
        _unavailable(str(error))
    specs = [make_spec(tmp_path) for _ in range(2)]
    for spec in specs:
        await backend.start(spec)
    await backend.aclose()
    client = docker.DockerClient(version="auto")
    try:
        for spec in specs:
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(CONTAINER_PREFIX + spec.id)
    finally:
        client.close()


async def test_a_box_that_cannot_start_is_reported_and_removed(backend: DockerBackend, tmp_path: Path) -> None:
    client = docker.DockerClient(version="auto")
    try:
        # A real image without python3: dockerd creates the container, and starting it fails.
        empty_tar = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True, check=True).stdout
        client.api.import_image_from_data(empty_tar, repository="dockyard-test-empty", tag="latest")
        broken = DockerBackend({"image": "dockyard-test-empty:latest"})
        spec = make_spec(tmp_path)
        with pytest.raises(
            SandboxStateError,
            match=rf"box {spec.id!r} exited before its agent answered: .*exec /usr/bin/python3",
        ):
            await broken.start(spec)
        assert not await broken.is_running(spec.id)
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(CONTAINER_PREFIX + spec.id)
        await broken.aclose()
    finally:
        client.images.remove("dockyard-test-empty:latest", force=True)
        client.close()
