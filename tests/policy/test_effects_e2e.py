"""End to end: rate limits and result redaction through a real portal, the official MCP client and Code Mode.

Redaction happens before the caller, the audit log or Code Mode's script sees a result; the audit log records
that it happened and holds no secret (SECURITY.md G6, U3); a limited call is refused with the limit's name
and when to retry, and audited as ``limited``; the chain still verifies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from portal.audit import verify
from portal.config import Settings, settings_from_mapping
from portal.store import AuditRecord
from tests.policy.conftest import write_files
from tests.policy.vault_server import EMAIL, GITHUB_TOKEN, SECRETS
from tests.support import running_portal

pytestmark = pytest.mark.anyio

POLICY = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: owner-all, effect: allow, roles: [owner]}
    limits:
      - name: leak-quota
        roles: [owner]
        tools: [vault__leak]
        quota: 3/week
    redact:
      - name: vault-secrets
        roles: ["*"]
        servers: [vault]
        patterns: [email, github_token, aws_access_key]
"""


def settings_for(tmp_path: Path, policy_dir: Path) -> Settings:
    raw = {
        "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 1.0},
        "auth": {"mode": "none"},
        "policy": {"dir": str(policy_dir)},
        "servers": {"vault": {"module": "tests.policy.vault_server:server"}},
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def wire(result: Any) -> str:
    return result.model_dump_json(by_alias=True)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_results_are_redacted_calls_are_limited_and_the_audit_log_says_so_without_a_secret(
    tmp_path: Path, policy_dir: Path, mode: Any
) -> None:
    settings = settings_for(tmp_path, write_files(policy_dir, main=POLICY))
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode=mode) as client:
        for _ in range(3):
            leaked = await client.call_tool("vault__leak", {})
            assert not leaked.is_error
            assert_no_secret(wire(leaked))
            assert leaked.structured_content == {
                "owner": "[REDACTED:email]",
                "token": "[REDACTED:github_token]",
                "nested": [{"[REDACTED:email]": "[REDACTED:aws_access_key]"}],
            }
        limited = await client.call_tool("vault__leak", {})
        assert limited.is_error
        assert text_of(limited).startswith(
            "rate limit 'leak-quota' reached: at most 3 call(s) per week per principal; retry in "
        )
        assert limited.meta is not None
        machine = limited.meta["io.dockyard/limit"]
        assert (machine["rule"], machine["count"], machine["window"]) == ("leak-quota", 3, 604800.0)
        assert 0 < machine["retry_after"] <= 604800
        assert text_of(await client.call_tool("vault__hello", {})) == "hello", "other tools are not limited"

        failed = await client.call_tool("vault__fail", {})
        assert failed.is_error and "[REDACTED:email]" in text_of(failed)
        assert_no_secret(wire(failed))

        prompt = await client.get_prompt("vault__briefing", {})
        assert_no_secret(wire(prompt))
        assert "[REDACTED:email]" in wire(prompt)
        (card,) = [r for r in (await client.list_resources()).resources if str(r.uri).endswith("card")]
        read = await client.read_resource(str(card.uri))
        assert_no_secret(wire(read))
        assert "[REDACTED:github_token]" in wire(read)

        await portal.gateway.audit.flush()
        engine = portal.portal.engine
        with Session(engine) as session:
            rows = session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()  # pyright: ignore[reportArgumentType]
    assert_no_secret(json.dumps([r.model_dump(mode="json") for r in rows]))
    calls = [(r.target, r.decision, r.status) for r in rows if r.method != "tools/list"]
    leak = "redact:aws_access_key=2,email=4,github_token=2"  # structured content, and its JSON as text
    assert calls.count(("vault__leak", leak, "ok")) == 3
    (refused,) = [r for r in rows if r.status == "limited"]
    assert (refused.target, refused.decision) == ("vault__leak", "allow")
    assert refused.error is not None and "leak-quota" in refused.error
    (error,) = [r for r in rows if r.target == "vault__fail"]
    assert error.status == "error" and error.decision.startswith("redact:") and "email=1" in error.decision
    assert error.error is not None and "[REDACTED:email]" in error.error
    assert ("vault__hello", "allow", "ok") in calls
    assert any(r.method == "prompts/get" and r.decision == "redact:aws_access_key=1,email=1" for r in rows)
    assert any(r.method == "resources/read" and r.decision == "redact:email=1,github_token=1" for r in rows)
    assert verify(engine).broken is None


async def test_code_mode_calls_are_redacted_and_limited_like_any_other(tmp_path: Path, policy_dir: Path) -> None:
    """Code Mode's SDK calls go through the same choke point: its scripts see redacted results and limits hold."""
    settings = settings_for(tmp_path, write_files(policy_dir, main=POLICY))
    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code", mode="legacy") as client:
        first = await client.call_tool("execute", {"code": "a = await vault.leak()\nb = await vault.leak()\n[a, b]\n"})
        assert not first.is_error, text_of(first)
        assert_no_secret(wire(first))
        assert first.structured_content is not None
        assert first.structured_content["value"][0]["owner"] == "[REDACTED:email]"
        assert "[REDACTED:github_token]" in json.dumps(first.structured_content["value"])

        second = await client.call_tool("execute", {"code": "await vault.leak()\nawait vault.leak()\n"})
        assert second.is_error and second.structured_content is not None
        assert "rate limit 'leak-quota' reached" in second.structured_content["error"]
        assert [c["ok"] for c in second.structured_content["calls"]] == [True, False]

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.target == "vault__leak")).all()
    assert sorted(r.status for r in rows) == ["limited", "ok", "ok", "ok"]
    assert_no_secret(json.dumps([r.model_dump(mode="json") for r in rows]))
    assert EMAIL not in wire(second) and GITHUB_TOKEN not in wire(second)


EGRESS = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: owner-all, effect: allow, roles: [owner]}
    egress:
      - name: vault-reaches-github
        roles: [owner]
        servers: [vault]
        hosts: [api.github.com, "*.githubusercontent.com"]
      - name: vault-reaches-pypi-on-request
        roles: [owner]
        servers: [vault]
        when: 'arguments.network == "pypi"'
        hosts: [pypi.org]
"""


async def test_the_egress_allow_list_of_a_call_reaches_the_built_in_server_that_serves_it(
    tmp_path: Path, policy_dir: Path
) -> None:
    """The sandbox and browser servers read the hosts a call may reach from the portal's ``_meta``."""
    settings = settings_for(tmp_path, write_files(policy_dir, main=EGRESS))
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        seen = await client.call_tool("vault__caller", {})
    assert seen.structured_content == {"principal": "local", "egress": ["*.githubusercontent.com", "api.github.com"]}
