"""No path around the choke point (SECURITY.md G1): a server the policy denies is invisible on every one.

The caller may use one server (``notes``) and nothing of another (``everything``, the npm reference server,
which has tools, resources, templates, prompts and completions). Each MCP path — list and call tools,
list, read and subscribe to resources, list templates, list and get prompts, complete, and Code Mode's
``search`` and ``execute`` — is tried against the denied server with names taken from the portal's own
unfiltered catalog, so a path that forgot to ask the policy would show or serve something here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from sqlmodel import Session, select

from portal.config import settings_from_mapping
from portal.store import AuditRecord
from tests.policy.conftest import write_files
from tests.support import everything_stdio, running_portal

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

POLICY = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: notes-only, effect: allow, roles: [owner], servers: [notes]}
"""


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_denied_server_is_invisible_and_unusable_on_every_path(tmp_path: Path, mode: Any) -> None:
    raw = {
        "portal": {"data_dir": str(tmp_path / "data")},
        "auth": {"mode": "none"},
        "policy": {"dir": str(write_files(tmp_path / "policies", main=POLICY))},
        "servers": {"everything": everything_stdio(), "notes": {"module": "tests.policy.notes_server:server"}},
    }
    settings = settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
    async with running_portal(settings) as portal:
        catalog = portal.gateway.catalog
        tool = next(name for name, e in catalog.tools.items() if e.server == "everything")
        uri = next(uri for uri, r in catalog.resources.items() if r.server == "everything")
        prompt = next(name for name, e in catalog.prompts.items() if e.server == "everything")
        template = next(t.definition.uri_template for t in catalog.templates if t.server == "everything")

        async with Client(portal.mcp_url, mode=mode) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {
                n for n, e in catalog.tools.items() if e.server == "notes"
            }
            assert (await client.list_resources()).resources == []
            assert (await client.list_resource_templates()).resource_templates == []
            assert (await client.list_prompts()).prompts == []

            with pytest.raises(MCPError, match=r"(?i)unknown tool"):
                await client.call_tool(tool, {"message": "hi"})
            with pytest.raises(MCPError, match=r"(?i)unknown resource"):
                await client.read_resource(uri)
            with pytest.raises(MCPError, match=r"(?i)unknown prompt"):
                await client.get_prompt(prompt)
            with pytest.raises(MCPError):
                await client.complete(types.PromptReference(name=prompt), {"name": "style", "value": ""})
            with pytest.raises(MCPError):
                await client.complete(types.ResourceTemplateReference(uri=template), {"name": "id", "value": ""})
            if mode == "legacy":  # subscriptions are a handshake-era feature
                with pytest.warns(MCPDeprecationWarning), pytest.raises(MCPError, match=r"(?i)unknown resource"):
                    await client.subscribe_resource(uri)
            assert text_of(await client.call_tool("notes__read_note", {"name": "welcome"})) == "hello"

        async with Client(f"{portal.url}/mcp/code", mode=mode) as code:
            found = text_of(await code.call_tool("search", {"query": "echo a message", "detail": "names"}))
            assert "everything" not in found
            exact = text_of(await code.call_tool("search", {"query": "everything.echo"}))
            assert exact.startswith("No SDK function matches 'everything.echo'")
            typed = await code.call_tool("execute", {"code": 'await everything.echo(message="hi")'})
            assert typed.is_error and typed.structured_content is not None
            assert typed.structured_content["status"] in ("type_error", "error")
            assert typed.structured_content["calls"] == []

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).where(AuditRecord.server == "everything")).all()
    assert rows, "each refusal is audited"
    assert {r.status for r in rows} <= {"unknown", "denied"}
    assert {r.method for r in rows} >= {"tools/call", "resources/read", "prompts/get"}
