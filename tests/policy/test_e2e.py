"""End to end: the official MCP client through a real portal whose policy lives in a directory.

A denied tool is neither listed nor callable (SECURITY.md G1), a tool marked for approval answers "needs
approval", every decision lands in the audit log with its rule (G6), and a changed policy file takes
effect without a restart while a broken edit leaves the previous policy in force.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from sqlmodel import Session, select

from portal.config import Settings, settings_from_mapping
from portal.store import AuditRecord
from tests.policy.conftest import write_files
from tests.support import running_portal, wait_for

pytestmark = pytest.mark.anyio

POLICY = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: owner-all, effect: allow, roles: [owner]}
      - {name: no-export, effect: deny, roles: ["*"], tools: [notes__export_secrets], description: Secrets stay.}
      - {name: deleting-needs-approval, effect: require_approval, roles: [owner], tools: [notes__delete_note]}
      - name: no-root-note
        effect: deny
        roles: ["*"]
        tools: [notes__write_note]
        when: 'arguments.name == "root"'
        description: The root note is read-only.
"""
NO_READ = "version: 1\nrules:\n  - {name: no-read, effect: deny, roles: ['*'], tools: [notes__read_note]}\n"


def settings_for(tmp_path: Path, policy_dir: Path) -> Settings:
    raw = {
        "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 1.0},
        "auth": {"mode": "none"},
        "policy": {"dir": str(policy_dir)},
        "servers": {"notes": {"module": "tests.policy.notes_server:server"}},
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def listed(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools if t.name.startswith("notes__")}


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_policy_decides_what_is_listed_callable_or_held_for_approval(
    tmp_path: Path, policy_dir: Path, mode: str
) -> None:
    settings = settings_for(tmp_path, write_files(policy_dir, main=POLICY))
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode=mode) as client:  # type: ignore[arg-type]
        assert await listed(client) == {
            "notes__read_note",
            "notes__write_note",
            "notes__wipe_notes",
            "notes__delete_note",
        }
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("notes__export_secrets", {})

        held = await client.call_tool("notes__delete_note", {"name": "welcome"})
        assert held.is_error and "needs approval" in text_of(held) and "deleting-needs-approval" in text_of(held)
        assert text_of(await client.call_tool("notes__read_note", {"name": "welcome"})) == "hello"

        refused = await client.call_tool("notes__write_note", {"name": "root", "text": "x"})
        assert refused.is_error
        assert text_of(refused) == "denied by policy (no-root-note): The root note is read-only."
        assert text_of(await client.call_tool("notes__write_note", {"name": "todo", "text": "x"})) == "written"

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.method == "tools/call")).all()
    decisions = {(r.target, r.decision.split(":")[-1], r.status) for r in rows}  # "deny:RULE", "allow"
    assert ("notes__export_secrets", "no-export", "unknown") in decisions
    assert ("notes__delete_note", "deleting-needs-approval", "pending") in decisions
    assert ("notes__write_note", "no-root-note", "denied") in decisions
    assert ("notes__read_note", "allow", "ok") in decisions


async def test_a_changed_policy_takes_effect_without_restart_and_a_broken_edit_keeps_the_old_one(
    tmp_path: Path, policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, write_files(policy_dir, main=POLICY))
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        running_portal(settings) as portal,
        Client(portal.mcp_url, mode="legacy", message_handler=on_message) as client,
    ):
        assert "notes__read_note" in await listed(client)
        first = portal.portal.policy.current.version

        write_files(policy_dir, reads=NO_READ)
        await wait_for(lambda: portal.portal.policy.current.version != first, timeout=10)
        with anyio.fail_after(10):
            await changed.wait()  # clients are told to list again after a new policy
        assert "notes__read_note" not in await listed(client)
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool("notes__read_note", {"name": "welcome"})

        in_force = portal.portal.policy.current
        with caplog.at_level(logging.ERROR, logger="dockyard.policy"):
            write_files(policy_dir, reads=NO_READ.replace("effect: deny", "effect: deni"))
            await wait_for(lambda: portal.portal.policy.last_error is not None, timeout=10)
        assert portal.portal.policy.current is in_force
        assert f"{policy_dir}/reads.yaml:3: rules[0].effect: input should be" in caplog.text
        async with httpx.AsyncClient() as http:
            ready = (await http.get(f"{portal.url}/readyz")).json()
        assert ready["policy"]["version"] == in_force.version
        assert ready["policy"]["error"].startswith(f"{policy_dir}/reads.yaml:3: rules[0].effect")
        assert "notes__read_note" not in await listed(client)
        assert text_of(await client.call_tool("notes__write_note", {"name": "a", "text": "b"})) == "written"

        (policy_dir / "reads.yaml").unlink()
        await wait_for(lambda: portal.portal.policy.current.version == first, timeout=10)
        assert text_of(await client.call_tool("notes__read_note", {"name": "welcome"})) == "hello"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{portal.url}/readyz")).json()["policy"]["error"] is None


async def test_a_tool_that_declares_itself_destructive_needs_approval_under_the_shipped_default(tmp_path: Path) -> None:
    from portal.config import SHIPPED_POLICIES

    settings = settings_for(tmp_path, SHIPPED_POLICIES)
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        wiped = await client.call_tool("notes__wipe_notes", {})
        read = await client.call_tool("notes__read_note", {"name": "welcome"})
    assert wiped.is_error and "needs approval" in text_of(wiped)
    assert text_of(read) == "hello"
