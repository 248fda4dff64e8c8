"""The scopes a token can carry, and the scopes each MCP request needs.

=============  ===================================================================================
``tools:read`` list tools, prompts and resources; read resources, get prompts, complete arguments;
               call tools that declare ``readOnlyHint: true``
``tools:call`` call any tool (policy still decides which)
``code``       use Code Mode on ``/mcp/code`` (``search`` needs ``tools:read`` too, ``execute`` needs
               ``tools:call``)
``admin``      the admin API (``/admin/*``)
=============  ===================================================================================

Scopes narrow what a token may do; the policy (``policies/``) still decides what its principal may do.
A request that needs a scope the token lacks gets 403 ``insufficient_scope`` naming every scope the
request needs (SECURITY.md R3), so a client can step up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import mcp_types as types

__all__ = [
    "DEFAULT_SCOPES",
    "OIDC_SCOPES",
    "SCOPES",
    "can_call",
    "format_scope",
    "parse_scope",
    "scopes_needed",
]

SCOPES: Mapping[str, str] = {
    "tools:read": "See the tools, prompts and resources you may use, and use the read-only ones",
    "tools:call": "Call tools for you, including ones that change things",
    "code": "Run code against your tools (Code Mode)",
    "admin": "Administer this portal: approve held calls, read the audit log",
}
"""The portal's own scopes, with the sentence the consent page shows for each."""

OIDC_SCOPES: Mapping[str, str] = {
    "openid": "Confirm who you are to the application (OpenID Connect)",
    "profile": "Share your user name and groups with the application",
}
"""Scopes of the portal as an OpenID Connect provider."""

DEFAULT_SCOPES = ("tools:read", "tools:call", "code")
"""What a client gets when its request names no scope (never ``admin``)."""

_READ = frozenset({"tools:read"})
_CALL = frozenset({"tools:call"})
_READ_METHODS = frozenset(
    {
        "tools/list",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
    }
)


def parse_scope(text: str | None) -> frozenset[str]:
    """The scopes of a space-separated ``scope`` string."""
    return frozenset(text.split()) if text else frozenset()


def format_scope(scopes: Iterable[str]) -> str:
    """A ``scope`` string, in a stable order: the portal's scopes first, as :data:`SCOPES` lists them."""
    order = {name: i for i, name in enumerate([*SCOPES, *OIDC_SCOPES])}
    return " ".join(sorted(set(scopes), key=lambda s: (order.get(s, len(order)), s)))


def can_call(scopes: frozenset[str], annotations: types.ToolAnnotations | None) -> bool:
    """Whether a token with ``scopes`` may call a tool with these annotations."""
    if "tools:call" in scopes:
        return True
    return "tools:read" in scopes and annotations is not None and annotations.read_only_hint is True


def _needed_for(message: Mapping[str, Any], *, code: bool, read_only: Callable[[str], bool]) -> frozenset[str]:
    method = message.get("method")
    if not isinstance(method, str) or "id" not in message:
        return frozenset()  # a notification or a response: nothing to authorise
    if code:
        if method != "tools/call":
            return frozenset({"code"}) if method in _READ_METHODS else frozenset()
        name = cast(Mapping[str, Any], message.get("params") or {}).get("name")
        return frozenset({"code", "tools:read" if name == "search" else "tools:call"})
    if method in _READ_METHODS:
        return _READ
    if method == "tools/call":
        params = message.get("params")
        name = cast(Mapping[str, Any], params).get("name") if isinstance(params, Mapping) else None
        return _READ if isinstance(name, str) and read_only(name) else _CALL
    return frozenset()


def scopes_needed(body: object, *, code: bool, read_only: Callable[[str], bool]) -> frozenset[str]:
    """Every scope a JSON-RPC message (or batch) sent to ``/mcp`` (or ``/mcp/code``) needs.

    Args:
        body: The parsed request body.
        code: Whether it goes to ``/mcp/code``.
        read_only: Whether the tool with a name declares ``readOnlyHint: true``.
    """
    messages: list[object] = cast(list[object], body) if isinstance(body, list) else [body]
    needed: set[str] = set()
    for message in messages:
        if isinstance(message, Mapping):
            needed |= _needed_for(cast(Mapping[str, Any], message), code=code, read_only=read_only)
    return frozenset(needed)
