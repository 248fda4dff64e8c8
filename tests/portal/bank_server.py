"""An in-process MCP server with a tool worth holding for approval (every transfer is written to a ledger),
and the settings of a portal that mounts it under a policy holding every transfer for approval."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import MCPServer

from portal.config import Settings, settings_from_mapping
from tests.policy.conftest import write_files

HELD_TRANSFERS = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
      users: {bob: {roles: [owner]}, mallory: {roles: [owner]}}
    rules:
      - {name: everything, effect: allow, roles: [owner]}
      - name: transfers-need-approval
        effect: require_approval
        roles: [owner]
        tools: [bank__transfer]
        description: Money leaves the bank.
"""

server = MCPServer("bank")
LEDGER: list[tuple[str, int]] = []


@server.tool(annotations=types.ToolAnnotations(destructive_hint=True))
def transfer(to: str, amount: int) -> str:
    """Move money; it cannot be undone."""
    LEDGER.append((to, amount))
    return f"sent {amount} to {to}"


@server.tool(annotations=types.ToolAnnotations(read_only_hint=True))
def balance() -> int:
    """The balance."""
    return 100 - sum(amount for _, amount in LEDGER)


def bank_settings(tmp_path: Path, database: str | None = None, **policy: Any) -> Settings:
    """A portal (auth off) mounting this server as ``bank`` under :data:`HELD_TRANSFERS`, in ``tmp_path``."""
    portal: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "health_interval": 1.0}
    if database is not None:
        portal["database"] = database
    raw = {
        "portal": portal,
        "auth": {"mode": "none"},
        "policy": {"dir": str(write_files(tmp_path / "policies", main=HELD_TRANSFERS)), **policy},
        "servers": {"bank": {"module": "tests.portal.bank_server:server"}},
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
