"""Approvals: a call a policy marks ``require_approval`` is held until an admin decides, then runs exactly once.

Every test drives a real portal (uvicorn, the official ``mcp`` client or the choke point itself) over a
real database — SQLite and PostgreSQL alike where the test takes ``database_url``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from portal.approvals import APPROVAL_META, ApprovalStore
from portal.channel import NULL_CHANNEL
from portal.cli import main
from portal.config import settings_from_mapping
from portal.errors import ApprovalError
from portal.principal import LOCAL_PRINCIPAL, Principal
from portal.store import AuditRecord
from tests.policy.conftest import write_files
from tests.portal import bank_server
from tests.portal.bank_server import bank_settings
from tests.support import running_portal, wait_for

pytestmark = pytest.mark.anyio

BOB = Principal("bob", kind="user")
FIXTURE = Path(__file__).parents[1] / "conformance" / "fixture_server.py"
"""A 2026-07-28 server whose tools ask for input with input-required results."""


@pytest.fixture(autouse=True)
def empty_ledger() -> None:
    bank_server.LEDGER.clear()


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def approval_id(result: types.CallToolResult | types.InputRequiredResult) -> str:
    assert isinstance(result, types.CallToolResult) and result.is_error and result.meta is not None
    return result.meta[APPROVAL_META]["id"]


async def transfer(gateway: Any, principal: Principal = LOCAL_PRINCIPAL, amount: int = 10) -> Any:
    return await gateway.call_tool(principal, "bank__transfer", {"to": "eve", "amount": amount}, channel=NULL_CHANNEL)


async def test_a_held_call_runs_once_after_approval_and_a_second_call_is_held_again(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        running_portal(bank_settings(tmp_path, database_url)) as portal,
        Client(portal.mcp_url, mode="legacy") as client,
    ):
        held = await client.call_tool("bank__transfer", {"to": "eve", "amount": 10})
        assert held.is_error and "needs approval (rule 'transfers-need-approval': Money leaves the bank.)" in text_of(
            held
        )
        first = approval_id(held)
        assert f"dockyard approvals approve {first}" in text_of(held)
        assert bank_server.LEDGER == []

        again = await client.call_tool("bank__transfer", {"to": "eve", "amount": 10})
        assert approval_id(again) == first  # the same pending approval, not a new one per retry

        store = portal.gateway.approvals
        pending = store.list()
        assert [(a.id, a.principal, a.target, a.arguments) for a in pending] == [
            (first, "local", "bank__transfer", {"to": "eve", "amount": 10})
        ]
        store.decide(first, approve=True, by="admin")

        ran = await client.call_tool("bank__transfer", {"to": "eve", "amount": 10})
        assert not ran.is_error and text_of(ran) == "sent 10 to eve"
        assert bank_server.LEDGER == [("eve", 10)]
        assert store.get(first).status == "consumed"

        held_again = await client.call_tool("bank__transfer", {"to": "eve", "amount": 10})
        assert approval_id(held_again) != first
        assert bank_server.LEDGER == [("eve", 10)]

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.target == "bank__transfer")).all()
    trail = [(r.decision, r.status) for r in rows]
    assert trail == [
        ("approval:transfers-need-approval", "pending"),
        ("approval:transfers-need-approval", "pending"),
        (f"approved:{first}", "ok"),
        ("approval:transfers-need-approval", "pending"),
    ]


async def test_concurrent_identical_calls_run_an_approved_call_exactly_once(tmp_path: Path, database_url: str) -> None:
    async with running_portal(bank_settings(tmp_path, database_url)) as portal:
        gateway = portal.gateway
        gateway.approvals.decide(approval_id(await transfer(gateway)), approve=True, by="admin")
        results: list[Any] = []

        async def call() -> None:
            results.append(await transfer(gateway))

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(call)
    ran = [r for r in results if not r.is_error]
    assert len(ran) == 1 and bank_server.LEDGER == [("eve", 10)]
    assert all(r.meta and r.meta[APPROVAL_META]["status"] == "pending" for r in results if r.is_error)


async def test_an_approval_is_bound_to_the_principal_the_arguments_and_the_policy_version(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path)) as portal:
        gateway = portal.gateway
        approved = approval_id(await transfer(gateway))
        gateway.approvals.decide(approved, approve=True, by="admin")

        other_amount = await transfer(gateway, amount=1_000_000)
        assert approval_id(other_amount) != approved
        other_caller = await transfer(gateway, BOB)
        assert approval_id(other_caller) not in (approved, approval_id(other_amount))

        version = portal.portal.policy.version
        write_files(tmp_path / "policies", extra="version: 1\ndescription: any change is a new policy version\n")
        await wait_for(lambda: portal.portal.policy.version != version, timeout=10)
        under_new_policy = await transfer(gateway)
        assert approval_id(under_new_policy) != approved
        assert gateway.approvals.get(approved).status == "approved"  # granted, but for the old policy
        assert bank_server.LEDGER == []


async def test_a_denied_call_stays_denied_until_it_expires(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path, approval_ttl=1.0)) as portal:
        gateway = portal.gateway
        held = approval_id(await transfer(gateway))
        gateway.approvals.decide(held, approve=False, by="admin", note="not this month")
        refused = await transfer(gateway)
        assert refused.is_error and text_of(refused) == f"denied by admin (approval {held}): not this month"
        with pytest.raises(ApprovalError, match=f"approval '{held}' is denied by admin, not pending"):
            gateway.approvals.decide(held, approve=True, by="admin")

        await wait_for(lambda: gateway.approvals.get(held).expires_at <= _now(), timeout=10)
        after_expiry = await transfer(gateway)
        assert approval_id(after_expiry) != held
        expired = approval_id(after_expiry)
        await wait_for(lambda: gateway.approvals.get(expired).status == "expired", timeout=10)
        with pytest.raises(ApprovalError, match="is expired, not pending"):
            gateway.approvals.decide(expired, approve=True, by="admin")
    assert bank_server.LEDGER == []


def _now() -> Any:
    from portal.store import utcnow

    return utcnow()


async def test_approvals_survive_a_restart_and_are_decided_with_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(
        f'[portal]\ndata_dir = "{tmp_path / "data"}"\n[auth]\nmode = "none"\n'
        f'[policy]\ndir = "{tmp_path / "policies"}"\n'
        '[servers.bank]\nmodule = "tests.portal.bank_server:server"\n',
        encoding="utf-8",
    )
    settings = bank_settings(tmp_path)
    async with running_portal(settings) as portal:
        held = approval_id(await transfer(portal.gateway))

    assert main(["-c", str(config), "approvals", "list"]) == 0
    assert held in capsys.readouterr().out
    assert main(["-c", str(config), "approvals", "show", held]) == 0
    assert '"amount": 10' in capsys.readouterr().out
    assert main(["-c", str(config), "approvals", "approve", held, "--note", "ok"]) == 0
    assert main(["-c", str(config), "approvals", "approve", held]) == 2
    assert f"approval '{held}' is approved by cli:" in capsys.readouterr().err
    assert main(["-c", str(config), "approvals", "deny", "apr_nope"]) == 2
    assert "no approval 'apr_nope'" in capsys.readouterr().err

    async with running_portal(settings) as portal:
        ran = await transfer(portal.gateway)
    assert text_of(ran) == "sent 10 to eve" and bank_server.LEDGER == [("eve", 10)]
    assert main(["-c", str(config), "approvals", "list", "--status", "consumed", "--json"]) == 0
    assert f'"id": "{held}"' in capsys.readouterr().out


async def test_a_2026_client_waits_in_an_elicitation_and_the_call_runs_once_approved(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path)) as portal:
        store: ApprovalStore = portal.gateway.approvals
        seen: list[str] = []

        async def on_elicit(_: object, params: types.ElicitRequestParams) -> types.ElicitResult:
            seen.append(params.message)
            if len(seen) == 2:  # the user checks again once; the admin has approved meanwhile
                (pending,) = store.list()
                store.decide(pending.id, approve=True, by="admin")
            return types.ElicitResult(action="accept", content={})

        async with Client(portal.mcp_url, mode="2026-07-28", elicitation_callback=on_elicit) as client:  # type: ignore[arg-type]
            result = await client.call_tool("bank__transfer", {"to": "eve", "amount": 10})
    assert text_of(result) == "sent 10 to eve" and bank_server.LEDGER == [("eve", 10)]
    assert len(seen) == 2 and "needs approval" in seen[0] and "Accept to check again." in seen[0]


async def test_the_admin_api_lists_shows_and_decides_but_refuses_cross_site_requests(tmp_path: Path) -> None:
    async with running_portal(bank_settings(tmp_path)) as portal, httpx.AsyncClient(base_url=portal.url) as http:
        held = approval_id(await transfer(portal.gateway))
        listed = (await http.get("/admin/approvals")).json()["approvals"]
        assert [a["id"] for a in listed] == [held]
        assert (await http.get(f"/admin/approvals/{held}")).json()["arguments"] == {"to": "eve", "amount": 10}
        assert (await http.get("/admin/approvals?status=bogus")).status_code == 400
        assert (await http.get("/admin/approvals/apr_nope")).status_code == 404

        # T1: a page on another site cannot read or decide approvals, nor can a plain form post.
        evil = {"Origin": "https://evil.example"}
        assert (await http.get("/admin/approvals", headers=evil)).status_code == 403
        assert (await http.post(f"/admin/approvals/{held}/approve", json={}, headers=evil)).status_code == 403
        form = await http.post(f"/admin/approvals/{held}/approve", data={"note": "x"})
        assert form.status_code == 400 and portal.gateway.approvals.get(held).status == "pending"
        rebound = await http.get("/admin/approvals", headers={"Host": "evil.example"})
        assert rebound.status_code == 421

        assert (await http.post(f"/admin/approvals/{held}/approve", json={"note": 3})).status_code == 400
        approved = await http.post(f"/admin/approvals/{held}/approve", json={"note": "fine"})
        assert approved.status_code == 200
        assert approved.json() | {"decided_at": None} == approved.json() | {
            "status": "approved",
            "decided_by": "http:local",
            "note": "fine",
            "decided_at": None,
        }
        again = await http.post(f"/admin/approvals/{held}/deny", json={})
        assert again.status_code == 409 and "is approved by http:local, not pending" in again.json()["error"]
        assert (await http.post(f"/admin/approvals/{held}/launch", json={})).status_code == 404
        assert text_of(await transfer(portal.gateway)) == "sent 10 to eve"


async def test_an_approved_call_refused_by_a_rate_limit_keeps_its_approval(tmp_path: Path) -> None:
    limit = "version: 1\nlimits:\n  - {name: one-transfer, roles: [owner], tools: [bank__transfer], rate: 1/hour}\n"
    settings = bank_settings(tmp_path)
    write_files(tmp_path / "policies", limit=limit)
    async with running_portal(settings) as portal:
        gateway = portal.gateway
        first = approval_id(await transfer(gateway))
        gateway.approvals.decide(first, approve=True, by="admin")
        assert text_of(await transfer(gateway)) == "sent 10 to eve"

        second = approval_id(await transfer(gateway, amount=20))
        gateway.approvals.decide(second, approve=True, by="admin")
        limited = await transfer(gateway, amount=20)
        assert limited.is_error and "one-transfer" in text_of(limited)
        assert gateway.approvals.get(second).status == "approved"  # still usable once the hour is over
    assert bank_server.LEDGER == [("eve", 10)]


async def test_an_approved_call_goes_on_through_the_upstreams_own_input_rounds_without_a_new_approval(
    tmp_path: Path,
) -> None:
    policy = """
        version: 1
        roles: {owner: {}}
        principals: {local: {roles: [owner]}}
        rules:
          - {name: everything, effect: allow, roles: [owner]}
          - name: asking-needs-approval
            effect: require_approval
            roles: [owner]
            tools: [fix__test_input_required_result_elicitation]
    """
    raw = {
        "portal": {"data_dir": str(tmp_path / "data")},
        "auth": {"mode": "none"},
        "policy": {"dir": str(write_files(tmp_path / "policies", main=policy))},
        "servers": {"fix": {"command": sys.executable, "args": [str(FIXTURE), "--stdio"]}},
    }
    settings = settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
    async with running_portal(settings) as portal:
        store = portal.gateway.approvals
        asked: list[str] = []

        async def on_elicit(_: object, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params.message)
            if "needs approval" in params.message:  # the portal's round: the admin approves meanwhile
                (pending,) = store.list()
                store.decide(pending.id, approve=True, by="admin")
                return types.ElicitResult(action="accept", content={})
            return types.ElicitResult(action="accept", content={"name": "ada"})  # the upstream's own question

        async with Client(portal.mcp_url, mode="2026-07-28", elicitation_callback=on_elicit) as client:  # type: ignore[arg-type]
            result = await client.call_tool("fix__test_input_required_result_elicitation", {})
        assert text_of(result) == "Hello, ada!"
        assert ["needs approval" in m for m in asked] == [True, False]
        assert [a.status for a in store.list(status=None)] == ["consumed"]  # one approval, used once
