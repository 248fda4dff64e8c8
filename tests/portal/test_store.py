"""``portal.store``: one schema on SQLite (WAL) and PostgreSQL, versioned migrations, clear errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, select

from portal.errors import StorageError
from portal.store import MIGRATIONS, AuditRecord, SchemaVersion, ToolPin, UpstreamStatus, migrate, open_engine

# The tables of the models portal.store exports: SchemaVersion, ToolPin, UpstreamStatus, AuditRecord.
TABLES = ["dockyard_schema", "tool_pins", "upstream_status", "audit_records"]


def storage_error(url: str) -> StorageError:
    """The StorageError that opening ``url`` raises."""
    with pytest.raises(StorageError) as excinfo:
        open_engine(url)
    return excinfo.value


def schema_versions(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return sorted(row.version for row in session.exec(select(SchemaVersion)).all())


def test_migrations_create_every_table_of_the_models_with_every_column(engine: Engine) -> None:
    inspector = inspect(engine)
    assert set(TABLES) <= set(inspector.get_table_names())
    for name in TABLES:
        model_columns = {column.name for column in SQLModel.metadata.tables[name].columns}
        assert {column["name"] for column in inspector.get_columns(name)} == model_columns, name


def test_a_new_database_is_at_the_latest_schema_version(engine: Engine) -> None:
    assert schema_versions(engine) == list(range(1, len(MIGRATIONS) + 1))


def test_migrating_twice_is_a_no_op_that_keeps_the_data(database_url: str) -> None:
    first = open_engine(database_url)
    try:
        with Session(first) as session:
            session.add(ToolPin(server="s", tool="t", digest="d" * 64, definition={"name": "t"}))
            session.commit()
    finally:
        first.dispose()
    second = open_engine(database_url)
    try:
        with second.begin() as conn:
            assert migrate(conn) == len(MIGRATIONS)
        assert schema_versions(second) == list(range(1, len(MIGRATIONS) + 1))
        with Session(second) as session:
            assert [(p.server, p.tool) for p in session.exec(select(ToolPin)).all()] == [("s", "t")]
    finally:
        second.dispose()


def test_a_database_with_a_newer_schema_version_is_refused(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        with Session(engine) as session:
            session.add(SchemaVersion(version=len(MIGRATIONS) + 1))
            session.commit()
    finally:
        engine.dispose()
    error = storage_error(database_url)
    assert str(error) == (
        f"database schema version {len(MIGRATIONS) + 1} is newer than this Dockyard ({len(MIGRATIONS)}); "
        "upgrade Dockyard"
    )


@pytest.mark.postgres
def test_a_refused_database_leaves_no_connection_open(
    postgres_url: str, postgres_connections: Callable[[], int]
) -> None:
    engine = open_engine(postgres_url)
    with Session(engine) as session:
        session.add(SchemaVersion(version=len(MIGRATIONS) + 1))
        session.commit()
    engine.dispose()
    assert postgres_connections() == 0
    with pytest.raises(StorageError):
        open_engine(postgres_url)
    assert postgres_connections() == 0


@pytest.mark.postgres
def test_a_failed_migration_names_the_database_without_sql_or_help_links(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE dockyard_schema (unexpected integer)")
    error = str(storage_error(postgres_url))
    shown = make_url(postgres_url).set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
    assert error.startswith(f"cannot migrate database {shown}: ")
    assert "dockyard_schema.version does not exist" in error
    assert "sqlalche.me" not in error
    assert "[SQL:" not in error


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "invalid database URL ''"),
        ("not a url", "invalid database URL 'not a url'"),
        ("mysql://user@db.example/dockyard", "unsupported database 'mysql': use sqlite:/// or postgresql://"),
        ("oracle://user@db.example/dockyard", "unsupported database 'oracle'"),
        ("postgresql+asyncpg://user@127.0.0.1/x", "cannot open database postgresql+asyncpg://user@127.0.0.1/x"),
    ],
)
def test_an_invalid_or_unsupported_url_is_a_storage_error_saying_what_is_wrong(url: str, message: str) -> None:
    assert str(storage_error(url)).startswith(message)


def test_an_unreachable_postgres_server_is_a_storage_error_without_the_password() -> None:
    error = storage_error("postgresql://dockyard:s3cret@127.0.0.1:1/dockyard")
    assert str(error).startswith("cannot open database postgresql+psycopg://dockyard:***@127.0.0.1:1/dockyard: ")
    assert "s3cret" not in str(error)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql//dockyard:s3cret@db.example/dockyard",
            "invalid database URL 'postgresql//***@db.example/dockyard': expected sqlite:///PATH or postgresql://",
        ),
        ("s3cret@db.example", "invalid database URL '***@db.example': expected "),
        ("postgresql//db.example/x?password=s3cret", "invalid database URL 'postgresql//db.example/x?***': "),
        (
            "postgresql://dockyard:s3cret@db.example:five/dockyard",
            "invalid database URL 'postgresql://***@db.example:five/dockyard': the port must be a number",
        ),
    ],
    ids=["missing colon", "no scheme", "password in the query", "non-numeric port"],
)
def test_a_malformed_url_is_reported_without_its_password(url: str, message: str) -> None:
    """U3: nothing secret in errors, even for a URL that cannot be parsed to find the password in it."""
    error = str(storage_error(url))
    assert error.startswith(message)
    assert "s3cret" not in error


def test_a_sqlite_path_whose_folder_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path / 'a-file' / 'dockyard.db'}"
    assert str(storage_error(url)).startswith(
        f"cannot open database {url}: cannot create its folder {str(tmp_path / 'a-file')!r}: "
    )


def test_a_sqlite_database_is_created_with_its_folder_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "dockyard.db"
    engine = open_engine(f"sqlite:///{path}")
    engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_sqlite_connections_enforce_foreign_keys_and_wait_when_busy(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'dockyard.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_works(tmp_path: Path) -> None:
    engine = open_engine("sqlite://")
    try:
        assert "tool_pins" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_sqlite_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "dockyard.db"
    path.write_bytes(b"this is not sqlite" * 100)
    assert "file is not a database" in str(storage_error(f"sqlite:///{path}"))


def test_timestamps_come_back_timezone_aware_on_every_engine(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(UpstreamStatus(server="s", kind="stdio", state="connected"))
        session.commit()
    with Session(engine) as session:
        row = session.exec(select(UpstreamStatus)).one()
        offset = row.updated_at.utcoffset()
        assert offset is not None
        assert offset.total_seconds() == 0


def test_audit_records_get_increasing_ids_and_keep_long_errors_on_every_engine(engine: Engine) -> None:
    with Session(engine) as session:
        for n in range(3):
            session.add(
                AuditRecord(principal="alice", method="tools/call", target=f"t{n}", decision="allow", status="ok")
            )
        session.add(
            AuditRecord(
                principal="bob", method="tools/call", target="x", decision="deny", status="error", error="e" * 5000
            )
        )
        session.commit()
    with Session(engine) as session:
        rows = session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()  # pyright: ignore[reportArgumentType]
    assert [row.target for row in rows] == ["t0", "t1", "t2", "x"]
    ids = [row.id or 0 for row in rows]
    assert 0 < ids[0] < ids[1] < ids[2] < ids[3]
    assert rows[-1].error == "e" * 5000
