"""The database engine: SQLite (WAL) by default, PostgreSQL by URL, with migrations on open."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlmodel import create_engine

from portal.errors import StorageError
from portal.store._migrations import migrate

__all__ = ["open_engine"]

# Everything before the last '@' of a URL, after its scheme, may be a password (SECURITY.md U3).
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*(?::/*|/+))?.*@", re.DOTALL)
_EXPECTED = "expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE"


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _redacted(url: str) -> str:
    """A URL that did not parse, with anything that could be a user name or password replaced by ``***``.

    The query goes too: ``?password=...`` is a valid way to pass one.
    """
    head, query, _ = url.partition("?")
    return _CREDENTIALS.sub(lambda m: f"{m.group(1) or ''}***@", head) + ("?***" if query else "")


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise StorageError(f"invalid database URL {_redacted(url)!r}: {_EXPECTED}") from None
    except ValueError:  # make_url's int() of a port that is not a number
        raise StorageError(f"invalid database URL {_redacted(url)!r}: the port must be a number") from None


def _reason(error: SQLAlchemyError) -> str:
    """What went wrong, without the SQL, its parameters or SQLAlchemy's help link."""
    orig = getattr(error, "orig", None)
    message = str(orig) if orig is not None else str(error.args[0]) if error.args else type(error).__name__
    lines = message.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def open_engine(url: str) -> Engine:
    """Open the database at ``url`` and migrate it to the current schema.

    ``postgresql://`` URLs use psycopg 3. SQLite files are created (with their directory) on first use.
    No message ever holds the URL's password (SECURITY.md U3).

    Raises:
        StorageError: The URL is invalid, the server is unreachable, or migration failed.
    """
    parsed = _parse(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(
                    f"cannot open database {parsed.render_as_string(hide_password=True)}: cannot create its "
                    f"folder {str(folder)!r}: {error.strerror or error}"
                ) from None
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["pool_pre_ping"] = True
    else:
        raise StorageError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://")
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as error:
        raise StorageError(f"cannot open database {shown}: {error}") from None
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
        raise StorageError(f"cannot open database {shown}: {_reason(error)}") from None
    except SQLAlchemyError as error:
        engine.dispose()
        raise StorageError(f"cannot migrate database {shown}: {_reason(error)}") from None
    except StorageError:
        engine.dispose()
        raise
    return engine
