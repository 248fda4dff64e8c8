"""The ``bubblewrap`` backend: one long-lived ``bwrap`` per box, running the sandbox agent.

A box is ``bwrap`` with every namespace unshared (user, pid, net, ipc, uts, cgroup) and a new user
namespace that maps uid/gid 65534 inside to 65534 outside: as root, the portal drops to 65534 with
``setpriv`` (no capabilities, empty bounding set, ``no_new_privs``) before ``bwrap`` runs, so the box never
holds a capability of the host, and a file it could reach is judged as ``nobody``'s. Inside: the host's
``/usr`` read-only, a generated ``/etc`` (passwd, group, hosts; no resolv.conf), private ``/proc`` and
``/dev``, a size-limited ``/tmp``, further user namespaces disabled.

Limits: cgroup v1 ``memory`` (memory + swap), ``pids`` and ``cpu`` (CFS quota) directories under the
portal's own cgroup, where the controllers are mounted and writable (as root); rlimits ``NOFILE``,
``FSIZE`` and ``CORE`` always, plus ``NPROC``/``AS`` as a fallback without cgroups. One long-lived box
per sandbox (not one ``bwrap`` per command) keeps background processes alive between calls and makes a
command cost a Unix-socket round trip to the agent instead of a namespace setup.

``bwrap`` runs as 65534, so every host path it mounts must be reachable by 65534: the manager keeps them
under a runtime directory (``/run/dockyard-sandbox/ID`` as root), not under a data directory that may be
private (``/root/...``).

Options (``[servers.sandbox.options.bubblewrap]``): ``bwrap`` (path of the binary, default from PATH),
``python`` (the box's interpreter, default ``/usr/bin/python3``), ``cgroups`` (default true).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from servers.sandbox._backend import (
    AGENT_PATH,
    AGENT_SCRIPT,
    CONTROL_DIR,
    EGRESS_DIR,
    SANDBOX_GID,
    SANDBOX_UID,
    WORKSPACE,
    BackendUnavailableError,
    Limits,
    SandboxSpec,
    SandboxStateError,
)

__all__ = ["BubblewrapBackend"]

logger = logging.getLogger("sandbox")

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CONTROLLERS = ("memory", "pids", "cpu")
_START_TIMEOUT = 15.0
_ETC_FROM_HOST = ("ssl", "ca-certificates", "alternatives", "ld.so.cache", "localtime", "mime.types")
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
_PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:65534:65534:sandbox:/workspace:/bin/sh\n"
_GROUP = "root:x:0:\nsandbox:x:65534:\n"
_HOSTS = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n"
_OPTIONS = frozenset({"bwrap", "python", "cgroups"})
_HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""The environment of the host-side chain (sh, prlimit, setpriv, bwrap), which runs partly as root: fixed,
so nothing a caller puts in a profile (PATH, LD_PRELOAD) can reach it."""


@dataclass
class _Box:
    spec: SandboxSpec
    process: Process
    cgroups: list[Path] = field(default_factory=list[Path])


class BubblewrapBackend:
    """Boxes as bubblewrap sandboxes (the default backend: no daemon)."""

    name = "bubblewrap"

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise BackendUnavailableError(
                f"bubblewrap backend: unknown option(s) {sorted(unknown)!r} (known: {sorted(_OPTIONS)})"
            )
        self._bwrap = str(options.get("bwrap") or shutil.which("bwrap") or "bwrap")
        self._python = str(options.get("python") or "/usr/bin/python3")
        self._use_cgroups = bool(options.get("cgroups", True)) and os.geteuid() == 0
        self._boxes: dict[str, _Box] = {}
        self._checked = False
        self._lock = anyio.Lock()

    # -- availability ---------------------------------------------------------------------------------

    async def check(self) -> None:
        """Run ``true`` in a minimal box once.

        Raises:
            BackendUnavailableError: bwrap or the box's Python is missing, or user namespaces are off.
        """
        if self._checked:
            return
        if shutil.which(self._bwrap) is None:
            raise BackendUnavailableError(
                f"the bubblewrap backend needs the 'bwrap' binary ({self._bwrap!r} not found): "
                "install it with 'apt-get install bubblewrap' (scripts/setup-system.sh does), or choose "
                'backend = "docker"'
            )
        if not Path(self._python).is_file():
            raise BackendUnavailableError(
                f"the bubblewrap backend runs the host's {self._python!r} inside each box, and it is missing: "
                "install python3 ('apt-get install python3') or set options.bubblewrap.python"
            )
        argv = [
            *self._drop_privileges(), self._bwrap, *self._base_args(), *_box_env({}),
            "--", self._python, "-I", "-S", "-c", "",
        ]  # fmt: skip
        result = await anyio.run_process(argv, check=False, env=dict(_HOST_ENV), stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise BackendUnavailableError(
                f"bubblewrap cannot create a sandbox on this machine: {detail or f'exit {result.returncode}'} "
                "(it needs user namespaces: sysctl user.max_user_namespaces > 0, and "
                "kernel.apparmor_restrict_unprivileged_userns = 0 where AppArmor restricts them)"
            )
        self._checked = True

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, spec: SandboxSpec) -> None:
        """Boot the box and wait until its agent says it listens."""
        await self.check()
        async with self._lock:
            box = self._boxes.get(spec.id)
            if box is not None and box.process.returncode is None:
                return
            if box is not None:
                await self._teardown(box)
            spec.state_dir.mkdir(parents=True, exist_ok=True)
            spec.state_dir.chmod(0o755)
            cgroups = await self._make_cgroups(spec.id, spec.profile.limits) if self._use_cgroups else []
            argv = [
                *_rlimits(spec.profile.limits, cgroups=cgroups),
                *self._drop_privileges(),
                self._bwrap,
                *self._box_args(spec),
                "--",
                self._python,
                "-I",
                "-S",
                AGENT_PATH,
            ]
            if cgroups:
                argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *(str(c / "cgroup.procs") for c in cgroups), "--", *argv]
            log = (spec.state_dir / "box.log").open("ab")
            try:
                process = await anyio.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=dict(_HOST_ENV),  # the box's own environment goes in through --setenv
                    start_new_session=True,
                )
            finally:
                log.close()
            box = _Box(spec=spec, process=process, cgroups=cgroups)
            self._boxes[spec.id] = box
            try:
                await self._wait_ready(box)
            except SandboxStateError:
                await self._teardown(box)
                self._boxes.pop(spec.id, None)
                raise

    async def is_running(self, sandbox_id: str) -> bool:
        """Whether the box's ``bwrap`` is alive."""
        box = self._boxes.get(sandbox_id)
        return box is not None and box.process.returncode is None

    async def stop(self, sandbox_id: str) -> None:
        """Kill the box: its PID namespace dies with ``bwrap``; then empty and remove its cgroups."""
        async with self._lock:
            box = self._boxes.pop(sandbox_id, None)
            if box is not None:
                await self._teardown(box)
            else:
                await _remove_cgroups(self._cgroup_dirs(sandbox_id))  # left over by an earlier portal process

    async def destroy(self, sandbox_id: str) -> None:
        """Same as :meth:`stop`: the backend keeps nothing else (the manager removes the files)."""
        await self.stop(sandbox_id)

    async def aclose(self) -> None:
        """Stop every box."""
        for sandbox_id in list(self._boxes):
            await self.stop(sandbox_id)

    def cgroup_dirs(self, sandbox_id: str) -> list[Path]:
        """The cgroup directories of a running box (for tests and diagnostics)."""
        box = self._boxes.get(sandbox_id)
        return list(box.cgroups) if box is not None else []

    # -- internals ------------------------------------------------------------------------------------

    async def _wait_ready(self, box: _Box) -> None:
        stdout = box.process.stdout
        assert stdout is not None
        line = b""
        with anyio.move_on_after(_START_TIMEOUT):
            try:
                while not line.endswith(b"\n"):
                    line += await stdout.receive(64)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        if line.strip() != b"ready":
            tail = _tail(box.spec.state_dir / "box.log")
            raise SandboxStateError(f"the bubblewrap box did not start: {tail or 'no output'}")

    async def _teardown(self, box: _Box) -> None:
        if box.process.returncode is None:
            try:
                os.killpg(box.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with anyio.CancelScope(shield=True):
            await box.process.wait()
            if box.process.stdout is not None:
                await box.process.stdout.aclose()
            await _remove_cgroups(box.cgroups)

    def _drop_privileges(self) -> list[str]:
        if os.geteuid() != 0:
            return []  # bwrap maps the caller's uid to 65534 inside; it holds no host capability anyway
        return [
            _tool("setpriv"),
            f"--reuid={SANDBOX_UID}",
            f"--regid={SANDBOX_GID}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ]

    def _base_args(self) -> list[str]:
        args = [
            "--unshare-all",
            "--unshare-user",
            "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_GID),
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--proc", "/proc",
            "--dev", "/dev",
        ]  # fmt: skip
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        return args

    def _box_args(self, spec: SandboxSpec) -> list[str]:
        etc = spec.state_dir / "etc"
        etc.mkdir(mode=0o755, exist_ok=True)
        for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hosts", _HOSTS)):
            (etc / name).write_text(text)
        args = self._base_args()
        args += ["--dir", "/etc"]
        for name in _ETC_FROM_HOST:
            if (Path("/etc") / name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
        tmp_bytes = spec.profile.limits.tmp_mb * 1024 * 1024
        args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
        args += ["--bind", str(spec.workspace), WORKSPACE]
        args += ["--bind", str(spec.control_dir), CONTROL_DIR]
        agent = spec.state_dir / "agent.py"  # a copy: the installed package may sit where 65534 cannot walk
        shutil.copyfile(AGENT_SCRIPT, agent)
        agent.chmod(0o644)
        args += ["--ro-bind", str(agent), AGENT_PATH]
        if spec.egress_dir is not None:
            args += ["--ro-bind", str(spec.egress_dir), EGRESS_DIR]
        args += ["--remount-ro", "/", "--chdir", WORKSPACE, *_box_env(spec.profile.env)]
        return args

    def _cgroup_dirs(self, sandbox_id: str) -> list[Path]:
        if not self._use_cgroups:
            return []
        dirs: list[Path] = []
        own = _own_cgroups()
        for controller in _CONTROLLERS:
            mount = _CGROUP_ROOT / controller
            if not (mount / "cgroup.procs").exists():
                continue
            base = mount / own.get(controller, "/").lstrip("/")
            if not base.is_dir():
                base = mount
            dirs.append(base / "dockyard-sandbox" / sandbox_id)
        return dirs

    async def _make_cgroups(self, sandbox_id: str, limits: Limits) -> list[Path]:
        dirs = self._cgroup_dirs(sandbox_id)
        await _remove_cgroups(dirs)  # stale ones from a portal that died
        made: list[Path] = []
        try:
            for path in dirs:
                path.mkdir(parents=True, exist_ok=True)
                made.append(path)
                controller = path.relative_to(_CGROUP_ROOT).parts[0]
                if controller == "memory":
                    limit = str(limits.memory_mb * 1024 * 1024)
                    (path / "memory.limit_in_bytes").write_text(limit)
                    if (path / "memory.memsw.limit_in_bytes").exists():
                        (path / "memory.memsw.limit_in_bytes").write_text(limit)
                elif controller == "pids":
                    (path / "pids.max").write_text(str(limits.pids))
                elif controller == "cpu":
                    (path / "cpu.cfs_period_us").write_text("100000")
                    (path / "cpu.cfs_quota_us").write_text(str(max(int(limits.cpus * 100000), 1000)))
        except OSError as error:
            logger.warning("sandbox %s: cgroup limits unavailable (%s); relying on rlimits", sandbox_id, error)
            await _remove_cgroups(made)
            return []
        return made


def _own_cgroups() -> dict[str, str]:
    """Controller → this process's cgroup path (cgroup v1 lines of /proc/self/cgroup)."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                if controller:
                    found[controller] = parts[2]
    return found


async def _remove_cgroups(dirs: list[Path]) -> None:
    """Kill whatever is left in each cgroup, then remove it."""
    for path in dirs:
        if not path.is_dir():
            continue
        with anyio.move_on_after(5.0):
            while True:
                try:
                    pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    path.rmdir()
                    break
                except OSError:
                    await anyio.sleep(0.02)  # killed processes take a moment to leave the group


def _rlimits(limits: Limits, *, cgroups: list[Path]) -> list[str]:
    controllers = {c.relative_to(_CGROUP_ROOT).parts[0] for c in cgroups}
    disk = limits.disk_mb * 1024 * 1024
    args = [
        _tool("prlimit"),
        f"--nofile={limits.open_files}:{limits.open_files}",
        f"--fsize={disk}:{disk}",
        "--core=0:0",
    ]
    if "pids" not in controllers:
        args.append(f"--nproc={limits.pids}:{limits.pids}")
    if "memory" not in controllers:
        memory = (limits.memory_mb + 256) * 1024 * 1024  # address space, a coarse stand-in for memory
        args.append(f"--as={memory}:{memory}")
    return [*args, "--"]


def _box_env(extra: Mapping[str, str]) -> list[str]:
    """``--clearenv`` and one ``--setenv`` per variable: the box's environment, never the host side's."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKSPACE, "LANG": "C.UTF-8", "USER": "sandbox"}
    env.update(extra)
    args = ["--clearenv"]
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise SandboxStateError(f"invalid environment variable name or value: {name!r}")
        args += ["--setenv", name, value]
    return args


def _tool(name: str) -> str:
    """Absolute path of a host tool, found on the fixed host PATH (never a PATH a caller chose)."""
    return shutil.which(name, path=_HOST_ENV["PATH"]) or f"/usr/bin/{name}"


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-400:].decode(errors="replace").strip()
    except OSError:
        return ""
