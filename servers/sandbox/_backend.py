"""The interface every sandbox backend implements, the data it is given, and the backend registry.

A *backend* boots and tears down isolated computers ("boxes"). It does not run commands itself: each box
runs the **sandbox agent** (``servers/sandbox/_agent.py``, standard library only), which listens on a Unix
socket and executes commands, background processes and file operations *inside* the box on behalf of the
host. The host side talks to it with :class:`servers.sandbox._agent_client.AgentClient`, identical for
every backend. So a backend only has to get the mounts, the user, the limits and the agent right.

What ``start(spec)`` must produce — the contract both ``bubblewrap`` and ``docker`` follow:

* **User**: everything in the box runs as uid/gid 65534 (``nobody``) with no capabilities and
  ``no_new_privs``; never as root, not even root of a user namespace.
* **Root filesystem**: read-only (the host's ``/usr`` etc. for bubblewrap; the image for docker). ``/tmp``
  is a private, size-limited tmpfs (``Limits.tmp_mb``), ``/proc`` belongs to a private PID namespace,
  ``/dev`` holds only null, zero, full, random, urandom, tty and a private ``/dev/shm``.
* **Mounts** (in-box path ← host path):

  - ``WORKSPACE`` (``/workspace``, read-write, also the working directory and ``HOME``) ← ``spec.workspace``.
    It already exists, is owned by 65534 and is already size-limited by the manager (a loop-mounted
    ext4 image of ``Limits.disk_mb`` when the portal runs as root); the backend just mounts it. Its
    contents survive ``stop`` and restarts of the box and of the portal; only ``destroy`` removes them
    (the manager removes the host directory afterwards).
  - ``CONTROL_DIR`` (``/run/dockyard/control``, read-write) ← ``spec.control_dir``: the agent creates
    ``agent.sock`` there; the host connects to ``spec.control_dir / "agent.sock"`` (never following a
    symlink). The manager makes it a 256 KiB tmpfs owned by 65534 (as root) before ``start``.
  - ``AGENT_PATH`` (``/run/dockyard/agent.py``, read-only) ← :data:`AGENT_SCRIPT` (or a copy of it).
  - ``EGRESS_DIR`` (``/run/dockyard/egress``, read-only) ← ``spec.egress_dir``, **only** when
    ``spec.egress_dir`` is not None. It holds ``egress.sock``, the egress proxy's Unix socket, made by the
    host before ``start``. Nothing else of the host's filesystem is visible.

* **Host paths** given in ``spec`` live under a runtime directory (``/run/dockyard-sandbox/ID`` as root)
  that uid 65534 can reach; the persistent data directory itself is never mounted.
* **Network**: no network at all — a private network namespace with only loopback (bubblewrap
  ``--unshare-net``, docker ``--network none``). The only way out is ``EGRESS_DIR/egress.sock``; the agent
  exposes it inside as ``http://127.0.0.1:EGRESS_PORT`` and sets ``HTTP_PROXY``/``HTTPS_PROXY``. No DNS
  resolver is configured (no usable ``/etc/resolv.conf``).
* **Limits** (:class:`Limits`): memory (incl. swap and tmpfs), processes/threads, CPU share — through
  cgroups (docker's ``--memory``/``--pids-limit``/``--cpus``; cgroup v1 directories for bubblewrap) —
  plus rlimits (``NOFILE``, ``FSIZE``, ``CORE=0``) where the backend can set them. Per-command wall time is
  enforced by the agent and, as a backstop, by the host (:class:`AgentClient` kills the box through
  ``stop`` when the agent does not give up in time).
* **The command** of the box is ``python3 -I -S AGENT_PATH`` (``-I``: no user site, no env influence),
  with the environment ``spec.profile.env`` plus ``HOME=/workspace``, ``PATH=/usr/local/bin:/usr/bin:/bin``
  and ``LANG=C.UTF-8``. The docker image must carry ``python3`` with its standard library
  (debootstrap ``--include=python3``) at ``/usr/bin/python3``.
* ``start`` returns once the box is running (the caller then waits for ``agent.sock`` to answer); it is
  idempotent for a box that is already running. Backends keep no state that the manager cannot rebuild
  from ``spec`` after a portal restart: a box found running from an earlier portal process may be stopped
  and started again (background processes do not survive a portal restart; files do).
* The portal's own environment, the vault and any credential never enter a box.

Errors (one base, :class:`SandboxError`)::

    SandboxError
    ├── BackendUnavailableError   the backend cannot run on this machine (message says why and what to do)
    ├── SandboxNotFoundError      no sandbox with that id for this caller
    ├── SandboxQuotaError         a caller has too many sandboxes / a profile asks for more than allowed
    ├── SandboxStateError         the box is not running, its agent is gone or answered nonsense
    ├── SandboxFileError          a file operation failed (missing file, too large, not a regular file)
    ├── SandboxRequestError       the agent refused a request (e.g. a command that cannot start)
    └── ProcessNotFoundError      no background process with that id in the sandbox
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "AGENT_PATH",
    "AGENT_SCRIPT",
    "BACKENDS",
    "CONTROL_DIR",
    "EGRESS_DIR",
    "EGRESS_PORT",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "WORKSPACE",
    "Backend",
    "BackendUnavailableError",
    "ExecResult",
    "Limits",
    "OutputCallback",
    "ProcessInfo",
    "ProcessNotFoundError",
    "Profile",
    "SandboxError",
    "SandboxFileError",
    "SandboxNotFoundError",
    "SandboxQuotaError",
    "SandboxRequestError",
    "SandboxSpec",
    "SandboxStateError",
    "backend_from_name",
]

SANDBOX_UID = 65534
SANDBOX_GID = 65534
WORKSPACE = "/workspace"
"""In-box path of the persistent workspace (working directory and ``HOME``)."""
CONTROL_DIR = "/run/dockyard/control"
"""In-box directory where the agent listens on ``agent.sock``."""
EGRESS_DIR = "/run/dockyard/egress"
"""In-box directory holding ``egress.sock``, the egress proxy (present only when network is allowed)."""
AGENT_PATH = "/run/dockyard/agent.py"
"""In-box path of the agent script (mounted read-only)."""
EGRESS_PORT = 3128
"""Port of the in-box loopback forwarder to the egress proxy (``HTTP_PROXY=http://127.0.0.1:3128``)."""
AGENT_SCRIPT = Path(__file__).resolve().parent / "_agent.py"
"""Host path of the agent script, to be mounted at :data:`AGENT_PATH`."""


class SandboxError(Exception):
    """Base of every sandbox error."""


class BackendUnavailableError(SandboxError):
    """The backend cannot run here: its message says what is missing and how to get it."""


class SandboxNotFoundError(SandboxError):
    """No sandbox with this id belongs to the caller."""


class SandboxQuotaError(SandboxError):
    """Too many sandboxes, or a profile asks for more than the configured maximum."""


class SandboxStateError(SandboxError):
    """The box is not running as expected, or its agent is unreachable or misbehaving."""


class SandboxFileError(SandboxError):
    """A file operation in the box failed."""


class SandboxRequestError(SandboxError):
    """The agent refused a request: the box is fine, the request was not (a missing program, bad input)."""


class ProcessNotFoundError(SandboxError):
    """No background process with this id exists in the sandbox."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits of one sandbox."""

    memory_mb: int = 512
    """Memory (RSS + page cache + tmpfs, no swap) of everything in the box."""
    cpus: float = 1.0
    """CPU time share in cores."""
    pids: int = 128
    """Processes plus threads alive at once."""
    wall_seconds: float = 60.0
    """Default and maximum wall time of one command; background processes are not bound by it."""
    disk_mb: int = 1024
    """Size of the workspace."""
    tmp_mb: int = 64
    """Size of the private ``/tmp``."""
    output_bytes: int = 1024 * 1024
    """Output kept per command (stdout and stderr each); the rest is dropped and reported as truncated."""
    file_bytes: int = 8 * 1024 * 1024
    """Largest file the file tools read or write in one call."""
    open_files: int = 1024
    """RLIMIT_NOFILE."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """What a sandbox is created with: limits, environment and network policy."""

    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    """Extra environment of every command (never secrets: credentials live in the egress proxy)."""
    egress: tuple[str, ...] = ()
    """Allowed hosts (``api.github.com``, ``*.example.com``, ``host:port``); empty means no network at all."""

    @property
    def network(self) -> bool:
        """Whether the box gets the egress proxy."""
        return bool(self.egress)


@dataclass(frozen=True, kw_only=True)
class SandboxSpec:
    """Everything a backend needs to boot one box; rebuilt by the manager from its metadata after a restart."""

    id: str
    """Unique id (``[a-z0-9]{1,32}``); safe in file, cgroup and container names."""
    profile: Profile
    workspace: Path
    """Host directory mounted at :data:`WORKSPACE` (prepared and size-limited by the manager)."""
    control_dir: Path
    """Host directory mounted at :data:`CONTROL_DIR`, owned by 65534."""
    egress_dir: Path | None = None
    """Host directory mounted read-only at :data:`EGRESS_DIR`, or None for no network."""
    state_dir: Path
    """Host directory private to the backend for this box (never mounted), e.g. for its logs."""


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """The outcome of one command."""

    exit_code: int | None
    """The exit status, ``128 + N`` for a signal, None when it was killed for running past its time."""
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ProcessInfo:
    """A background process of a sandbox."""

    id: str
    command: list[str]
    pid: int
    """The pid inside the box."""
    running: bool
    exit_code: int | None
    started_at: float
    log_bytes: int = 0


OutputCallback = Callable[[Literal["stdout", "stderr"], bytes], Awaitable[None]]
"""Receives output chunks of a running command as they arrive (for progress notifications)."""


@runtime_checkable
class Backend(Protocol):
    """Boots and tears down boxes; see the module docstring for exactly what a box must look like."""

    name: str
    """``bubblewrap`` or ``docker``."""

    async def check(self) -> None:
        """Verify the backend can run here (binary present, daemon reachable, image built).

        Raises:
            BackendUnavailableError: Not usable; the message says why and what to do.
        """
        ...

    async def start(self, spec: SandboxSpec) -> None:
        """Boot the box running the agent; no-op when it is already running.

        Raises:
            BackendUnavailableError: The backend cannot run here.
            SandboxStateError: The box did not start.
        """
        ...

    async def is_running(self, sandbox_id: str) -> bool:
        """Whether the box is up (its agent may still be starting)."""
        ...

    async def stop(self, sandbox_id: str) -> None:
        """Kill every process of the box and release its runtime resources; keep the workspace. Idempotent."""
        ...

    async def destroy(self, sandbox_id: str) -> None:
        """``stop``, then drop whatever else the backend keeps for the box. Idempotent."""
        ...

    async def aclose(self) -> None:
        """Stop every box this backend started (the portal is shutting down)."""
        ...


BACKENDS: Mapping[str, str] = {
    "bubblewrap": "servers.sandbox._bubblewrap:BubblewrapBackend",
    "docker": "servers.sandbox._docker:DockerBackend",
}
"""Backend name → ``module:class``; the class takes ``(options: Mapping[str, Any])``."""


def backend_from_name(name: str, options: Mapping[str, Any] | None = None) -> Backend:
    """Instantiate a backend by name, importing its module only now.

    ``options`` are backend-specific (e.g. docker's ``image`` and ``runtime``); unknown keys are an error
    of the backend's constructor. Availability is checked by :meth:`Backend.check`, not here.

    Raises:
        BackendUnavailableError: The name is unknown or its module cannot be imported (e.g. a missing SDK).
    """
    target = BACKENDS.get(name)
    if target is None:
        raise BackendUnavailableError(f"unknown sandbox backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendUnavailableError(f"sandbox backend {name!r} cannot be loaded: {error}") from None
    factory: Callable[[Mapping[str, Any]], Backend] = getattr(module, attribute)
    return factory(dict(options or {}))
