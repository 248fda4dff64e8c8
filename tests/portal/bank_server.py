"""An in-process MCP server with a tool worth holding for approval: every transfer is written to a ledger."""

from __future__ import annotations

import mcp_types as types
from mcp.server import MCPServer

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
