"""``/mcp/code`` end to end: the official MCP client searches, then executes a script through a real portal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from codemode import EXECUTE_DESCRIPTION, SEARCH_DESCRIPTION
from portal.store import AuditRecord
from tests.support import everything_stdio, make_settings, python_server, running_portal


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _surface(tools: list[types.Tool]) -> str:
    return json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools])


def test_the_two_tool_descriptions_are_fixed_text_well_under_a_thousand_tokens() -> None:
    # Fixed text: nothing from the catalog goes in, so the size cannot grow with it. ~4 characters a token.
    assert len(SEARCH_DESCRIPTION) + len(EXECUTE_DESCRIPTION) < 2400


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


SCRIPT = """\
import re

first = await everything.get_sum(a=2, b=3)
n = int(re.findall(r"is (\\d+)", str(first))[0])
second = await everything.get_sum(a=n, b=10)
big = await everything.echo(message="\\n".join([f"row {i}: {'even' if i % 2 == 0 else 'odd'}" for i in range(500)]))
rows = [line for line in str(big).splitlines() if line.endswith("7: odd")]
kind = await interactive.describe()
print("echoed", len(str(big)), "characters")
{"second": second, "rows": rows[:3], "describe": kind}
"""


@pytest.mark.anyio
@pytest.mark.npm
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_client_searches_then_executes_a_script_chaining_calls_on_two_servers(
    tmp_path: Path, mode: Any
) -> None:
    servers = {"everything": everything_stdio(), "interactive": python_server("interactive.py", "--stdio")}
    settings = make_settings(tmp_path, servers)
    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code", mode=mode) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ["search", "execute"]
        assert len(_surface(tools)) < 4000, "the tool surface a model loads stays small"
        native = len(portal.gateway.catalog.tools)
        assert native > 15

        found = await client.call_tool("search", {"query": "add two numbers", "detail": "names", "limit": 3})
        assert text_of(found).splitlines()[0] == "everything.get_sum: Returns the sum of two numbers"
        stub = await client.call_tool("search", {"query": "interactive.describe"})
        assert "async def describe() -> " in text_of(stub)

        result = await client.call_tool("execute", {"code": SCRIPT})
        assert not result.is_error, text_of(result)
        body = result.structured_content
        assert body is not None
        assert body["status"] == "ok"
        assert body["value"]["second"] == "The sum of 5 and 10 is 15."
        assert body["value"]["rows"] == ["row 7: odd", "row 17: odd", "row 27: odd"]
        assert "a thing" in json.dumps(body["value"]["describe"])
        assert body["stdout"].startswith("echoed ") and not body["truncated"]
        assert [(c["tool"], c["ok"]) for c in body["calls"]] == [
            ("everything__get-sum", True),
            ("everything__get-sum", True),
            ("everything__echo", True),
            ("interactive__describe", True),
        ]

        many = await client.call_tool(
            "execute", {"code": "total = 0\nfor i in range(12):\n    await everything.get_sum(a=i, b=1)\ntotal\n"}
        )
        assert many.structured_content is not None and many.structured_content["calls_total"] == 12
        summary = many.structured_content["calls"]
        assert [(c["tool"], c["calls"], c["failed"]) for c in summary] == [("everything__get-sum", 12, 0)]

        typo = await client.call_tool("execute", {"code": "x = 1\nawait everything.get_sum(a=1)\n"})
        assert typo.is_error and typo.structured_content is not None
        assert typo.structured_content["status"] == "type_error" and typo.structured_content["line"] == 2

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()  # pyright: ignore[reportArgumentType]
    calls = [r for r in rows if r.method == "tools/call"]
    assert [(r.target, r.status, r.principal) for r in calls] == [
        ("everything__get-sum", "ok", "local"),
        ("everything__get-sum", "ok", "local"),
        ("everything__echo", "ok", "local"),
        ("interactive__describe", "ok", "local"),
        *[("everything__get-sum", "ok", "local")] * 12,
    ]
