"""Dockyard's built-in MCP servers.

Each built-in is a normal MCP server in its own package. The portal mounts the ones named here through
the same in-process upstream path a user's ``module = "pkg.mod:server"`` entry takes.
"""

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["BUILTINS", "DEFAULT_ENABLED"]

BUILTINS: Mapping[str, str] = MappingProxyType({"sandbox": "servers.sandbox:create_server"})
"""Built-in server name → ``module:attribute`` of its MCP server, or of a factory returning one.

A factory may take ``options`` (the entry's ``options`` table) and ``data_dir`` (the portal's data
directory) as keyword arguments; a zero-argument factory works too."""

DEFAULT_ENABLED: tuple[str, ...] = ()
"""Built-ins the portal mounts when the configuration does not mention them."""
