"""Paused runs: Code Mode scripts waiting for an approval, kept in the portal's database.

When an SDK call needs approval, the executor stops the script at that call and hands back the
interpreter's snapshot with what it knows besides (the calls made, the output so far, the calls in
flight). :class:`RunStore` keeps them, bound to the principal and the approval, until the approval
expires. ``execute(resume=RUN_ID)`` claims a run (one claim wins, so a run never resumes twice), and the
script continues at the call it stopped at — after a restart too, since everything is in the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from portal.principal import Principal
from portal.store import PausedRun, utcnow

__all__ = ["ClaimedRun", "RunError", "RunStore"]


class RunError(Exception):
    """A paused run that cannot be resumed: unknown, someone else's, already resumed, or expired."""


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A paused run this caller now owns: the snapshot to load and the executor's state."""

    id: str
    approval_id: str
    snapshot: bytes
    state: dict[str, Any]


class RunStore:
    """Paused runs in the portal's database; every method runs its statements off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def pause(
        self, principal: Principal, *, approval_id: str, snapshot: bytes, state: dict[str, Any], expires_at: datetime
    ) -> str:
        """Keep a paused run; returns its id."""
        run_id = f"run_{secrets.token_hex(8)}"
        record = PausedRun(
            id=run_id,
            principal=principal.label,
            approval_id=approval_id,
            snapshot=snapshot,
            state=state,
            status="paused",
            expires_at=expires_at,
        )

        def run() -> None:
            with Session(self._engine) as session:
                session.add(record)
                session.commit()

        await anyio.to_thread.run_sync(run)
        return run_id

    async def approval_of(self, principal: Principal, run_id: str) -> str:
        """The approval a paused run of ``principal`` waits for.

        Raises:
            RunError: No paused run of that id belongs to ``principal``, or it was already resumed.
        """
        record = await anyio.to_thread.run_sync(self._get, run_id)
        if record is None or record.principal != principal.label:
            raise RunError(f"no paused run {run_id!r} of yours (runs can be resumed by whoever started them only)")
        if record.status != "paused":
            raise RunError(f"run {run_id!r} was already resumed; a paused run resumes once")
        return record.approval_id

    async def claim(self, principal: Principal, run_id: str) -> ClaimedRun:
        """Take a paused run to resume it; exactly one caller succeeds.

        Raises:
            RunError: No such paused run of ``principal``, already claimed, or expired.
        """

        def run() -> ClaimedRun:
            now = utcnow()
            claimed = (
                update(PausedRun)
                .where(col(PausedRun.id) == run_id, col(PausedRun.principal) == principal.label)
                .where(col(PausedRun.status) == "paused", col(PausedRun.expires_at) > now)
                .values(status="resuming")
            )
            with self._engine.begin() as conn:
                won = conn.execute(claimed).rowcount == 1
            record = self._get(run_id)
            if not won or record is None:
                if record is not None and record.principal == principal.label and record.status == "paused":
                    raise RunError(f"run {run_id!r} expired with its approval; run the script again")
                raise RunError(f"no paused run {run_id!r} of yours that is still waiting (it resumes once)")
            return ClaimedRun(record.id, record.approval_id, record.snapshot, dict(record.state))

        return await anyio.to_thread.run_sync(run)

    async def finish(self, run_id: str) -> None:
        """Mark a claimed run done (it finished, failed, or paused again under a new id)."""

        def run() -> None:
            with self._engine.begin() as conn:
                conn.execute(update(PausedRun).where(col(PausedRun.id) == run_id).values(status="done"))

        await anyio.to_thread.run_sync(run)

    def _get(self, run_id: str) -> PausedRun | None:
        with Session(self._engine) as session:
            return session.get(PausedRun, run_id)
