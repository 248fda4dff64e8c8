"""Dockyard's built-in MCP servers.

Each built-in is a normal MCP server in its own package. The portal mounts the ones named here through
the same in-process upstream path a user's ``module = "pkg.mod:server"`` entry takes.
"""

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["BUILTINS", "DEFAULT_ENABLED"]

BUILTINS: Mapping[str, str] = MappingProxyType({})
"""Built-in server name → ``module:attribute`` of its MCP server (or a factory returning one)."""

DEFAULT_ENABLED: tuple[str, ...] = ()
"""Built-ins the portal mounts when the configuration does not mention them."""
