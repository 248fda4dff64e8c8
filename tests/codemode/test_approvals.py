"""Code Mode and approvals: a script pauses at a held call and continues after the decision, restart or not.

The script's earlier calls are never repeated (counted in the upstream's own ledger and in the audit log),
the held call runs once after approval, a denied call raises ``ToolError`` inside the script where it
paused, and a paused run belongs to whoever started it and resumes once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, col, select

from portal.principal import Principal
from portal.store import AuditRecord
from tests.portal import bank_server
from tests.portal.bank_server import bank_settings
from tests.support import running_portal

pytestmark = pytest.mark.anyio

SCRIPT = """\
before = (await bank.balance())["result"]
print("balance before", before)
try:
    sent = (await bank.transfer(to="eve", amount=10))["result"]
except ToolError as error:
    sent = f"refused: {error}"
after = (await bank.balance())["result"]
[before, sent, after]
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def empty_ledger() -> None:
    bank_server.LEDGER.clear()


def body_of(result: types.CallToolResult) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


async def calls_upstream(portal: Any, tool: str) -> int:
    await portal.gateway.audit.flush()
    with Session(portal.portal.engine) as session:
        rows = session.exec(
            select(AuditRecord).where(AuditRecord.target == tool, col(AuditRecord.status) == "ok")
        ).all()
    return len(rows)


async def test_a_paused_script_continues_after_approval_across_a_restart_without_repeating_a_call(
    tmp_path: Path, database_url: str
) -> None:
    settings = bank_settings(tmp_path, database_url)
    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code", mode="legacy") as client:
        paused = body_of(await client.call_tool("execute", {"code": SCRIPT}))
        assert paused["status"] == "paused" and paused["approval"].startswith("apr_")
        assert f"resume={paused['run']!r}" in paused["message"]
        assert [(c["tool"], c["ok"]) for c in paused["calls"]] == [("bank__balance", True)]
        assert bank_server.LEDGER == [] and await calls_upstream(portal, "bank__balance") == 1

        waiting = body_of(await client.call_tool("execute", {"resume": paused["run"]}))
        assert waiting["status"] == "paused" and waiting["run"] == paused["run"]  # nothing ran
        assert "still waiting for approval" in waiting["message"]
        portal.gateway.approvals.decide(paused["approval"], approve=True, by="admin")

    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code", mode="legacy") as client:
        done = body_of(await client.call_tool("execute", {"resume": paused["run"]}))
        assert done["status"] == "ok", done
        assert done["value"] == [100, "sent 10 to eve", 90]
        assert done["stdout"] == "balance before 100\n"  # printed before the pause, kept with the run
        assert [c["tool"] for c in done["calls"]] == ["bank__balance", "bank__transfer", "bank__balance"]
        assert bank_server.LEDGER == [("eve", 10)]
        assert await calls_upstream(portal, "bank__balance") == 2  # one before the pause, one after

        again = await client.call_tool("execute", {"resume": paused["run"]})
        assert again.is_error and "resumes once" in again.content[0].text  # type: ignore[union-attr]
    assert bank_server.LEDGER == [("eve", 10)]


async def test_a_denied_call_raises_tool_error_where_the_script_paused(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        paused = body_of(await client.call_tool("execute", {"code": SCRIPT}))
        portal.gateway.approvals.decide(paused["approval"], approve=False, by="admin", note="not today")
        done = body_of(await client.call_tool("execute", {"resume": paused["run"]}))
    assert done["status"] == "ok"
    before, sent, after = done["value"]
    assert (before, after) == (100, 100)
    assert sent == f"refused: bank__transfer: denied by admin (approval {paused['approval']}): not today"
    assert bank_server.LEDGER == []


async def test_a_paused_run_belongs_to_whoever_started_it(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        paused = body_of(await client.call_tool("execute", {"code": SCRIPT}))
        portal.gateway.approvals.decide(paused["approval"], approve=True, by="admin")
        from codemode._runs import RunError, RunStore

        runs = RunStore(portal.portal.engine)
        with pytest.raises(RunError, match="no paused run"):
            await runs.approval_of(Principal("mallory"), paused["run"])
        with pytest.raises(RunError, match="no paused run"):
            await runs.claim(Principal("mallory"), paused["run"])
        done = body_of(await client.call_tool("execute", {"resume": paused["run"]}))
        bad = await client.call_tool("execute", {"resume": paused["run"], "code": "1"})
    assert done["status"] == "ok" and bank_server.LEDGER == [("eve", 10)]
    assert bad.is_error


async def test_two_calls_in_flight_keep_the_one_that_came_back_when_the_other_is_held(tmp_path: Path) -> None:
    script = """\
import asyncio
results = await asyncio.gather(bank.balance(), bank.transfer(to="eve", amount=5), bank.balance())
results
"""
    async with running_portal(bank_settings(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        paused = body_of(await client.call_tool("execute", {"code": script}))
        assert paused["status"] == "paused"
        portal.gateway.approvals.decide(paused["approval"], approve=True, by="admin")
        done = body_of(await client.call_tool("execute", {"resume": paused["run"]}))
        balances = await calls_upstream(portal, "bank__balance")
    assert done["status"] == "ok" and done["value"][1] == {"result": "sent 5 to eve"}
    assert balances == 2 and bank_server.LEDGER == [("eve", 5)]
