"""The seam where scope policies plug into the choke point.

The portal asks a :class:`Policy` two things: may this principal *see* a catalog entry (listing), and may
it *use* it with these arguments (calling, reading, getting). The portal plugs in the policy engine of
:mod:`portal.policy` (``policies/*.yaml``); :class:`AllowLocal` is what a :class:`~portal.gateway.Gateway`
built without a policy uses: the single local user of auth mode ``none`` may use everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import mcp_types as types

from portal.principal import Principal

__all__ = ["AllowLocal", "Decision", "Limit", "Policy", "Redaction", "Request"]

Method = Literal["tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete"]


@dataclass(frozen=True, slots=True)
class Request:
    """What a policy decides on.

    ``annotations`` are the hints the tool's definition declares (None for prompts, resources and tools
    that declare none); policies may match on them.
    """

    method: Method | Literal["list"]
    target: str
    server: str
    arguments: Mapping[str, Any] | None = None
    annotations: types.ToolAnnotations | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit or quota that applies to a call: at most ``count`` calls per fixed window of ``window`` seconds.

    Calls are counted separately for each distinct value of the ``per`` dimensions (``principal``: the caller's
    subject, ``tool``: the target name, ``server``: its server); an empty ``per`` counts every matching call
    together. Enforced across every portal process sharing the database.
    """

    rule: str
    count: int
    window: float
    per: tuple[Literal["principal", "tool", "server"], ...] = ("principal",)

    def describe(self) -> str:
        """``10 call(s) per minute per principal``; ``... in all`` when every matching call counts together."""
        per = f" per {', '.join(self.per)}" if self.per else " in all"
        return f"{self.count} call(s) per {_duration(self.window)}{per}"


def _duration(seconds: float) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Redaction:
    """Result redaction that applies to a call: text matching ``pattern`` (a regex) becomes ``[REDACTED:name]``."""

    rule: str
    name: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer; ``rule`` names what decided, for the audit log.

    ``needs_approval``: a rule requires an admin's approval before the call may run; ``allowed`` stays
    False until then. On a listing it is informational: the target is listed (``allowed``) but calls to it
    will need approval.
    """

    allowed: bool
    rule: str
    reason: str = ""
    needs_approval: bool = False
    limits: tuple[Limit, ...] = ()
    """Rate limits and quotas an allowed call must fit in before it runs."""
    redactions: tuple[Redaction, ...] = ()
    """What to redact from the result of an allowed call before the caller (or the audit log) sees it."""
    egress: tuple[str, ...] = ()
    """Host globs (``api.github.com``, ``*.example.com``, ``host:port``) the called server may reach on the
    caller's behalf (the sandbox and browser servers read it); empty: no network."""


class Policy(Protocol):
    """Decides who may see and use what."""

    @property
    def version(self) -> str:
        """Names the rules in force; approvals are bound to it."""
        ...

    @property
    def listing_key(self) -> str | None:
        """Equal keys give equal listing decisions for a principal; None when listings may change with time."""
        ...

    def decide(self, principal: Principal, request: Request) -> Decision:
        """Decide one request; ``method == "list"`` asks whether the target may be listed."""
        ...


class AllowLocal:
    """Everything for the local principal of auth mode ``none``; nothing for anyone else (SECURITY.md G1)."""

    version = listing_key = "allow-local"
    _ALLOW = Decision(allowed=True, rule="auth-none:local")
    _DENY = Decision(allowed=False, rule="default-deny", reason="no policy grants this principal anything")

    def decide(self, principal: Principal, request: Request) -> Decision:
        """Allow the local principal; deny everyone else."""
        return self._ALLOW if principal.kind == "local" else self._DENY
