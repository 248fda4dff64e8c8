"""The tables. Every schema change also gets a migration in ``_migrations.py``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, Text
from sqlmodel import Field, SQLModel

__all__ = [
    "ApprovalRecord",
    "AuditRecord",
    "PausedRun",
    "RateCounter",
    "SchemaVersion",
    "ToolPin",
    "UpstreamStatus",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


class SchemaVersion(SQLModel, table=True):
    """One row per applied migration."""

    __tablename__ = "dockyard_schema"  # pyright: ignore[reportAssignmentType]

    version: int = Field(primary_key=True)
    applied_at: datetime = Field(default_factory=utcnow)


class ToolPin(SQLModel, table=True):
    """The approved definition of one upstream tool (SECURITY.md G3) and any changed one awaiting approval."""

    __tablename__ = "tool_pins"  # pyright: ignore[reportAssignmentType]

    server: str = Field(primary_key=True, max_length=64)
    tool: str = Field(primary_key=True, max_length=256)
    digest: str = Field(max_length=64)
    definition: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    pinned_at: datetime = Field(default_factory=utcnow)
    pending_digest: str | None = Field(default=None, max_length=64)
    pending_definition: dict[str, object] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    pending_since: datetime | None = None


class UpstreamStatus(SQLModel, table=True):
    """The last known state of each upstream, written by the portal and read by ``dockyard servers``."""

    __tablename__ = "upstream_status"  # pyright: ignore[reportAssignmentType]

    server: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    state: str = Field(max_length=16)
    protocol_version: str | None = Field(default=None, max_length=32)
    tools: int = 0
    withheld: int = 0
    resources: int = 0
    prompts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_error_at: datetime | None = None
    connected_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class AuditRecord(SQLModel, table=True):
    """One decision or call that went through the choke point.

    ``prev_hash`` and ``hash`` chain the records in ``id`` order (see ``_chain.py``); they are nullable
    only so that a row written outside the audit log can exist, and ``dockyard audit verify`` reports it.
    """

    __tablename__ = "audit_records"  # pyright: ignore[reportAssignmentType]

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    principal: str = Field(max_length=256, index=True)
    client: str | None = Field(default=None, max_length=256)
    method: str = Field(max_length=64)
    target: str = Field(max_length=512, index=True)
    server: str | None = Field(default=None, max_length=64)
    upstream_target: str | None = Field(default=None, max_length=512)
    arguments_digest: str | None = Field(default=None, max_length=64)
    decision: str = Field(max_length=128)
    status: str = Field(max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    latency_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)


class ApprovalRecord(SQLModel, table=True):
    """A call held until an admin approves or denies it (``portal/approvals.py``).

    ``digest`` binds the approval to the exact principal, method, target, arguments and policy version;
    ``status`` is ``pending``, ``approved``, ``denied`` or ``consumed`` (an approved call that has run);
    past ``expires_at`` a pending or approved record counts as expired.
    """

    __tablename__ = "approvals"  # pyright: ignore[reportAssignmentType]

    id: str = Field(primary_key=True, max_length=32)
    digest: str = Field(max_length=64, index=True)
    principal: str = Field(max_length=256, index=True)
    method: str = Field(max_length=64)
    target: str = Field(max_length=512)
    server: str = Field(max_length=64)
    arguments: dict[str, object] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    policy_version: str = Field(max_length=64)
    rule: str = Field(max_length=256)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    decided_by: str | None = Field(default=None, max_length=256)
    decided_at: datetime | None = None
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    consumed_at: datetime | None = None


class RateCounter(SQLModel, table=True):
    """Calls counted in one fixed window of one rate limit or quota (``portal/limits.py``).

    ``bucket`` is a digest of the limit's name, its window and the values it counts per (principal, tool,
    server); ``expires_at`` (Unix seconds) is the end of the window, after which the row is deleted.
    """

    __tablename__ = "rate_counters"  # pyright: ignore[reportAssignmentType]

    bucket: str = Field(primary_key=True, max_length=64)
    window_start: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    rule: str = Field(max_length=256)
    count: int = 0
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class PausedRun(SQLModel, table=True):
    """A Code Mode script paused at a call that waits for approval (``codemode/_runs.py``).

    ``snapshot`` is the interpreter's state at the pause, ``state`` what the executor needs besides it
    (calls made, output so far, the calls in flight); ``status`` is ``paused``, ``resuming`` (claimed by one
    ``execute``) or ``done``.
    """

    __tablename__ = "paused_runs"  # pyright: ignore[reportAssignmentType]

    id: str = Field(primary_key=True, max_length=32)
    principal: str = Field(max_length=256, index=True)
    approval_id: str = Field(max_length=32, index=True)
    snapshot: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
