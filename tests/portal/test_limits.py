"""The rate limiter on the real databases: exact under concurrency, per dimension, per window, all or nothing.

The last test is the issue's proof: a limit holds exactly across two real portal processes sharing one
PostgreSQL database.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import httpx
import mcp_types as types
import pytest
from mcp import Client
from sqlalchemy import Engine, text

from portal.audit import verify
from portal.limits import Limiter
from portal.policy_seam import Limit
from portal.principal import LOCAL_PRINCIPAL, Principal
from portal.store import open_engine
from tests.support import free_port, python_server, wait_for

pytestmark = pytest.mark.anyio

ALICE = Principal(subject="alice")
BOB = Principal(subject="bob")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def second_engine(database_url: str) -> Iterator[Engine]:
    """Another engine on the same database: its own connection pool, as another portal process has."""
    opened = open_engine(database_url)
    try:
        yield opened
    finally:
        opened.dispose()


async def test_concurrent_calls_through_two_limiters_on_one_database_admit_exactly_the_limit(
    engine: Engine, second_engine: Engine
) -> None:
    """The issue's proof, in one process: two engines (two pools) race 60 calls for a limit of 7."""
    limit = Limit("seven", 7, 3600.0, ("principal",))
    limiters = [Limiter(engine), Limiter(second_engine)]
    admitted: list[bool] = []

    async def call(i: int) -> None:
        refusal = await limiters[i % 2].admit(ALICE, target="a__t", server="a", limits=[limit])
        admitted.append(refusal is None)

    async with anyio.create_task_group() as tg:
        for i in range(60):
            tg.start_soon(call, i)
    assert admitted.count(True) == 7 and len(admitted) == 60
    assert limiters[0].used(ALICE, target="a__t", server="a", limit=limit) == 7


def test_a_refusal_names_the_limit_and_when_to_retry_and_the_next_window_admits_again(engine: Engine) -> None:
    clock = Clock(1_800_000_030.0)  # 30 s into a minute
    limiter = Limiter(engine, clock=clock)
    limit = Limit("ci-rate", 2, 60.0, ("principal", "tool"))
    assert limiter.admit_sync(ALICE, "a__t", "a", [limit]) is None
    assert limiter.admit_sync(ALICE, "a__t", "a", [limit]) is None
    refusal = limiter.admit_sync(ALICE, "a__t", "a", [limit])
    assert refusal is not None and refusal.retry_after == pytest.approx(30.0)
    assert refusal.message == (
        "rate limit 'ci-rate' reached: at most 2 call(s) per minute per principal, tool; retry in 30s"
    )
    assert limiter.admit_sync(ALICE, "a__other", "a", [limit]) is None, "per tool: another tool has its own count"
    assert limiter.admit_sync(BOB, "a__t", "a", [limit]) is None, "per principal: another caller has its own"
    clock.now += 30.0
    assert limiter.admit_sync(ALICE, "a__t", "a", [limit]) is None, "a new window"


def test_a_limit_per_nothing_counts_every_caller_together(engine: Engine) -> None:
    limiter = Limiter(engine, clock=Clock())
    shared = Limit("shared", 2, 60.0, ())
    assert limiter.admit_sync(ALICE, "a__t", "a", [shared]) is None
    assert limiter.admit_sync(BOB, "b__u", "b", [shared]) is None
    assert limiter.admit_sync(LOCAL_PRINCIPAL, "c__v", "c", [shared]) is not None


def test_a_call_refused_by_one_limit_counts_against_none(engine: Engine) -> None:
    limiter = Limiter(engine, clock=Clock())
    roomy, tight = Limit("roomy", 100, 86400.0), Limit("tight", 2, 60.0)
    for _ in range(2):
        assert limiter.admit_sync(ALICE, "a__t", "a", [roomy, tight]) is None
    for _ in range(3):
        refusal = limiter.admit_sync(ALICE, "a__t", "a", [roomy, tight])
        assert refusal is not None and refusal.limit.rule == "tight"
    assert limiter.used(ALICE, target="a__t", server="a", limit=roomy) == 2


def test_rows_of_windows_that_are_over_are_deleted(engine: Engine) -> None:
    clock = Clock()
    limiter = Limiter(engine, clock=clock, cleanup_every=60.0)
    limiter.admit_sync(ALICE, "a__t", "a", [Limit("short", 5, 10.0)])
    limiter.admit_sync(ALICE, "a__t", "a", [Limit("long", 5, 86400.0)])
    clock.now += 120.0
    limiter.admit_sync(BOB, "a__t", "a", [Limit("short", 5, 10.0)])
    with engine.connect() as conn:
        rules = sorted(conn.execute(text("SELECT rule FROM rate_counters")).scalars())
        assert conn.execute(text("SELECT count(*) FROM rate_counters")).scalar() == 2
    assert rules == ["long", "short"]  # alice's short window is gone; bob's current one and the day remain


def test_a_limit_that_cannot_be_checked_refuses(tmp_path: object) -> None:
    engine = open_engine("sqlite://")
    limiter = Limiter(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE rate_counters")
    refusal = limiter.admit_sync(ALICE, "a__t", "a", [Limit("gone", 5, 60.0)])
    assert refusal is not None and refusal.retry_after is None
    assert "cannot be checked" in refusal.message
    engine.dispose()


POLICY = """\
version: 1
roles: {owner: {}}
principals:
  local: {roles: [owner]}
rules:
  - {name: owner-all, effect: allow, roles: [owner]}
limits:
  - name: describe-quota
    roles: [owner]
    tools: [interactive__describe]
    quota: %d/week
"""


def _serve_config(tmp_path: Path, name: str, *, port: int, database: str, policy_dir: Path) -> Path:
    server = python_server("interactive.py", "--stdio")
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[portal]\npublic_url = "http://127.0.0.1:{port}"\ndata_dir = "{tmp_path / name}"\n'
        f"database = {json.dumps(database)}\n"
        '[auth]\nmode = "none"\n'
        f'[policy]\ndir = "{policy_dir}"\n'
        f'[servers.interactive]\ncommand = "{server["command"]}"\nargs = {json.dumps(server["args"])}\n',
        encoding="utf-8",
    )
    return config


@pytest.mark.postgres
async def test_a_limit_holds_exactly_across_two_portal_processes_on_one_postgresql_database(
    tmp_path: Path, postgres_url: str
) -> None:
    """The issue's proof: two ``dockyard serve`` processes, one database, 14 concurrent calls, a limit of 5."""
    limit, calls = 5, 14
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "main.yaml").write_text(POLICY % limit)
    ports = [free_port(), free_port()]
    configs = [
        _serve_config(tmp_path, f"portal{i}", port=port, database=postgres_url, policy_dir=policy_dir)
        for i, port in enumerate(ports)
    ]
    dockyard = Path(sys.executable).parent / "dockyard"
    processes = [
        await anyio.open_process([str(dockyard), "-c", str(config), "serve", "--log-level", "warning"])
        for config in configs
    ]
    try:
        async with httpx.AsyncClient() as http:
            for port, process in zip(ports, processes, strict=True):

                async def ready(port: int = port, process: anyio.abc.Process = process) -> bool:
                    assert process.returncode is None, "dockyard serve exited at start"
                    try:
                        response = await http.get(f"http://127.0.0.1:{port}/readyz")
                    except httpx.TransportError:
                        return False
                    return response.status_code == 200 and response.json()["tools"] > 0

                await wait_for(ready, timeout=60, interval=0.1)
        outcomes: list[str] = []
        async with (
            Client(f"http://127.0.0.1:{ports[0]}/mcp", mode="legacy") as first,
            Client(f"http://127.0.0.1:{ports[1]}/mcp", mode="legacy") as second,
        ):
            start = anyio.Event()

            async def call(client: Client) -> None:
                await start.wait()
                result = await client.call_tool("interactive__describe", {})
                text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
                outcomes.append("limited" if result.is_error and "describe-quota" in text else text)

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(call, (first, second)[i % 2])
                start.set()
    finally:
        for process in processes:
            process.terminate()
        with anyio.fail_after(20):
            for process in processes:
                await process.wait()
    assert outcomes.count("limited") == calls - limit
    assert len(outcomes) == calls and all(o != "" for o in outcomes)
    engine = open_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM audit_records WHERE target = :t GROUP BY status"),
                {"t": "interactive__describe"},
            ).all()
        assert {str(row[0]): int(row[1]) for row in rows} == {"ok": limit, "limited": calls - limit}
        assert verify(engine).broken is None, "both processes chained their records into one log"
    finally:
        engine.dispose()
