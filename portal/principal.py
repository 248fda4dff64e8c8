"""Who is calling: the identity every request carries into the choke point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LOCAL_PRINCIPAL", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.

    Attributes:
        subject: Stable identifier (user name, service id, ``local``).
        kind: ``user`` (a person), ``service`` (an agent or CI bot) or ``local`` (auth mode ``none``).
        groups: Groups the identity provider asserted.
        client_id: The OAuth client the call came through, when known.
        scopes: Granted OAuth scopes.
    """

    subject: str
    kind: Literal["user", "service", "local"] = "user"
    groups: frozenset[str] = field(default_factory=frozenset[str])
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset[str])

    @property
    def label(self) -> str:
        """``local``, ``user:SUBJECT`` or ``service:SUBJECT``: the caller as policy files name it."""
        return self.subject if self.kind == "local" else f"{self.kind}:{self.subject}"


LOCAL_PRINCIPAL = Principal(subject="local", kind="local")
"""The single caller of a portal running with ``[auth] mode = "none"`` (loopback only)."""
