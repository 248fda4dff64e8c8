"""A small MCP server whose tool list changes on request, mounted in-process by the SDK cache tests.

``toggle_lending`` adds the tool ``lend_book`` (or removes it again) and tells the client the list changed.
"""

from __future__ import annotations

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("shelf")
BOOKS = ["Dune", "Emma", "Ulysses"]


@server.tool()
def list_books() -> list[str]:
    """List the books on the shelf."""
    return BOOKS


def lend_book(title: str) -> str:
    """Lend a book from the shelf to a reader."""
    return f"lent {title}"


@server.tool()
async def toggle_lending(ctx: Context) -> str:
    """Add the tool lend_book, or remove it if it is there."""
    if any(tool.name == "lend_book" for tool in await server.list_tools()):
        server.remove_tool("lend_book")
        state = "off"
    else:
        server.add_tool(lend_book, name="lend_book")
        state = "on"
    await ctx.notify_tools_changed()
    return state
