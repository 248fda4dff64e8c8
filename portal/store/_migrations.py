"""Schema migrations, applied in order on SQLite and PostgreSQL alike.

A migration is a function of a connection; its number is its position. Add new ones at the end and
never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Table, bindparam, insert, inspect, text, update
from sqlmodel import SQLModel, select

from portal.errors import StorageError
from portal.store import _auth_tables as auth
from portal.store._chain import GENESIS, chain_hash
from portal.store._models import (
    ApprovalRecord,
    AuditRecord,
    PausedRun,
    RateCounter,
    SchemaVersion,
    ToolPin,
    UpstreamStatus,
)
from portal.store._vault_tables import VaultSecret

__all__ = ["MIGRATIONS", "migrate"]


def _v1_initial(conn: Connection) -> None:
    tables = [t.__table__ for t in (ToolPin, UpstreamStatus, AuditRecord)]  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownVariableType]
    SQLModel.metadata.create_all(conn, tables=tables)  # pyright: ignore[reportUnknownArgumentType]


def _v2_audit_chain(conn: Connection) -> None:
    """Add ``prev_hash`` and ``hash`` to the audit records and chain the records already there, in id order."""
    # v1 creates tables from the current models, so a new database already has the columns.
    present = {column["name"] for column in inspect(conn).get_columns("audit_records")}
    for name in ("prev_hash", "hash"):
        if name not in present:
            conn.execute(text(f"ALTER TABLE audit_records ADD COLUMN {name} VARCHAR(64)"))
    table: Table = SQLModel.metadata.tables["audit_records"]
    chained = (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values(prev_hash=bindparam("row_prev"), hash=bindparam("row_hash"))
    )
    prev, last = GENESIS, None
    while True:  # in chunks, so a large log is never all in memory
        page = table.select().order_by(table.c.id).limit(5000)
        rows = conn.execute(page if last is None else page.where(table.c.id > last)).mappings().all()
        if not rows:
            return
        batch: list[dict[str, object]] = []
        for row in rows:
            digest = chain_hash(row, prev)
            batch.append({"row_id": row["id"], "row_prev": prev, "row_hash": digest})
            prev = digest
        conn.execute(chained, batch)
        last = rows[-1]["id"]


def _v3_rate_counters(conn: Connection) -> None:
    """The ``rate_counters`` table (``portal/limits.py``), and room for ``redact:email=2,jwt=1`` in decisions.

    SQLite does not enforce a VARCHAR's length, so only PostgreSQL needs the wider column.
    """
    SQLModel.metadata.create_all(conn, tables=[RateCounter.__table__])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit_records ALTER COLUMN decision TYPE VARCHAR(128)"))


def _v4_approvals(conn: Connection) -> None:
    """The ``approvals`` table: calls held for an admin's decision (``portal/approvals.py``)."""
    SQLModel.metadata.create_all(conn, tables=[ApprovalRecord.__table__])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]


def _v5_oauth(conn: Connection) -> None:
    """The authorization server's tables (``portal/auth/``): users, clients, codes, grants, tokens, consents, keys."""
    models = (
        auth.UserRecord,
        auth.ClientRecord,
        auth.AuthCode,
        auth.GrantRecord,
        auth.RefreshTokenRecord,
        auth.AccessTokenRecord,
        auth.ConsentRecord,
        auth.SigningKey,
    )
    SQLModel.metadata.create_all(conn, tables=[m.__table__ for m in models])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]


def _v6_vault(conn: Connection) -> None:
    """The ``vault_secrets`` table: encrypted upstream credentials and OAuth grants (``portal/auth/_vault.py``)."""
    SQLModel.metadata.create_all(conn, tables=[VaultSecret.__table__])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]


def _v7_paused_runs(conn: Connection) -> None:
    """The ``paused_runs`` table: Code Mode scripts waiting for an approval (``codemode/_runs.py``)."""
    SQLModel.metadata.create_all(conn, tables=[PausedRun.__table__])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial,
    _v2_audit_chain,
    _v3_rate_counters,
    _v4_approvals,
    _v5_oauth,
    _v6_vault,
    _v7_paused_runs,
]


def migrate(conn: Connection) -> int:
    """Bring the schema up to date inside the caller's transaction; returns the resulting version.

    Raises:
        StorageError: The database has a newer schema than this version of Dockyard understands.
    """
    SQLModel.metadata.create_all(conn, tables=[SchemaVersion.__table__])  # pyright: ignore[reportAttributeAccessIssue,reportUnknownArgumentType,reportUnknownMemberType]
    applied = {row.version for row in conn.execute(select(SchemaVersion)).all()}
    current = max(applied, default=0)
    if current > len(MIGRATIONS):
        raise StorageError(
            f"database schema version {current} is newer than this Dockyard ({len(MIGRATIONS)}); upgrade Dockyard"
        )
    for version, step in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        step(conn)
        conn.execute(insert(SchemaVersion).values(version=version))
    assert inspect(conn).has_table("dockyard_schema")
    return len(MIGRATIONS)
