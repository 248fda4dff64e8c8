"""Who holds which roles: the ``principals`` sections of every file, merged.

A caller holds the union of the roles granted to it by kind and subject (``users``, ``services``, or
``local`` for the single caller of auth mode ``none``), to each of its groups, and to the OAuth client it
calls through. ``local`` is a kind of its own: an authenticated user whose subject happens to be
``local`` gets nothing from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from portal.policy._errors import PrincipalSpecError
from portal.principal import LOCAL_PRINCIPAL, Principal

__all__ = ["RoleBook", "RoleSource", "parse_principal"]

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class RoleSource:
    """Where a grant was written: ``groups.engineering`` in ``engineer.yaml`` line 12."""

    key: str
    file: str
    line: int


@dataclass
class RoleBook:
    """Grants by kind of identity: ``{"users": {"alice": {"analyst": source}}}``."""

    local: dict[str, RoleSource] = field(default_factory=dict[str, RoleSource])
    users: dict[str, dict[str, RoleSource]] = field(default_factory=dict[str, dict[str, RoleSource]])
    services: dict[str, dict[str, RoleSource]] = field(default_factory=dict[str, dict[str, RoleSource]])
    groups: dict[str, dict[str, RoleSource]] = field(default_factory=dict[str, dict[str, RoleSource]])
    clients: dict[str, dict[str, RoleSource]] = field(default_factory=dict[str, dict[str, RoleSource]])
    _cache: dict[Principal, frozenset[str]] = field(default_factory=dict[Principal, frozenset[str]], repr=False)

    def sources(self, principal: Principal) -> dict[str, list[RoleSource]]:
        """Each role ``principal`` holds, with the grants that gave it."""
        found: dict[str, list[RoleSource]] = {}

        def add(grants: Mapping[str, RoleSource] | None) -> None:
            for role, source in (grants or {}).items():
                found.setdefault(role, []).append(source)

        if principal.kind == "local":
            add(self.local)
        elif principal.kind == "user":
            add(self.users.get(principal.subject))
        else:
            add(self.services.get(principal.subject))
        for group in sorted(principal.groups):
            add(self.groups.get(group))
        if principal.client_id is not None:
            add(self.clients.get(principal.client_id))
        return found

    def roles(self, principal: Principal) -> frozenset[str]:
        """The roles ``principal`` holds (cached per principal)."""
        roles = self._cache.get(principal)
        if roles is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            roles = self._cache[principal] = frozenset(self.sources(principal))
        return roles


def parse_principal(
    text: str,
    *,
    groups: frozenset[str] = frozenset(),
    client_id: str | None = None,
    scopes: frozenset[str] = frozenset(),
) -> Principal:
    """A principal from ``local``, ``user:NAME`` or ``service:NAME`` (``--as`` and test cases).

    Raises:
        PrincipalSpecError: ``text`` is none of those.
    """
    if text == "local":
        if groups or client_id or scopes:
            return Principal(
                subject=LOCAL_PRINCIPAL.subject, kind="local", groups=groups, client_id=client_id, scopes=scopes
            )
        return LOCAL_PRINCIPAL
    kind, _, subject = text.partition(":")
    if kind not in ("user", "service") or not subject:
        raise PrincipalSpecError(f"a principal is 'local', 'user:NAME' or 'service:NAME', got {text!r}")
    return Principal(
        subject=subject,
        kind="user" if kind == "user" else "service",
        groups=groups,
        client_id=client_id,
        scopes=scopes,
    )
