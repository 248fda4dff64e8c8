"""Approvals: calls a policy holds until an admin approves or denies them (human in the loop).

A ``require_approval`` decision makes the choke point *hold* the call: :meth:`ApprovalStore.hold` files a
``pending`` approval bound to a digest of the principal, the method, the target, the exact arguments and
the policy version, with an expiry. The caller gets a pending answer naming the approval; an admin approves
or denies it (``dockyard approvals``, or ``/admin/approvals``); the caller's next identical call finds the
approved record and :meth:`ApprovalStore.consume` marks it ``consumed`` in the same statement that checks it,
so an approved call runs exactly once, whichever portal process the retry reaches. Everything lives in the
database, so approvals survive restarts.

A changed policy changes the digest: approvals granted under an older policy no longer match, and the call
is held again under the new one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from portal.errors import ApprovalError
from portal.principal import Principal
from portal.store import ApprovalRecord, utcnow

__all__ = ["APPROVAL_META", "Approval", "ApprovalStatus", "ApprovalStore", "approval_digest"]

ApprovalStatus = Literal["pending", "approved", "denied", "consumed", "expired"]

APPROVAL_META = "io.dockyard/approval"
"""``_meta`` key of a held call's answer: ``{"id", "status", "expires_at"}`` (Code Mode pauses on it)."""

_OPEN = ("pending", "approved", "denied")


def approval_digest(
    principal: Principal, method: str, target: str, arguments: Mapping[str, Any] | None, policy_version: str
) -> str:
    """SHA-256 binding an approval to who calls what, with which arguments, under which policy."""
    bound = [principal.label, method, target, arguments, policy_version]
    canonical = json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Approval:
    """One held call, as callers and admins see it."""

    id: str
    status: ApprovalStatus
    principal: str
    method: str
    target: str
    server: str
    arguments: Mapping[str, Any] | None
    rule: str
    reason: str
    policy_version: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    consumed_at: datetime | None = None

    @classmethod
    def of(cls, record: ApprovalRecord, *, now: datetime | None = None) -> Approval:
        """The approval a row holds; pending or approved past its expiry reads as ``expired``."""
        values = {f.name: getattr(record, f.name) for f in fields(cls)}
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = _aware(value)
        if values["status"] in ("pending", "approved") and values["expires_at"] <= (now or utcnow()):
            values["status"] = "expired"
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (times in ISO 8601)."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


class ApprovalStore:
    """Approvals in the database; the ``async`` methods run their statements off the event loop.

    Args:
        engine: The portal's database.
        ttl: How long a held call waits for a decision, and how long an approval stays usable, in seconds.
    """

    def __init__(self, engine: Engine, *, ttl: float = 24 * 3600) -> None:
        self._engine = engine
        self.ttl = ttl

    # ----------------------------------------------------------------- the choke point's side

    async def hold(
        self,
        principal: Principal,
        *,
        method: str,
        target: str,
        server: str,
        arguments: Mapping[str, Any] | None,
        rule: str,
        reason: str,
        policy_version: str,
    ) -> Approval:
        """The live approval for exactly this call, filing a new pending one when there is none.

        Live: pending, approved and not yet used, or denied — until it expires. A denied call stays denied
        until then, so retrying cannot flood the admins.
        """
        digest = approval_digest(principal, method, target, arguments, policy_version)

        def run() -> Approval:
            now = utcnow()
            with Session(self._engine) as session:
                live = session.exec(
                    select(ApprovalRecord)
                    .where(ApprovalRecord.digest == digest, col(ApprovalRecord.status).in_(_OPEN))
                    .where(ApprovalRecord.expires_at > now)
                    .order_by(col(ApprovalRecord.created_at).desc())
                ).first()
                if live is not None:
                    return Approval.of(live, now=now)
                record = ApprovalRecord(
                    id=f"apr_{secrets.token_hex(8)}",
                    digest=digest,
                    principal=principal.label,
                    method=method,
                    target=target,
                    server=server,
                    arguments=dict(arguments) if arguments is not None else None,
                    policy_version=policy_version,
                    rule=rule,
                    reason=reason,
                    status="pending",
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.ttl),
                )
                session.add(record)
                session.commit()
                session.refresh(record)
                return Approval.of(record, now=now)

        return await anyio.to_thread.run_sync(run)

    async def consume(self, approval_id: str) -> bool:
        """Use an approved, unexpired approval; True for exactly one caller however many race for it."""

        def run() -> bool:
            now = utcnow()
            statement = (
                update(ApprovalRecord)
                .where(col(ApprovalRecord.id) == approval_id, col(ApprovalRecord.status) == "approved")
                .where(col(ApprovalRecord.expires_at) > now)
                .values(status="consumed", consumed_at=now)
            )
            with self._engine.begin() as conn:
                return conn.execute(statement).rowcount == 1

        return await anyio.to_thread.run_sync(run)

    # ----------------------------------------------------------------- the admin's side (sync: CLI and threads)

    def get(self, approval_id: str) -> Approval:
        """One approval.

        Raises:
            ApprovalError: No approval has that id.
        """
        with Session(self._engine) as session:
            record = session.get(ApprovalRecord, approval_id)
        if record is None:
            raise ApprovalError(f"no approval {approval_id!r} (see 'dockyard approvals list --all')")
        return Approval.of(record)

    def list(self, *, status: ApprovalStatus | None = "pending", limit: int = 100) -> Sequence[Approval]:
        """Approvals newest first; ``status=None`` lists every status."""
        now = utcnow()
        statement = select(ApprovalRecord).order_by(col(ApprovalRecord.created_at).desc())
        if status in ("pending", "approved"):
            statement = statement.where(ApprovalRecord.status == status, ApprovalRecord.expires_at > now)
        elif status == "expired":
            statement = statement.where(
                col(ApprovalRecord.status).in_(("pending", "approved")), ApprovalRecord.expires_at <= now
            )
        elif status is not None:
            statement = statement.where(ApprovalRecord.status == status)
        with Session(self._engine) as session:
            return [Approval.of(r, now=now) for r in session.exec(statement.limit(limit)).all()]

    def decide(self, approval_id: str, *, approve: bool, by: str, note: str | None = None) -> Approval:
        """Approve or deny a pending approval.

        Raises:
            ApprovalError: No such approval, or it is no longer pending (decided, used or expired).
        """
        now = utcnow()
        statement = (
            update(ApprovalRecord)
            .where(col(ApprovalRecord.id) == approval_id, col(ApprovalRecord.status) == "pending")
            .where(col(ApprovalRecord.expires_at) > now)
            .values(status="approved" if approve else "denied", decided_by=by, decided_at=now, note=note)
        )
        with self._engine.begin() as conn:
            changed = conn.execute(statement).rowcount == 1
        approval = self.get(approval_id)
        if not changed:
            by_whom = f" by {approval.decided_by}" if approval.decided_by else ""
            raise ApprovalError(f"approval {approval_id!r} is {approval.status}{by_whom}, not pending")
        return approval
