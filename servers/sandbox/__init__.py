"""The ``sandbox`` built-in server: isolated computers per principal, behind pluggable backends.

``create_server(options, data_dir=...)`` builds the MCP server; the portal mounts it for
``[servers.NAME] builtin = "sandbox"``. Backends implement :class:`Backend` (see ``_backend.py`` for the
contract a box must meet).
"""

from servers.sandbox._backend import (
    Backend,
    BackendUnavailableError,
    Limits,
    Profile,
    SandboxError,
    SandboxSpec,
    backend_from_name,
)
from servers.sandbox._server import CALLER_META, create_server

__all__ = [
    "CALLER_META",
    "Backend",
    "BackendUnavailableError",
    "Limits",
    "Profile",
    "SandboxError",
    "SandboxSpec",
    "backend_from_name",
    "create_server",
]
