"""A small MCP server whose results are full of secrets, mounted in-process by the redaction and limit tests."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("vault")

EMAIL = "ana.secret@acme.example"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" + "K1l2M3n4O5p6Q7r8"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRETS = (EMAIL, GITHUB_TOKEN, AWS_KEY)


@server.tool()
def leak() -> dict[str, object]:
    """Answer with secrets in every place a result can hold them."""
    return {"owner": EMAIL, "token": GITHUB_TOKEN, "nested": [{EMAIL: AWS_KEY}]}


@server.tool()
def fail() -> str:
    """Fail with secrets in the error text."""
    raise ToolError(f"cannot reach {EMAIL} with {GITHUB_TOKEN}")


@server.tool()
def hello() -> str:
    """Nothing secret."""
    return "hello"


@server.prompt()
def briefing() -> str:
    """A prompt naming a person."""
    return f"Write to {EMAIL} about key {AWS_KEY}."


@server.resource("vault://card")
def card() -> str:
    """A resource with secrets."""
    return f"owner: {EMAIL}; token: {GITHUB_TOKEN}"


@server.tool()
def caller(ctx: Context) -> dict[str, Any]:
    """What the portal says about the caller in ``_meta`` (built-in servers read their egress list here)."""
    meta: Any = ctx.request_context.meta or {}
    return dict(meta.get("io.dockyard/caller") or {})
