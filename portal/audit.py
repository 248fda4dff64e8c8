"""The audit log: one record per decision and call that goes through the choke point (SECURITY.md G6).

Records are queued without blocking the request and written in batches by one background task, so
auditing costs a call microseconds, not a database round trip. ``flush()`` waits until everything
queued so far is on disk; shutdown flushes too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from sqlalchemy import Engine, insert

from portal.principal import Principal
from portal.store import AuditRecord, utcnow

__all__ = ["AuditEvent", "AuditLog", "arguments_digest"]

logger = logging.getLogger("dockyard.audit")

Status = Literal["ok", "error", "denied", "unavailable", "withheld", "unknown", "cancelled"]


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
                "principal": event.principal.subject,
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
            conn.execute(insert(AuditRecord), rows)
