"""A small MCP server whose tools declare annotations, mounted in-process by the end-to-end policy test."""

from __future__ import annotations

import mcp_types as types
from mcp.server import MCPServer

server = MCPServer("notes")
NOTES: dict[str, str] = {"welcome": "hello"}


@server.tool(annotations=types.ToolAnnotations(read_only_hint=True))
def read_note(name: str) -> str:
    """Read a note."""
    return NOTES.get(name, "")


@server.tool(annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=False))
def write_note(name: str, text: str) -> str:
    """Write a note."""
    NOTES[name] = text
    return "written"


@server.tool(annotations=types.ToolAnnotations(destructive_hint=True))
def wipe_notes() -> str:
    """Delete every note but the welcome note."""
    for name in set(NOTES) - {"welcome"}:
        del NOTES[name]
    return "wiped"


@server.tool()
def delete_note(name: str) -> str:
    """Delete one note (declares no annotations)."""
    NOTES.pop(name, None)
    return "deleted"


@server.tool()
def export_secrets() -> str:
    """A tool the test policy denies."""
    return "nothing to see"
