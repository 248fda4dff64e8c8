"""Fixtures for the portal tests: the databases every storage test runs against.

``database_url`` is parametrized over SQLite and the local PostgreSQL server, so a test that takes it (or
``engine``) runs once per engine. PostgreSQL tests share a scratch database created for the test session
and dropped afterwards; each test gets its own schema inside it, so tests never see each other's rows.
They are skipped, saying why, only when the server cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from portal.store import open_engine

# The local server (trust auth); DOCKYARD_TEST_POSTGRES points the tests at another one.
POSTGRES_ADMIN_URL = os.environ.get("DOCKYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/test")


def admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server's ``test`` database."""
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A uniquely named scratch database on the local server for this test session; yields its name."""
    try:
        admin = admin_connection()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({error}); start it to run these tests")
    name = f"dockyard_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin_connection() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The URL of a fresh, empty schema in the scratch database (the schema is the connection's search_path)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(POSTGRES_ADMIN_URL).set(database=postgres_database)
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine in turn: a SQLite file under ``tmp_path``, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The portal's engine on ``database_url``, migrated; disposed after the test."""
    opened = open_engine(database_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def postgres_connections(postgres_database: str) -> Callable[[], int]:
    """Counts the open connections to the scratch database, other than the one counting."""

    def count() -> int:
        with admin_connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (postgres_database,),
            ).fetchone()
        assert row is not None
        return int(str(row[0]))

    return count
