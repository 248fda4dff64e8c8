"""The ``sandbox`` built-in server: isolated computers per principal, behind pluggable backends."""

from servers.sandbox._backend import (
    Backend,
    BackendUnavailableError,
    Limits,
    Profile,
    SandboxError,
    SandboxSpec,
    backend_from_name,
)

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "Limits",
    "Profile",
    "SandboxError",
    "SandboxSpec",
    "backend_from_name",
]
