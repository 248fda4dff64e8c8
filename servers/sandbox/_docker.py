"""The ``docker`` sandbox backend: one container per box, through the ``docker`` SDK.

Each box is a container named ``dockyard-sbx-<id>`` of the locally built image (no registry is reachable:
``scripts/build-sandbox-image.sh`` makes ``dockyard-sandbox:<tag>`` with debootstrap and ``docker import``;
``make sandbox-image`` runs it). The container follows the contract of :mod:`servers.sandbox._backend`:

* ``--network none``; read-only root; ``--cap-drop ALL``; ``no-new-privileges``; user 65534:65534;
  docker's default seccomp profile; ``--init`` (tini as PID 1 reaps orphans, the agent is PID 2);
* memory with no swap, pids and CPU limits from :class:`~servers.sandbox._backend.Limits`; rlimits
  ``nofile``, ``fsize`` and ``core=0``; a private tmpfs ``/tmp`` and ``/dev/shm`` of ``tmp_mb``;
* bind mounts: the workspace (rw), the control directory (rw), the agent script (ro) and, only when the
  profile has egress, the egress proxy's directory (ro); a ``/etc/resolv.conf`` naming no resolver (ro)
  instead of the host's that docker would copy in;
* optionally another OCI runtime, e.g. gVisor's ``runsc`` (``apt-get install runsc``). It must be registered
  with dockerd (``/etc/docker/daemon.json``, then restart dockerd or send it SIGHUP) with ``--host-uds=all``,
  for the agent's and the egress proxy's Unix sockets to cross the sandbox boundary, and ``--network=none``,
  without which runsc refuses to start here (the ``ptrace`` platform is its default; ``kvm`` hangs here)::

      {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--host-uds=all", "--network=none"]}}}

  Measured here: a box starts in 0.5 to 0.7 s and a command takes 10 to 19 ms under runsc, against ~0.25 s and
  ~1.3 ms with runc (``bench/sandbox.py --runsc``).

The SDK is synchronous: every call runs in a worker thread (``anyio.to_thread``), never on the event loop.
Containers keep no state the manager cannot rebuild from the spec: ``stop`` removes the container (the
workspace is a bind mount and stays), ``start`` creates a fresh one.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit

from servers.sandbox._agent_client import AgentClient
from servers.sandbox._backend import (
    AGENT_PATH,
    AGENT_SCRIPT,
    CONTROL_DIR,
    EGRESS_DIR,
    SANDBOX_GID,
    SANDBOX_UID,
    WORKSPACE,
    BackendUnavailableError,
    SandboxSpec,
    SandboxStateError,
)

__all__ = ["BUILD_SCRIPT", "CONTAINER_PREFIX", "DockerBackend", "sandbox_image_name"]

_T = TypeVar("_T")

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-sandbox-image.sh"
"""The script that builds the image (present in a source checkout)."""
CONTAINER_PREFIX = "dockyard-sbx-"
LABEL = "dockyard.sandbox"
"""Label carrying the sandbox id on every container of this backend."""
_OPTIONS = frozenset({"image", "runtime", "docker_host", "timeout"})
_MiB = 1024 * 1024
_START_TIMEOUT = 15.0


def sandbox_image_name() -> str:
    """The image ``scripts/build-sandbox-image.sh`` builds: its tag is a hash of the script.

    Outside a source checkout (no script), ``dockyard-sandbox:latest``, which the script also tags.
    """
    try:
        digest = hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()
    except OSError:
        return "dockyard-sandbox:latest"
    return f"dockyard-sandbox:{digest[:12]}"


def _build_hint() -> str:
    if BUILD_SCRIPT.exists():
        return f"build it with `make sandbox-image` (runs {BUILD_SCRIPT}; ~1 min the first time)"
    return "build it with scripts/build-sandbox-image.sh from a Dockyard source checkout"


class DockerBackend:
    """Boots boxes as hardened containers on the local dockerd.

    Options (``[servers.sandbox.options.docker]``):

    - ``image``: the image to run (default: :func:`sandbox_image_name`);
    - ``runtime``: an OCI runtime registered with dockerd instead of its default ``runc`` (e.g. ``"runsc"``);
    - ``docker_host``: dockerd's address (default ``unix:///var/run/docker.sock``);
    - ``timeout``: seconds for one call to dockerd (default 30).
    """

    name = "docker"

    def __init__(self, options: Mapping[str, Any]) -> None:
        """Validate the options; nothing contacts dockerd until :meth:`check` or :meth:`start`.

        Raises:
            BackendUnavailableError: An unknown option, or one of the wrong type.
        """
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise BackendUnavailableError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for the docker sandbox backend "
                f"(known: {', '.join(sorted(_OPTIONS))})"
            )
        self.image = _string_option(options, "image", sandbox_image_name())
        self.docker_host = _string_option(options, "docker_host", "unix:///var/run/docker.sock")
        runtime = options.get("runtime")
        if runtime is not None and (not isinstance(runtime, str) or not runtime.strip()):
            raise BackendUnavailableError(f"docker sandbox option 'runtime' must be a runtime name, not {runtime!r}")
        self.runtime: str | None = runtime
        timeout = options.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise BackendUnavailableError(f"docker sandbox option 'timeout' must be a positive number, not {timeout!r}")
        self.timeout = max(1, round(timeout))
        self._client: docker.DockerClient | None = None
        self._client_lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(8)
        self._started: set[str] = set()
        self._locks: dict[str, anyio.Lock] = {}

    # -- the Backend protocol ------------------------------------------------------------------------------

    async def check(self) -> None:
        """Verify dockerd answers, the image exists and the configured runtime is registered.

        Raises:
            BackendUnavailableError: What is missing, and the command that provides it.
        """
        client = await self._connect()
        try:
            await self._run(client.images.get, self.image)
        except docker.errors.ImageNotFound:
            raise BackendUnavailableError(
                f"the docker sandbox image {self.image!r} is missing: {_build_hint()}"
            ) from None
        except docker.errors.APIError as error:
            raise BackendUnavailableError(f"dockerd could not look up {self.image!r}: {_explain(error)}") from None
        if self.runtime is not None:
            info = await self._run(client.info)
            _check_runtime(self.runtime, info.get("Runtimes") or {})

    async def start(self, spec: SandboxSpec) -> None:
        """Create and start the box's container and wait until its agent answers; no-op when it is running.

        Raises:
            BackendUnavailableError: dockerd is unreachable or the image is missing.
            SandboxStateError: dockerd refused the container, or its agent did not answer in time.
        """
        async with self._lock(spec.id):
            await self._start(spec)

    async def _start(self, spec: SandboxSpec) -> None:
        client = await self._connect()
        existing = await self._get(CONTAINER_PREFIX + spec.id)
        if existing is not None:
            if existing.status == "running":
                self._started.add(spec.id)
                return
            await self._remove(existing)  # a leftover of a stopped box or an earlier portal: start afresh
        try:
            container = await self._run(lambda: client.containers.create(**self._create_args(spec)))
        except docker.errors.ImageNotFound:
            raise BackendUnavailableError(
                f"the docker sandbox image {self.image!r} is missing: {_build_hint()}"
            ) from None
        except docker.errors.APIError as error:
            raise SandboxStateError(f"dockerd refused to create sandbox {spec.id!r}: {_explain(error)}") from None
        self._started.add(spec.id)
        try:
            await self._run(container.start)
            await self._wait_ready(container, spec)
        except docker.errors.APIError as error:
            await self._remove(container)
            self._started.discard(spec.id)
            raise SandboxStateError(f"sandbox {spec.id!r} did not start: {_explain(error)}") from None
        except SandboxStateError:
            await self._remove(container)
            self._started.discard(spec.id)
            raise

    async def is_running(self, sandbox_id: str) -> bool:
        """Whether the box's container is running."""
        container = await self._get(CONTAINER_PREFIX + sandbox_id)
        return container is not None and container.status == "running"

    async def stop(self, sandbox_id: str) -> None:
        """Kill and remove the box's container (its workspace is a bind mount and stays). Idempotent."""
        async with self._lock(sandbox_id):
            container = await self._get(CONTAINER_PREFIX + sandbox_id)
            if container is not None:
                await self._remove(container)
            self._started.discard(sandbox_id)

    async def destroy(self, sandbox_id: str) -> None:
        """Same as :meth:`stop`: the container is all this backend keeps for a box."""
        await self.stop(sandbox_id)
        self._locks.pop(sandbox_id, None)

    async def aclose(self) -> None:
        """Remove every container this backend started, then close the connection to dockerd."""
        with anyio.CancelScope(shield=True):
            for sandbox_id in sorted(self._started):
                try:
                    await self.stop(sandbox_id)
                except (BackendUnavailableError, SandboxStateError):
                    pass  # dockerd went away: nothing more can be done from here
            if self._client is not None:
                await anyio.to_thread.run_sync(self._client.close)
                self._client = None

    # -- helpers -------------------------------------------------------------------------------------------

    def _lock(self, sandbox_id: str) -> anyio.Lock:
        """Serializes start and stop of one box (two creates of one name would collide in dockerd)."""
        return self._locks.setdefault(sandbox_id, anyio.Lock())

    def _create_args(self, spec: SandboxSpec) -> dict[str, Any]:
        limits = spec.profile.limits
        mounts = [
            Mount(WORKSPACE, str(spec.workspace), type="bind"),
            Mount(CONTROL_DIR, str(spec.control_dir), type="bind"),
            Mount(AGENT_PATH, str(AGENT_SCRIPT), type="bind", read_only=True),
        ]
        if spec.egress_dir is not None:
            mounts.append(Mount(EGRESS_DIR, str(spec.egress_dir), type="bind", read_only=True))
        # Docker would copy the host's resolver into the box: useless without a network, and host detail.
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        resolv = spec.state_dir / "resolv.conf"
        resolv.write_text("# no DNS in the sandbox: the only way out is the egress proxy (HTTP_PROXY)\n")
        mounts.append(Mount("/etc/resolv.conf", str(resolv), type="bind", read_only=True))
        environment = {
            **spec.profile.env,
            "HOME": WORKSPACE,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        memory = limits.memory_mb * _MiB
        return {
            "image": self.image,
            "command": ["/usr/bin/python3", "-I", "-S", AGENT_PATH],
            "name": CONTAINER_PREFIX + spec.id,
            "hostname": "sandbox",
            "labels": {LABEL: spec.id},
            "user": f"{SANDBOX_UID}:{SANDBOX_GID}",
            "working_dir": WORKSPACE,
            "environment": environment,
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "init": True,
            "ipc_mode": "private",
            "mem_limit": memory,
            "memswap_limit": memory,  # equal to the memory limit: no swap
            "pids_limit": limits.pids,
            "nano_cpus": int(limits.cpus * 1e9),
            "ulimits": [
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(name="fsize", soft=limits.disk_mb * _MiB, hard=limits.disk_mb * _MiB),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,exec,size={limits.tmp_mb}m,mode=1777"},
            "shm_size": limits.tmp_mb * _MiB,
            "mounts": mounts,
            "runtime": self.runtime,
            "log_config": LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "1"}),
        }

    async def _wait_ready(self, container: Container, spec: SandboxSpec) -> None:
        """Return once the agent answers, as the bubblewrap backend does; explain a box that died instead."""
        agent = AgentClient(spec.control_dir)
        with anyio.move_on_after(_START_TIMEOUT):
            polls = 0
            while True:
                try:
                    await agent.ping()
                    return
                except SandboxStateError:
                    pass
                polls += 1
                if polls % 20 == 0:  # every ~0.2 s, ask dockerd whether the box is still there
                    await self._run(container.reload)
                    if container.status != "running":
                        break
                await anyio.sleep(0.01)
        logs = await self._run(lambda: container.logs(stdout=True, stderr=True, tail=20))
        detail = logs.decode(errors="replace").strip() or "no output"
        if container.status != "running":
            raise SandboxStateError(f"the docker box {spec.id!r} exited before its agent answered: {detail}")
        raise SandboxStateError(
            f"the agent of docker box {spec.id!r} did not answer within {_START_TIMEOUT:g} s: {detail}"
        )

    async def _connect(self) -> docker.DockerClient:
        async with self._client_lock:
            if self._client is None:

                def connect() -> docker.DockerClient:
                    if self.docker_host.startswith("unix://"):
                        # Probe first: the SDK leaks its socket when dockerd's is missing or refuses.
                        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                            probe.settimeout(self.timeout)
                            probe.connect(self.docker_host.removeprefix("unix://"))
                    return docker.DockerClient(base_url=self.docker_host, version="auto", timeout=self.timeout)

                try:
                    self._client = await anyio.to_thread.run_sync(connect, limiter=self._limiter)
                except (docker.errors.DockerException, OSError) as error:
                    raise BackendUnavailableError(
                        f"dockerd does not answer at {self.docker_host} ({error}): start it with "
                        "scripts/start-dockerd.sh, or `systemctl start docker` (scripts/setup-system.sh installs it)"
                    ) from None
            return self._client

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)
        except docker.errors.APIError:
            raise
        except (docker.errors.DockerException, OSError) as error:  # the connection to dockerd broke
            raise BackendUnavailableError(f"dockerd at {self.docker_host} stopped answering: {error}") from None

    async def _get(self, name: str) -> Container | None:
        client = await self._connect()
        try:
            return await self._run(client.containers.get, name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as error:
            raise SandboxStateError(f"dockerd failed to look up container {name!r}: {_explain(error)}") from None

    async def _remove(self, container: Container) -> None:
        try:
            await self._run(lambda: container.remove(force=True))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code == 409 and "already in progress" in str(error.explanation):
                return  # a concurrent stop of the same box is removing it
            raise SandboxStateError(f"dockerd failed to remove {container.name!r}: {_explain(error)}") from None


def _string_option(options: Mapping[str, Any], key: str, default: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise BackendUnavailableError(f"docker sandbox option {key!r} must be a non-empty string, not {value!r}")
    return value


_RUNSC_ARGS = ("--host-uds=all", "--network=none")


def _check_runtime(runtime: str, runtimes: Mapping[str, Any]) -> None:
    if runtime not in runtimes:
        raise BackendUnavailableError(
            f"the docker runtime {runtime!r} is not registered with dockerd (it has: {', '.join(sorted(runtimes))}); "
            'add it to /etc/docker/daemon.json, e.g. {"runtimes": {"runsc": {"path": "/usr/bin/runsc", '
            '"runtimeArgs": ["--host-uds=all", "--network=none"]}}} (`apt-get install runsc` for gVisor), and '
            "restart dockerd (or send it SIGHUP)"
        )
    entry = runtimes[runtime]
    path = str(entry.get("path", "")) if isinstance(entry, Mapping) else ""
    args = [str(a) for a in entry.get("runtimeArgs") or []] if isinstance(entry, Mapping) else []
    missing = [arg for arg in _RUNSC_ARGS if arg not in args]
    if Path(path).name == "runsc" and missing:
        raise BackendUnavailableError(
            f"the docker runtime {runtime!r} (gVisor's runsc) runs without {' and '.join(missing)}: the sandbox "
            "agent's and the egress proxy's Unix sockets need --host-uds=all, and runsc starts no container here "
            f'without --network=none; set "runtimeArgs": {list(_RUNSC_ARGS)!r} for it in /etc/docker/daemon.json '
            "and restart dockerd (or send it SIGHUP)"
        )


def _explain(error: docker.errors.APIError) -> str:
    return str(error.explanation or error)
