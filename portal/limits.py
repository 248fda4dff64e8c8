"""Rate limits and quotas: fixed-window counters in the database, exact across portal processes.

A policy's ``limits:`` entries reach the choke point as :class:`~portal.policy_seam.Limit` on a call's
decision; :meth:`Limiter.admit` counts the call against each of them, or refuses it saying which limit and
when to retry. Windows are fixed and aligned to the Unix epoch (a ``/day`` window runs from 00:00 UTC).

Each count is one statement, ``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < LIMIT
RETURNING count``: the database increments only while the window has room and says whether it did, so two
portal processes sharing a database can never both take the last call of a window (no read-then-write). A
call under several limits takes them in one transaction, in a fixed order (no deadlocks), and takes none if
any refuses. On SQLite the transaction holds the write lock from its start (``BEGIN IMMEDIATE``).

Database work runs in a worker thread, never on the event loop; rows of windows that are over are deleted
now and then. When the database cannot be reached the call is refused: a limit that cannot be checked does
not hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Connection, Engine, Insert, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from portal.policy_seam import Limit
from portal.principal import Principal
from portal.store import RateCounter

__all__ = ["Limiter", "Refusal"]

logger = logging.getLogger("dockyard.limits")

_TABLE: Table = RateCounter.__table__  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownVariableType]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call was not admitted: the limit it would exceed, and in how many seconds it may be retried.

    ``retry_after`` is None when the limit could not be checked (the database is unavailable).
    """

    limit: Limit
    retry_after: float | None

    @property
    def message(self) -> str:
        """What the caller is told (and the audit log records)."""
        limit = self.limit
        if self.retry_after is None:
            return f"rate limit {limit.rule!r} cannot be checked (the portal's database is unavailable); retry later"
        wait = math.ceil(self.retry_after)
        return f"rate limit {limit.rule!r} reached: at most {limit.describe()}; retry in {wait}s"


@dataclass(frozen=True, slots=True)
class _Count:
    limit: Limit
    bucket: str
    window_start: int
    window_end: float


class Limiter:
    """Counts calls against the policy's limits in the ``rate_counters`` table.

    Args:
        engine: The portal's database (SQLite or PostgreSQL).
        clock: Unix time in seconds; tests may pass their own.
        cleanup_every: Delete the rows of windows that are over at most this often (seconds).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time, cleanup_every: float = 60.0) -> None:
        self._engine = engine
        self._clock = clock
        self._cleanup_every = cleanup_every
        self._cleaned = clock()
        self._postgres = engine.dialect.name == "postgresql"

    async def admit(self, principal: Principal, *, target: str, server: str, limits: Sequence[Limit]) -> Refusal | None:
        """Count one call of ``principal`` to ``target`` against every limit; None if it fits in all of them.

        Runs the database work in a worker thread. A refused call counts against none of the limits.
        """
        if not limits:
            return None
        return await anyio.to_thread.run_sync(self.admit_sync, principal, target, server, limits)

    def admit_sync(self, principal: Principal, target: str, server: str, limits: Sequence[Limit]) -> Refusal | None:
        """:meth:`admit`, blocking: for worker threads and tests."""
        now = self._clock()
        counts = sorted(
            (self._count(limit, principal, target, server, now) for limit in limits),
            key=lambda c: (c.bucket, c.window_start),
        )
        try:
            refusal = self._take(counts, now)
            if now - self._cleaned >= self._cleanup_every:
                self._cleaned = now
                self._cleanup(now)
        except SQLAlchemyError:
            logger.exception("cannot check rate limits %s", ", ".join(repr(c.limit.rule) for c in counts))
            return Refusal(counts[0].limit, None)
        return refusal

    def _count(self, limit: Limit, principal: Principal, target: str, server: str, now: float) -> _Count:
        values = {"principal": principal.label, "tool": target, "server": server}
        key = json.dumps([limit.rule, limit.window, [(d, values[d]) for d in limit.per]], separators=(",", ":"))
        start = math.floor(now / limit.window) * limit.window
        return _Count(limit, hashlib.sha256(key.encode()).hexdigest(), int(start), start + limit.window)

    def _take(self, counts: Sequence[_Count], now: float) -> Refusal | None:
        with self._engine.connect() as conn:
            transaction = conn.begin()
            try:
                if not self._postgres:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite defers BEGIN; take the write lock now
                for count in counts:
                    if conn.execute(self._increment(count)).first() is None:
                        transaction.rollback()
                        return Refusal(count.limit, max(0.0, count.window_end - now))
                transaction.commit()
            finally:
                if transaction.is_active:
                    transaction.rollback()
        return None

    def _increment(self, count: _Count) -> Insert:
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        statement = dialect_insert(_TABLE).values(
            bucket=count.bucket,
            window_start=count.window_start,
            rule=count.limit.rule[:256],
            count=1,
            expires_at=math.ceil(count.window_end),
        )
        return statement.on_conflict_do_update(
            index_elements=[_TABLE.c.bucket, _TABLE.c.window_start],
            set_={"count": _TABLE.c.count + 1},
            where=_TABLE.c.count < count.limit.count,
        ).returning(_TABLE.c.count)

    def _cleanup(self, now: float) -> None:
        with self._engine.begin() as conn:
            _delete_expired(conn, now)

    def used(self, principal: Principal, *, target: str, server: str, limit: Limit) -> int:
        """How many calls the current window of ``limit`` has counted for this call's bucket (for tests and admins)."""
        count = self._count(limit, principal, target, server, self._clock())
        with self._engine.connect() as conn:
            found = conn.execute(
                _TABLE.select()
                .with_only_columns(_TABLE.c.count)
                .where(_TABLE.c.bucket == count.bucket, _TABLE.c.window_start == count.window_start)
            ).scalar()
        return 0 if found is None else int(found)


def _delete_expired(conn: Connection, now: float) -> None:
    conn.execute(delete(_TABLE).where(_TABLE.c.expires_at <= math.floor(now)))
