"""Sandboxes per principal: ownership, metadata on disk, box start-up on demand, the idle reaper, egress.

Layout: ``DATA_DIR/sandboxes/ID/`` holds what persists: ``meta.json`` (owner, name, profile, times;
written atomically) and ``disk.img`` (the workspace's file system, see ``_workspace``). The runtime
directory (``/run/dockyard-sandbox/ID/`` as root, reachable by uid 65534 whatever the data dir's
permissions) holds ``workspace/`` (its mount point), ``control/`` (the agent's socket), ``egress/`` (the
egress proxy's socket) and ``state/`` (backend-private). Metadata survives a portal restart; a box (and
its background processes) does not: it is started again on the next call.

A sandbox belongs to the principal that created it. Every lookup takes the caller and answers "not found"
for someone else's sandbox, so ids reveal nothing. Egress proxies run on a thread of their own, so they
outlive any one MCP session and never compete with the portal's event loop.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from servers.sandbox._agent_client import AgentClient
from servers.sandbox._backend import (
    SANDBOX_GID,
    SANDBOX_UID,
    Backend,
    Limits,
    Profile,
    SandboxError,
    SandboxNotFoundError,
    SandboxQuotaError,
    SandboxRequestError,
    SandboxSpec,
    SandboxStateError,
)
from servers.sandbox._proxy import EgressEvent, EgressProxy, split_pattern
from servers.sandbox._settings import SandboxSettings
from servers.sandbox._workspace import can_limit_disk, mount_control, mount_workspace, unmount_workspace

__all__ = ["Record", "SandboxManager", "covered"]

logger = logging.getLogger("sandbox")
egress_logger = logging.getLogger("sandbox.egress")

_EVENTS_KEPT = 200
_RUNTIME_ROOT = Path("/run/dockyard-sandbox")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AGENT_WAIT = 20.0


@dataclass(kw_only=True)
class Record:
    """What the manager knows about one sandbox (``meta.json``)."""

    id: str
    owner: str
    name: str
    profile: Profile
    created_at: float
    last_used_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "owner": self.owner,
            "name": self.name,
            "limits": asdict(self.profile.limits),
            "env": dict(self.profile.env),
            "egress": list(self.profile.egress),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """Read back :meth:`to_json`."""
        known = {f.name for f in fields(Limits)}
        limits = Limits(**{k: v for k, v in dict(data["limits"]).items() if k in known})
        profile = Profile(limits=limits, env=dict(data.get("env") or {}), egress=tuple(data.get("egress") or ()))
        return cls(
            id=str(data["id"]),
            owner=str(data["owner"]),
            name=str(data.get("name") or ""),
            profile=profile,
            created_at=float(data["created_at"]),
            last_used_at=float(data["last_used_at"]),
        )


@dataclass
class _Live:
    """Runtime state of a sandbox whose box is (or is being) started."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    busy: int = 0
    proxy: EgressProxy | None = None
    proxy_task: Future[None] | None = None
    events: deque[EgressEvent] = field(default_factory=lambda: deque[EgressEvent](maxlen=_EVENTS_KEPT))
    disk_limited: bool = False


def covered(pattern: str, policy: Sequence[str]) -> bool:
    """Whether the allow-list pattern ``pattern`` asks for no more than some pattern of ``policy`` grants."""
    name, port = split_pattern(pattern)
    for allowed in policy:
        allowed_name, allowed_port = split_pattern(allowed)
        if allowed_port is not None and allowed_port != port:
            continue
        if allowed_port is None and port is not None and port not in (80, 443):
            continue
        if allowed_name == "*" or allowed_name == name:
            return True
        if allowed_name.startswith("*.") and fnmatch.fnmatchcase(name, allowed_name):
            return True
    return False


class SandboxManager:
    """Creates, finds, runs and removes the sandboxes of every principal."""

    def __init__(
        self, settings: SandboxSettings, backend: Backend, *, root: Path, runtime_root: Path | None = None
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.root = root
        """Persistent state: ``ID/meta.json`` and ``ID/disk.img`` (or ``ID/workspace/`` without root)."""
        self.runtime_root = runtime_root or (_RUNTIME_ROOT if os.geteuid() == 0 else root)
        """Sockets, mount points and backend state, reachable by uid 65534 (a data dir may not be)."""
        self._records: dict[str, Record] | None = None
        self._live: dict[str, _Live] = {}
        self._create_lock = anyio.Lock()
        self._egress_cm: AbstractContextManager[BlockingPortal] | None = None
        self._egress_portal: BlockingPortal | None = None
        self._users = 0

    # -- records --------------------------------------------------------------------------------------

    @property
    def records(self) -> dict[str, Record]:
        """All sandboxes, loaded from disk on first use."""
        if self._records is None:
            self._records = {}
            if self.root.is_dir():
                for meta in sorted(self.root.glob("*/meta.json")):
                    try:
                        record = Record.from_json(json.loads(meta.read_text()))
                    except (OSError, ValueError, KeyError, TypeError) as error:
                        logger.warning("ignoring unreadable sandbox metadata %s: %s", meta, error)
                        continue
                    self._records[record.id] = record
        return self._records

    def _save(self, record: Record) -> None:
        path = self.root / record.id / "meta.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=1))
        os.replace(tmp, path)

    def get(self, owner: str, sandbox_id: str) -> Record:
        """The caller's sandbox.

        Raises:
            SandboxNotFoundError: It does not exist or belongs to someone else.
        """
        record = self.records.get(sandbox_id)
        if record is None or record.owner != owner:
            raise SandboxNotFoundError(f"no sandbox {sandbox_id!r} (list yours with the 'list' tool)")
        return record

    def list(self, owner: str) -> list[Record]:
        """The caller's sandboxes, oldest first."""
        return sorted((r for r in self.records.values() if r.owner == owner), key=lambda r: r.created_at)

    def events(self, owner: str, sandbox_id: str) -> list[EgressEvent]:
        """Recent egress decisions of the caller's sandbox (since the portal started), oldest first."""
        self.get(owner, sandbox_id)
        live = self._live.get(sandbox_id)
        return list(live.events) if live is not None else []

    def disk_limited(self, sandbox_id: str) -> bool:
        """Whether the workspace of a started box has its size enforced."""
        live = self._live.get(sandbox_id)
        return live is not None and live.disk_limited

    # -- create / destroy -----------------------------------------------------------------------------

    def profile(
        self,
        *,
        limits: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        egress: Sequence[str] | None = None,
        policy_egress: Sequence[str],
    ) -> Profile:
        """A profile from the defaults and a caller's requests, checked against the maxima and the policy.

        Raises:
            SandboxQuotaError: A limit is above its maximum, or an egress host is not granted by the policy.
            SandboxRequestError: An environment variable has an invalid name or value.
        """
        values = asdict(self.settings.defaults)
        for key, value in (limits or {}).items():
            if value is None:
                continue
            if key not in values:
                raise SandboxQuotaError(f"unknown limit {key!r} (known: {', '.join(sorted(values))})")
            maximum = getattr(self.settings.maximum, key)
            if not isinstance(value, int | float) or value <= 0:
                raise SandboxQuotaError(f"limit {key} must be a positive number, got {value!r}")
            if value > maximum:
                raise SandboxQuotaError(f"limit {key}={value!r} is above the maximum of {maximum!r}")
            values[key] = type(values[key])(value)
        if egress is None:
            hosts = tuple(policy_egress)
        else:
            refused = [h for h in egress if not covered(h, policy_egress)]
            if refused:
                granted = ", ".join(policy_egress) or "none"
                raise SandboxQuotaError(
                    f"egress to {', '.join(map(repr, refused))} is not allowed for you (your policy grants: {granted})"
                )
            hosts = tuple(egress)
        merged_env = {**self.settings.env, **(env or {})}
        for name, value in merged_env.items():
            if not _ENV_NAME.fullmatch(name) or "\0" in value:
                raise SandboxRequestError(f"invalid environment variable {name!r} (names: letters, digits, '_')")
        return Profile(limits=Limits(**values), env=merged_env, egress=hosts)

    async def create(self, owner: str, *, name: str = "", profile: Profile) -> Record:
        """Register a new sandbox for ``owner`` (its box starts on first use).

        Raises:
            SandboxQuotaError: The owner already has ``max_per_owner`` sandboxes.
        """
        async with self._create_lock:
            if len(self.list(owner)) >= self.settings.max_per_owner:
                raise SandboxQuotaError(f"you already have {self.settings.max_per_owner} sandboxes; destroy one first")
            sandbox_id = secrets.token_hex(6)
            now = time.time()
            record = Record(id=sandbox_id, owner=owner, name=name, profile=profile, created_at=now, last_used_at=now)
            box = self.root / sandbox_id
            box.mkdir(parents=True)
            self._save(record)
            self.records[sandbox_id] = record
        logger.info("sandbox %s created for %s", sandbox_id, owner)
        return record

    async def destroy(self, owner: str, sandbox_id: str) -> None:
        """Stop the caller's sandbox and delete everything of it."""
        record = self.get(owner, sandbox_id)
        await self._destroy(record)

    async def _destroy(self, record: Record) -> None:
        live = self._live.setdefault(record.id, _Live())
        async with live.lock:
            await self._stop_box(record.id)
            await self.backend.destroy(record.id)
            if os.path.ismount(self.workspace_dir(record.id)):
                raise SandboxStateError(f"the workspace of sandbox {record.id} is still mounted; try again")
            self.records.pop(record.id, None)
            for path in {self.root / record.id, self.runtime_dir(record.id)}:
                await anyio.to_thread.run_sync(lambda p=path: shutil.rmtree(p, ignore_errors=True))
        self._live.pop(record.id, None)
        logger.info("sandbox %s of %s destroyed", record.id, record.owner)

    # -- running --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def use(self, owner: str, sandbox_id: str, *, policy_egress: Sequence[str]) -> AsyncIterator[AgentClient]:
        """The agent of the caller's sandbox, its box started if needed; marks the sandbox used.

        ``policy_egress`` is the caller's allow-list now: a host the sandbox was created with but that the
        policy no longer grants is refused from this call on.

        Raises:
            SandboxNotFoundError: Not the caller's sandbox.
            SandboxStateError: The box cannot be started.
        """
        record = self.get(owner, sandbox_id)
        live = self._live.setdefault(sandbox_id, _Live())
        live.busy += 1
        try:
            async with live.lock:
                await self._ensure(record, live)
                if live.proxy is not None:
                    live.proxy.allow = tuple(h for h in record.profile.egress if covered(h, policy_egress))
            self._touch(record)
            try:
                yield AgentClient(self.runtime_dir(sandbox_id) / "control")
            except SandboxStateError:
                await self.stop(sandbox_id)  # a box whose agent misbehaves is restarted on the next call
                raise
        finally:
            live.busy -= 1
            self._touch(record)

    def _touch(self, record: Record) -> None:
        record.last_used_at = time.time()
        if record.id in self.records:
            with contextlib.suppress(OSError):
                self._save(record)

    def runtime_dir(self, sandbox_id: str) -> Path:
        """Where a sandbox's sockets, mount point and backend state live."""
        return self.runtime_root / sandbox_id

    def workspace_dir(self, sandbox_id: str) -> Path:
        """The host directory of a sandbox's workspace (a mount point when the disk limit is enforced)."""
        if can_limit_disk():
            return self.runtime_dir(sandbox_id) / "workspace"
        return self.root / sandbox_id / "workspace"

    def _spec(self, record: Record) -> SandboxSpec:
        run = self.runtime_dir(record.id)
        return SandboxSpec(
            id=record.id,
            profile=record.profile,
            workspace=self.workspace_dir(record.id),
            control_dir=run / "control",
            egress_dir=run / "egress" if record.profile.network else None,
            state_dir=run / "state",
        )

    async def _ensure(self, record: Record, live: _Live) -> None:
        agent = AgentClient(self.runtime_dir(record.id) / "control")
        if await self.backend.is_running(record.id):
            try:
                await agent.ping()
                return
            except SandboxStateError:
                logger.warning("sandbox %s: agent unresponsive; restarting the box", record.id)
        await self._stop_box(record.id)
        spec = self._spec(record)
        self.runtime_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.runtime_dir(record.id).mkdir(mode=0o711, exist_ok=True)
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        await mount_control(spec.control_dir)
        _own(spec.control_dir)
        with contextlib.suppress(FileNotFoundError):
            (spec.control_dir / "agent.sock").unlink()
        live.disk_limited = await mount_workspace(
            self.root / record.id / "disk.img", spec.workspace, size_mb=record.profile.limits.disk_mb
        )
        try:
            if spec.egress_dir is not None:
                await self._start_proxy(record, live, spec.egress_dir)
            await self.backend.start(spec)
            with anyio.move_on_after(_AGENT_WAIT) as scope:
                while True:
                    try:
                        await agent.ping()
                        break
                    except SandboxStateError:
                        await anyio.sleep(0.02)
            if scope.cancelled_caught:
                raise SandboxStateError(f"the agent of sandbox {record.id} did not answer within {_AGENT_WAIT:g}s")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop_box(record.id)
            raise

    async def stop(self, sandbox_id: str) -> None:
        """Stop a box (its processes end, its files stay)."""
        live = self._live.setdefault(sandbox_id, _Live())
        async with live.lock:
            await self._stop_box(sandbox_id)

    async def _stop_box(self, sandbox_id: str) -> None:
        with anyio.CancelScope(shield=True):
            await self.backend.stop(sandbox_id)
            live = self._live.get(sandbox_id)
            if live is not None and live.proxy_task is not None:
                live.proxy_task.cancel()
                live.proxy_task = None
                live.proxy = None
            for mounted in (self.workspace_dir(sandbox_id), self.runtime_dir(sandbox_id) / "control"):
                try:
                    await unmount_workspace(mounted)
                except SandboxError as error:
                    logger.warning("sandbox %s: %s", sandbox_id, error)
            run = self.runtime_dir(sandbox_id)
            mounts = (self.workspace_dir(sandbox_id), run / "control")
            if self.runtime_root != self.root and not any(os.path.ismount(m) for m in mounts):
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(run, ignore_errors=True))

    # -- egress ---------------------------------------------------------------------------------------

    async def _start_proxy(self, record: Record, live: _Live, egress_dir: Path) -> None:
        egress_dir.mkdir(parents=True, exist_ok=True)
        egress_dir.chmod(0o755)
        path = egress_dir / "egress.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        path.chmod(0o666)  # the box connects as uid 65534
        listener.listen(128)

        def on_event(event: EgressEvent) -> None:
            live.events.append(event)
            if event.allowed:
                egress_logger.info(
                    "sandbox %s (%s): %s %s:%d allowed%s",
                    event.sandbox_id, event.principal, event.method, event.host, event.port,
                    " with credential" if event.credential else "",
                )  # fmt: skip
            else:
                egress_logger.warning(
                    "sandbox %s (%s): %s %s:%d blocked: %s",
                    event.sandbox_id, event.principal, event.method, event.host, event.port, event.reason,
                )  # fmt: skip

        proxy = EgressProxy(
            sandbox_id=record.id,
            principal=record.owner,
            allow=record.profile.egress,
            credentials=self.settings.credentials,
            on_event=on_event,
        )
        portal = await self._egress_thread()
        live.proxy = proxy
        live.proxy_task = portal.start_task_soon(proxy.serve, listener)

    async def _egress_thread(self) -> BlockingPortal:
        if self._egress_portal is None:
            cm = start_blocking_portal()
            self._egress_portal = await anyio.to_thread.run_sync(cm.__enter__)
            self._egress_cm = cm
        return self._egress_portal

    # -- lifetime -------------------------------------------------------------------------------------

    async def reap(self, *, now: float | None = None) -> list[str]:
        """Stop idle boxes and destroy sandboxes idle past ``idle_timeout``; returns the destroyed ids."""
        now = time.time() if now is None else now
        destroyed: list[str] = []
        for record in list(self.records.values()):
            live = self._live.get(record.id)
            if live is not None and live.busy:
                continue
            idle = now - record.last_used_at
            if idle >= self.settings.idle_timeout:
                logger.info("sandbox %s of %s idle for %.0fs: destroying it", record.id, record.owner, idle)
                await self._destroy(record)
                destroyed.append(record.id)
            elif idle >= self.settings.idle_stop and await self.backend.is_running(record.id):
                if not await self._has_running_processes(record):
                    logger.info("sandbox %s idle for %.0fs: stopping its box", record.id, idle)
                    await self.stop(record.id)
        return destroyed

    async def _has_running_processes(self, record: Record) -> bool:
        try:
            with anyio.fail_after(5):
                processes = await AgentClient(self.runtime_dir(record.id) / "control").processes()
        except (SandboxError, TimeoutError):
            return False
        return any(p.running for p in processes)

    async def run_reaper(self) -> None:
        """Reap forever, a few times per ``idle_stop``."""
        interval = max(1.0, min(60.0, self.settings.idle_stop / 4))
        while True:
            await anyio.sleep(interval)
            try:
                await self.reap()
            except (SandboxError, OSError) as error:
                logger.warning("sandbox reaper: %s", error)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SandboxManager]:
        """Run the reaper while at least one user (an MCP session) is attached; stop boxes when the last leaves."""
        self._users += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.run_reaper)
                yield self
                tg.cancel_scope.cancel()
        finally:
            self._users -= 1
            if self._users == 0:
                with anyio.CancelScope(shield=True):
                    await self.aclose()

    async def aclose(self) -> None:
        """Stop every box and the egress thread (sandboxes and their files stay)."""
        for sandbox_id in list(self._live):
            await self.stop(sandbox_id)
        await self.backend.aclose()
        cm, self._egress_cm, self._egress_portal = self._egress_cm, None, None
        if cm is not None:
            await anyio.to_thread.run_sync(cm.__exit__, None, None, None)


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, SANDBOX_UID, SANDBOX_GID)
    path.chmod(0o755)
