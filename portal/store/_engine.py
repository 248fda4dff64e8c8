"""The database engine: SQLite (WAL) by default, PostgreSQL by URL, with migrations on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlmodel import create_engine

from portal.errors import StorageError
from portal.store._migrations import migrate

__all__ = ["open_engine"]


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> Engine:
    """Open the database at ``url`` and migrate it to the current schema.

    ``postgresql://`` URLs use psycopg 3. SQLite files are created (with their directory) on first use.

    Raises:
        StorageError: The URL is invalid, the server is unreachable, or migration failed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StorageError(f"invalid database URL {url!r}: {error}") from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["pool_pre_ping"] = True
    else:
        raise StorageError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://")
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as error:
        raise StorageError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {error}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as conn:
            if parsed.get_backend_name() == "postgresql":
                # Two portals starting together must not both run the same migration.
                conn.execute(text("SELECT pg_advisory_xact_lock(8123001)"))
            migrate(conn)
    except OperationalError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StorageError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {reason}") from None
    except SQLAlchemyError as error:
        engine.dispose()
        raise StorageError(f"cannot migrate database: {error}") from None
    return engine
