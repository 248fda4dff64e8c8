"""Schema migrations, applied in order on SQLite and PostgreSQL alike.

A migration is a function of a connection; its number is its position. Add new ones at the end and
never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, insert, inspect
from sqlmodel import SQLModel, select

from portal.errors import StorageError
from portal.store._models import AuditRecord, SchemaVersion, ToolPin, UpstreamStatus

__all__ = ["MIGRATIONS", "migrate"]


def _v1_initial(conn: Connection) -> None:
    tables = [t.__table__ for t in (ToolPin, UpstreamStatus, AuditRecord)]  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownVariableType]
    SQLModel.metadata.create_all(conn, tables=tables)  # pyright: ignore[reportUnknownArgumentType]


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_initial]


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
