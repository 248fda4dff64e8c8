"""The tamper-evident audit log (SECURITY.md G6): a hash chain the writer builds batch by batch, on SQLite
and PostgreSQL, that ``dockyard audit verify`` checks, and ``tail``, ``search`` and ``export`` read.

G6 also says the log never holds secrets: records carry an argument digest, never the arguments.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from portal.audit import EXPORT_FIELDS, AuditEvent, AuditLog, arguments_digest, verify
from portal.cli import main
from portal.principal import Principal
from portal.store import GENESIS, AuditRecord, chain_hash, find_break, open_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(n: int, *, principal: str = "alice", status: str = "ok") -> AuditEvent:
    digest, size = arguments_digest({"n": n, "token": "s3cret-token"})
    return AuditEvent(
        principal=Principal(subject=principal, client_id="cli"),
        method="tools/call",
        target=f"github__tool_{n}" if n % 2 else f"files__read_{n}",
        decision="allow",
        status="ok" if status == "ok" else "error",
        server="github" if n % 2 else "files",
        upstream_target=f"tool_{n}",
        arguments_digest=digest,
        error=None if status == "ok" else f"failure {n}",
        latency_ms=n * 0.25,
        bytes_in=size,
        bytes_out=n,
    )


async def write(engines: list[Engine], count: int, *, batch_size: int = 25) -> None:
    """Write ``count`` records through one ``AuditLog`` per engine, all logs writing at the same time."""
    logs = [AuditLog(engine, batch_size=batch_size, linger=0) for engine in engines]
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for log in logs:
                tg.start_soon(log.run)
            for n in range(count):
                logs[n % len(logs)].record(event(n, principal=f"writer{n % len(logs)}"))
            async with anyio.create_task_group() as flushing:
                for log in logs:
                    flushing.start_soon(log.flush)
            tg.cancel_scope.cancel()


def rows(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as session:
        return list(session.exec(select(AuditRecord).order_by(AuditRecord.id)).all())  # pyright: ignore[reportArgumentType]


def execute(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


async def test_a_chain_of_many_batched_records_verifies(engine: Engine) -> None:
    await write([engine], 1000, batch_size=64)
    await write([engine], 30, batch_size=64)  # a second writer continues the chain from the head
    written = rows(engine)
    assert len(written) == 1030
    assert written[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    report = verify(engine, chunk=100)
    assert report.broken is None
    assert (report.checked, report.head_id, report.head_hash) == (1030, written[-1].id, written[-1].hash)
    assert report.render().startswith("audit log intact: 1030 record(s)")


@pytest.mark.parametrize(
    ("column", "value"),
    [("target", "'github__other'"), ("status", "'denied'"), ("latency_ms", "99.5"), ("principal", "'mallory'")],
)
async def test_editing_a_field_of_a_record_is_detected_at_that_record(engine: Engine, column: str, value: str) -> None:
    await write([engine], 10)
    victim = rows(engine)[4].id
    execute(engine, f"UPDATE audit_records SET {column} = {value} WHERE id = :id", id=victim)
    report = verify(engine)
    assert report.broken is not None
    assert (report.broken.id, report.broken.reason) == (victim, "was edited: its content does not match its hash")
    assert report.checked == 4


async def test_an_edit_that_recomputes_the_records_own_hash_is_detected_at_the_next_record(engine: Engine) -> None:
    await write([engine], 10)
    victim, following = rows(engine)[4], rows(engine)[5]
    forged = chain_hash(victim.model_dump() | {"status": "denied"}, victim.prev_hash or "")
    execute(engine, "UPDATE audit_records SET status = 'denied', hash = :h WHERE id = :id", h=forged, id=victim.id)
    report = verify(engine)
    assert report.broken is not None
    assert report.broken.id == following.id
    assert report.broken.reason == (
        f"does not follow record {victim.id}: records between them were deleted, "
        f"or record {victim.id} was edited and its hash recomputed"
    )


async def test_deleting_a_record_is_detected_at_the_record_after_it(engine: Engine) -> None:
    await write([engine], 10)
    written = rows(engine)
    execute(engine, "DELETE FROM audit_records WHERE id = :id", id=written[4].id)
    report = verify(engine)
    assert report.broken is not None
    assert report.broken.id == written[5].id
    assert report.broken.reason == (
        f"does not follow record {written[3].id}: records between them were deleted, "
        f"or record {written[3].id} was edited and its hash recomputed"
    )


async def test_deleting_the_first_records_is_detected(engine: Engine) -> None:
    await write([engine], 10)
    written = rows(engine)
    execute(engine, "DELETE FROM audit_records WHERE id <= :id", id=written[1].id)
    report = verify(engine)
    assert report.broken is not None
    assert report.broken.id == written[2].id
    assert "should start the chain but follows another record" in report.broken.reason


async def test_swapping_two_records_is_detected_as_reordering(engine: Engine) -> None:
    await write([engine], 10)
    written = rows(engine)
    a, b = written[3], written[4]
    with engine.begin() as conn:
        for target, source in ((a, b), (b, a)):
            values = source.model_dump(exclude={"id"})
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            conn.execute(
                text(f"UPDATE audit_records SET {assignments} WHERE id = :row_id"), values | {"row_id": target.id}
            )
    report = verify(engine)
    assert report.broken is not None
    assert report.broken.id == a.id
    assert report.broken.reason == f"is out of order: it follows record {b.id} in the chain, so records were reordered"


async def test_a_record_written_outside_the_audit_log_is_detected(engine: Engine) -> None:
    await write([engine], 3)
    with Session(engine) as session:
        session.add(AuditRecord(principal="mallory", method="tools/call", target="x", decision="allow", status="ok"))
        session.commit()
    report = verify(engine)
    assert report.broken is not None
    assert report.broken.id == rows(engine)[-1].id
    assert report.broken.reason == "has no hash: it was written outside the audit log"


async def test_two_writers_on_two_engines_to_one_database_build_one_valid_chain(database_url: str) -> None:
    """Two portal processes in miniature: each AuditLog has its own engine (connection pool) and writes
    batches in its own worker thread, concurrently, to the same database."""
    engines = [open_engine(database_url), open_engine(database_url)]
    try:
        await write(engines, 600, batch_size=7)
        report = verify(engines[0])
        assert report.broken is None
        assert report.checked == 600
        principals = {r.principal for r in rows(engines[0])}
        assert principals == {"user:writer0", "user:writer1"}
    finally:
        for opened in engines:
            opened.dispose()


async def test_a_database_upgraded_from_schema_1_chains_its_existing_records(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:  # back to schema 1: no chain columns, records written by v1
            conn.execute(text("ALTER TABLE audit_records DROP COLUMN hash"))
            conn.execute(text("ALTER TABLE audit_records DROP COLUMN prev_hash"))
            conn.execute(text("DELETE FROM dockyard_schema WHERE version >= 2"))
            for n in range(5):
                conn.execute(
                    text(
                        "INSERT INTO audit_records (at, principal, method, target, decision, status, latency_ms, "
                        "bytes_in, bytes_out) VALUES (:at, 'old', 'tools/call', :t, 'allow', 'ok', 1.0, 0, 0)"
                    ),
                    {
                        "at": "2026-01-02 03:04:05.000000"
                        if engine.dialect.name == "sqlite"
                        else "2026-01-02T03:04:05Z",
                        "t": f"t{n}",
                    },
                )
    finally:
        engine.dispose()
    upgraded = open_engine(database_url)
    try:
        assert verify(upgraded).checked == 5
        await write([upgraded], 5)
        report = verify(upgraded)
        assert report.broken is None
        assert report.checked == 10
    finally:
        upgraded.dispose()


# The command line.


@pytest.fixture
def config(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config whose database is ``database_url``; the CLI sees no other config."""
    monkeypatch.delenv("DOCKYARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    database = "" if database_url.startswith("sqlite") else f"database = {json.dumps(database_url)}\n"
    path = tmp_path / "dockyard.toml"
    path.write_text(f'[portal]\ndata_dir = "data"\n{database}', encoding="utf-8")
    yield path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_cli_verify_reports_an_intact_log_then_the_first_broken_record(
    capsys: pytest.CaptureFixture[str], config: Path, database_url: str
) -> None:
    engine = open_engine(database_url)
    try:
        await write([engine], 12)
        written = rows(engine)
        status, out, _ = run(capsys, "--config", str(config), "audit", "verify")
        assert status == 0
        assert out == (
            f"audit log intact: 12 record(s), ids {written[0].id}..{written[-1].id}, head {written[-1].hash}\n"
        )
        execute(engine, "DELETE FROM audit_records WHERE id = :id", id=written[6].id)
    finally:
        engine.dispose()
    status, out, _ = run(capsys, "--config", str(config), "audit", "verify")
    assert status == 1
    assert out == (
        f"audit log broken at record {written[7].id}: does not follow record {written[5].id}: records between "
        f"them were deleted, or record {written[5].id} was edited and its hash recomputed "
        "(6 record(s) before it verify)\n"
    )


def test_cli_verify_of_an_empty_log(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert run(capsys, "--config", str(config), "audit", "verify") == (0, "audit log intact: no records\n", "")


async def test_cli_tail_prints_the_latest_records_oldest_first(
    capsys: pytest.CaptureFixture[str], config: Path, database_url: str
) -> None:
    engine = open_engine(database_url)
    try:
        await write([engine], 8)
        written = rows(engine)
    finally:
        engine.dispose()
    status, out, _ = run(capsys, "--config", str(config), "audit", "tail", "-n", "3")
    assert status == 0
    lines = out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [r.id for r in written[-3:]]
    last = written[-1]
    assert (
        lines[-1]
        == f"{last.id} {last.at:%Y-%m-%dT%H:%M:%S}Z user:writer0 via cli tools/call github__tool_7 allow ok 1.8ms"
    )


async def test_cli_search_filters_by_principal_tool_glob_status_and_time(
    capsys: pytest.CaptureFixture[str], config: Path, database_url: str
) -> None:
    engine = open_engine(database_url)
    log = AuditLog(engine, linger=0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(log.run)
            for n in range(10):
                log.record(event(n, principal="ana" if n < 5 else "bob", status="ok" if n % 3 else "error"))
            await log.flush()
            tg.cancel_scope.cancel()
        written = rows(engine)
    finally:
        engine.dispose()

    def ids(*filters: str) -> list[int]:
        status, out, _ = run(capsys, "--config", str(config), "audit", "search", *filters)
        assert status == 0
        return [int(line.split()[0]) for line in out.splitlines()]

    def expected(keep: list[int]) -> list[int]:
        return [written[n].id or 0 for n in keep]

    assert ids("--principal", "user:bob") == expected([5, 6, 7, 8, 9])
    assert ids("--tool", "github__*") == expected([1, 3, 5, 7, 9])
    assert ids("--tool", "GITHUB__*") == []
    assert ids("--tool", "github__tool_?", "--principal", "user:ana", "--status", "error") == expected([3])
    assert ids("--limit", "2") == expected([8, 9])
    middle = written[5].at.isoformat()
    assert ids("--since", middle) == expected([5, 6, 7, 8, 9])
    assert ids("--until", middle) == expected([0, 1, 2, 3, 4])
    status, _, err = run(capsys, "--config", str(config), "audit", "search", "--since", "yesterday")
    assert status == 2
    assert "--since must be an ISO 8601 time" in err


async def test_cli_export_writes_jsonl_that_round_trips_and_verifies_offline(
    capsys: pytest.CaptureFixture[str], config: Path, database_url: str
) -> None:
    engine = open_engine(database_url)
    try:
        await write([engine], 20)
        written = rows(engine)
    finally:
        engine.dispose()
    status, out, _ = run(capsys, "--config", str(config), "audit", "export")
    assert status == 0
    assert "s3cret-token" not in out  # G6: arguments are only ever a digest
    lines = [json.loads(line) for line in out.splitlines()]
    assert [list(line) for line in lines] == [list(EXPORT_FIELDS)] * 20
    assert lines == [json.loads(r.model_dump_json()) for r in written]
    broken, checked, _ = find_break(lines)  # anyone holding the export can check the chain
    assert (broken, checked) == (None, 20)
    lines[3]["status"] = "denied"
    broken, _, _ = find_break(lines)
    assert broken is not None and broken.id == written[3].id

    status, out, _ = run(capsys, "--config", str(config), "audit", "export", "--since", written[15].at.isoformat())
    assert [json.loads(line)["id"] for line in out.splitlines()] == [r.id for r in written[15:]]


async def test_cli_tail_follow_prints_records_as_they_are_written(config: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    command = [sys.executable, "-m", "portal.cli", "--config", str(config), "audit", "tail", "-n", "1", "--follow"]
    try:
        await write([engine], 2)
        first = rows(engine)
        async with await anyio.open_process([*command, "--interval", "0.05"]) as process:
            assert process.stdout is not None
            try:
                with anyio.fail_after(30):
                    received = ""
                    stream = process.stdout
                    while received.count("\n") < 1:
                        received += (await stream.receive()).decode()
                    await write([engine], 3)
                    while received.count("\n") < 4:
                        received += (await stream.receive()).decode()
            finally:
                process.terminate()
        ids = [int(line.split()[0]) for line in received.splitlines()]
        assert ids == [r.id for r in rows(engine)[len(first) - 1 :]]
    finally:
        engine.dispose()
