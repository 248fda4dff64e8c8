"""The audit log: one record per decision and call that goes through the choke point (SECURITY.md G6).

Records are queued without blocking the request and written in batches by one background task, so
auditing costs a call microseconds, not a database round trip. ``flush()`` waits until everything
queued so far is on disk; shutdown flushes too.

Records are hash-chained (``portal/store/_chain.py``): the writer gives each record of a batch its
``prev_hash`` and ``hash`` inside the batch's transaction, after taking the chain's lock, so several portal
processes writing to one database still build one chain. ``verify`` finds the first broken record;
``query`` reads records for ``dockyard audit tail/search/export``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anyio
from sqlalchemy import Connection, Engine, Table, insert, select, text
from sqlmodel import SQLModel

from portal.principal import Principal
from portal.store import CHAINED_FIELDS, GENESIS, AuditRecord, ChainBreak, chain_hash, find_break, utcnow

__all__ = [
    "EXPORT_FIELDS",
    "AuditEvent",
    "AuditLog",
    "ChainBreak",
    "ChainReport",
    "arguments_digest",
    "export_line",
    "query",
    "verify",
]

# pg_advisory_xact_lock key serialising chain appends across portal processes (migrations use 8123001).
_CHAIN_LOCK = 8123002
_TABLE: Table = SQLModel.metadata.tables["audit_records"]

EXPORT_FIELDS = ("id", *CHAINED_FIELDS, "prev_hash", "hash")
"""The keys of each line of ``dockyard audit export``, in order; stable across versions."""

logger = logging.getLogger("dockyard.audit")

Status = Literal["ok", "error", "denied", "pending", "limited", "unavailable", "withheld", "unknown", "cancelled"]


def arguments_digest(arguments: Mapping[str, Any] | None) -> tuple[str | None, int]:
    """SHA-256 of the canonical JSON of call arguments, and its size in bytes.

    Only the digest is recorded, never the arguments themselves.
    """
    if arguments is None:
        return None, 0
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return hashlib.sha256(canonical).hexdigest(), len(canonical)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What the choke point knows about one request when it finishes."""

    principal: Principal
    method: str
    target: str
    decision: str
    status: Status
    server: str | None = None
    upstream_target: str | None = None
    arguments_digest: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


class AuditLog:
    """Batches audit records into the ``audit_records`` table."""

    def __init__(self, engine: Engine, *, batch_size: int = 500, linger: float = 0.05) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._linger = linger
        self._flush_now = anyio.Event()
        self._pending: list[dict[str, Any]] = []
        self._wakeup = anyio.Event()
        self._written = 0
        self._queued = 0
        self._progress = anyio.Condition()

    def record(self, event: AuditEvent) -> None:
        """Queue a record; never blocks and never raises."""
        error = event.error[:2000] if event.error else None
        self._pending.append(
            {
                "at": utcnow(),
                "principal": event.principal.label,
                "client": event.principal.client_id,
                "method": event.method,
                "target": event.target[:512],
                "server": event.server,
                "upstream_target": event.upstream_target[:512] if event.upstream_target else None,
                "arguments_digest": event.arguments_digest,
                "decision": event.decision,
                "status": event.status,
                "error": error,
                "latency_ms": round(event.latency_ms, 3),
                "bytes_in": event.bytes_in,
                "bytes_out": event.bytes_out,
            }
        )
        self._queued += 1
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every record queued before this call is in the database."""
        target = self._queued
        async with self._progress:
            while self._written < target:
                self._flush_now.set()
                self._wakeup.set()
                await self._progress.wait()

    async def run(self) -> None:
        """Write queued records until cancelled; on cancellation write what is left."""
        try:
            while True:
                await self._wakeup.wait()
                # Let a batch build up: one transaction per batch instead of one per call.
                with anyio.move_on_after(self._linger):
                    await self._flush_now.wait()
                self._wakeup = anyio.Event()
                self._flush_now = anyio.Event()
                await self._write_pending()
        finally:
            with anyio.CancelScope(shield=True):
                await self._write_pending()

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._batch_size], self._pending[self._batch_size :]
            try:
                await anyio.to_thread.run_sync(self._insert, batch)
            except Exception:  # the database is down: keep the records and retry on the next wake-up
                self._pending = batch + self._pending
                logger.exception("cannot write %d audit records; will retry", len(batch))
                await anyio.sleep(1.0)
                self._wakeup.set()
                return
            self._written += len(batch)
            async with self._progress:
                self._progress.notify_all()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self._engine.begin() as conn:
            prev = _lock_chain_head(conn)
            chained: list[dict[str, Any]] = []
            for row in rows:
                digest = chain_hash(row, prev)
                chained.append({**row, "prev_hash": prev, "hash": digest})
                prev = digest
            conn.execute(insert(AuditRecord), chained)


def _lock_chain_head(conn: Connection) -> str:
    """Take the chain's write lock for this transaction; returns the hash of the last record."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    else:
        # pysqlite defers BEGIN to the first write; take the write lock now, before reading the head, so
        # another process cannot append between the read and the insert.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    head = conn.execute(select(_TABLE.c.hash).order_by(_TABLE.c.id.desc()).limit(1)).scalar()
    return GENESIS if head is None else str(head)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify`` found: the first break (None when intact), the records checked and the chain's head."""

    broken: ChainBreak | None
    checked: int
    first_id: int | None
    head_id: int | None
    head_hash: str | None

    def render(self) -> str:
        """One line for ``dockyard audit verify``."""
        if self.broken is not None:
            return f"audit log broken at {self.broken.render()} ({self.checked} record(s) before it verify)"
        if self.checked == 0:
            return "audit log intact: no records"
        return f"audit log intact: {self.checked} record(s), ids {self.first_id}..{self.head_id}, head {self.head_hash}"


def verify(engine: Engine, *, chunk: int = 5000) -> ChainReport:
    """Check the whole chain in id order, reading ``chunk`` records at a time."""
    with engine.connect() as conn:
        first = conn.execute(select(_TABLE.c.id).order_by(_TABLE.c.id).limit(1)).scalar()
        broken, checked, last = find_break(_stream(conn, chunk=chunk))
        if broken is not None and broken.after is not None:
            broken = _explain_lost_link(conn, broken, broken.after)
    return ChainReport(
        broken=broken,
        checked=checked,
        first_id=None if first is None else int(first),
        head_id=None if last is None else int(last["id"]),
        head_hash=None if last is None else str(last["hash"]),
    )


def _stream(conn: Connection, *, chunk: int) -> Iterator[Mapping[Any, Any]]:
    after = None
    while True:
        statement = select(_TABLE).order_by(_TABLE.c.id).limit(chunk)
        if after is not None:
            statement = statement.where(_TABLE.c.id > after)
        rows = conn.execute(statement).mappings().all()
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1]["id"]


def _explain_lost_link(conn: Connection, broken: ChainBreak, after: int) -> ChainBreak:
    """Say whether the record ``broken`` should follow sits elsewhere (reordered) or is gone.

    Only runs once the chain is known to be broken, so a full scan for the hash (unindexed, to keep the
    write path cheap) is fine.
    """
    prev = conn.execute(select(_TABLE.c.prev_hash).where(_TABLE.c.id == broken.id)).scalar()
    found = conn.execute(select(_TABLE.c.id).where(_TABLE.c.hash == prev).limit(1)).scalar()
    if found is None:
        reason = (
            f"does not follow record {after}: records between them were deleted, "
            f"or record {after} was edited and its hash recomputed"
        )
        return ChainBreak(broken.id, reason, after)
    reason = f"is out of order: it follows record {found} in the chain, so records were reordered"
    return ChainBreak(broken.id, reason, after)


def _glob_to_like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def query(
    engine: Engine,
    *,
    principal: str | None = None,
    tool: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int | None = None,
    newest: bool = False,
) -> list[AuditRecord]:
    """Records matching every filter given, oldest first.

    Args:
        engine: The portal's database.
        principal: Exact principal: ``local``, ``user:NAME`` or ``service:NAME``.
        tool: Glob (``*``, ``?``) over the target name, e.g. ``github__*``.
        status: Exact result status (``ok``, ``error``, ``denied``, ...).
        since: Records at or after this time.
        until: Records before this time.
        after_id: Records with a greater id (for ``tail --follow``).
        limit: At most this many records.
        newest: With ``limit``, keep the newest matches rather than the oldest.
    """
    statement = select(_TABLE)
    if principal is not None:
        statement = statement.where(_TABLE.c.principal == principal)
    if tool is not None:
        statement = statement.where(_TABLE.c.target.like(_glob_to_like(tool), escape="\\"))
    if status is not None:
        statement = statement.where(_TABLE.c.status == status)
    if since is not None:
        statement = statement.where(_TABLE.c.at >= since)
    if until is not None:
        statement = statement.where(_TABLE.c.at < until)
    if after_id is not None:
        statement = statement.where(_TABLE.c.id > after_id)
    statement = statement.order_by(_TABLE.c.id.desc() if newest else _TABLE.c.id)
    if limit is not None:
        statement = statement.limit(limit)
    with engine.connect() as conn:
        records = [AuditRecord.model_validate(row) for row in conn.execute(statement).mappings().all()]
    if tool is not None:  # LIKE is case-insensitive on SQLite; the glob is not
        records = [r for r in records if fnmatch.fnmatchcase(r.target, tool)]
    return records[::-1] if newest else records


def export_line(record: AuditRecord) -> str:
    """One JSONL line for ``record``: the ``EXPORT_FIELDS``, times in ISO 8601 UTC."""
    data = record.model_dump(mode="json")
    return json.dumps({name: data.get(name) for name in EXPORT_FIELDS}, ensure_ascii=False, separators=(",", ":"))
