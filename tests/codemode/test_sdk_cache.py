"""The SDK ``/mcp/code`` serves follows the catalog and the policy: a change shows in the next call.

``/mcp/code`` caches each caller's SDK per catalog snapshot and visible set; these tests change the
catalog upstream (a real in-process server adds and removes a tool) and the policy (a rule file is
rewritten and hot-reloaded), and check that the next ``search`` and ``execute`` see the change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

from portal.config import settings_from_mapping
from tests.policy.conftest import write_files
from tests.support import running_portal, wait_for

pytestmark = pytest.mark.anyio

SHELF = {"module": "tests.codemode.shelf_server:server"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def _execute(client: Client, code: str) -> dict[str, Any]:
    result = await client.call_tool("execute", {"code": code})
    assert result.structured_content is not None, _text(result)
    return result.structured_content


def _settings(tmp_path: Path, policy_dir: Path | None = None) -> Any:
    raw: dict[str, Any] = {
        "portal": {"data_dir": str(tmp_path / "data")},
        "auth": {"mode": "none"},
        "servers": {"shelf": SHELF},
    }
    if policy_dir is not None:
        raw["policy"] = {"dir": str(policy_dir)}
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)


async def test_a_tool_added_or_removed_upstream_shows_in_the_next_search_and_execute(tmp_path: Path) -> None:
    async with running_portal(_settings(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        catalog = portal.gateway.catalog
        before = await client.call_tool("search", {"query": "reader", "detail": "names"})
        assert _text(before) == "No SDK function matches 'reader'; try other words, or fewer."
        assert (await _execute(client, "await shelf.toggle_lending()"))["value"] == {"result": "on"}
        await wait_for(lambda: "shelf__lend_book" in portal.gateway.catalog.tools, timeout=10)
        assert portal.gateway.catalog is not catalog

        found = await client.call_tool("search", {"query": "reader", "detail": "names"})
        assert _text(found) == "shelf.lend_book: Lend a book from the shelf to a reader."
        lent = await _execute(client, 'await shelf.lend_book(title="Emma")')
        assert (lent["status"], lent["value"]) == ("ok", {"result": "lent Emma"})

        assert (await _execute(client, "await shelf.toggle_lending()"))["value"] == {"result": "off"}
        await wait_for(lambda: "shelf__lend_book" not in portal.gateway.catalog.tools, timeout=10)
        gone = await _execute(client, 'await shelf.lend_book(title="Emma")')
        assert gone["status"] == "type_error" and gone["line"] == 1
        assert "No SDK function matches" in _text(await client.call_tool("search", {"query": "reader"}))


EVERYTHING = """
    version: 1
    roles: {owner: {}}
    principals: {local: {roles: [owner]}}
    rules:
      - {name: shelf, effect: allow, roles: [owner], servers: [shelf]}
"""


async def test_a_policy_change_shows_in_what_the_next_search_and_execute_may_use(tmp_path: Path) -> None:
    policy_dir = write_files(tmp_path / "policies", main=EVERYTHING)
    async with running_portal(_settings(tmp_path, policy_dir)) as portal, Client(f"{portal.url}/mcp/code") as client:
        assert "shelf.list_books" in _text(await client.call_tool("search", {"query": "books", "detail": "names"}))
        listed = await _execute(client, "await shelf.list_books()")
        assert listed["status"] == "ok", listed

        version = portal.gateway.policy.version
        write_files(policy_dir, main=EVERYTHING.replace("servers: [shelf]", "tools: [shelf__toggle_lending]"))
        await wait_for(lambda: portal.gateway.policy.version != version, timeout=10)
        found = await client.call_tool("search", {"query": "list books", "detail": "names"})
        assert _text(found) == "shelf.toggle_lending: Add the tool lend_book, or remove it if it is there."
        hidden = await _execute(client, "await shelf.list_books()")
        assert hidden["status"] == "type_error" and hidden["line"] == 1

        version = portal.gateway.policy.version
        write_files(policy_dir, main=EVERYTHING)
        await wait_for(lambda: portal.gateway.policy.version != version, timeout=10)
        again = await _execute(client, "await shelf.list_books()")
        assert again["status"] == "ok", again
