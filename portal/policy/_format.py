"""The policy file format (``policies/*.yaml``), as pydantic models; the JSON Schema is generated from them.

One file::

    version: 1
    principals:              # who holds which roles
      local: {roles: [owner]}            # the single caller of [auth] mode = "none"
      users: {alice: {roles: [analyst]}}
      groups: {engineering: {roles: [engineer]}}
      clients: {"https://ide.example/client.json": {roles: [ide]}}
      services: {ci-bot: {roles: [ci]}}
    roles:
      analyst: {description: Reads, never writes.}
    rules:                   # order never matters: deny > require_approval > allow > default deny
      - name: analysts-read
        effect: allow
        roles: [analyst]
        annotations: {readOnlyHint: true}
        when: 'now.getHours() >= 7'
    tests:                   # cases ``dockyard policy test`` runs against the whole directory
      - {as: "user:alice", tool: github__list_issues, annotations: {readOnlyHint: true}, expect: allow}
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portal.redaction import PATTERNS, PatternName

__all__ = [
    "HINTS",
    "CaseSpec",
    "Effect",
    "EgressSpec",
    "Grant",
    "LimitSpec",
    "MatchSpec",
    "PolicyFile",
    "Principals",
    "RedactSpec",
    "RoleSpec",
    "RuleSpec",
    "parse_rate",
    "schema",
]

Effect = Literal["allow", "deny", "require_approval"]
Hint = Literal["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"]
HINTS: dict[str, str] = {
    "readOnlyHint": "read_only_hint",
    "destructiveHint": "destructive_hint",
    "idempotentHint": "idempotent_hint",
    "openWorldHint": "open_world_hint",
}
"""Annotation hints a rule may match, with their attribute on ``mcp_types.ToolAnnotations``."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RULE = "a letter or digit, then up to 63 letters, digits, '_', '.' or '-'"
PRINCIPAL_PATTERN = r"^(local|(user|service):.+)$"
PRINCIPAL_RULE = "'local', 'user:NAME' or 'service:NAME'"

Name = Annotated[str, Field(pattern=NAME_PATTERN, description=f"A name: {NAME_RULE}.")]
RoleRef = Annotated[
    str,
    Field(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$", description="A role declared under `roles`, or `*`."),
]
Glob = Annotated[str, Field(min_length=1, description="A glob: `*` any run of characters, `?` one, `[abc]` a set.")]
Hints = dict[Hint, bool]
Method = Literal["tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class Grant(_Strict):
    """Roles given to one identity."""

    roles: list[Name] = Field(min_length=1, description="Roles this identity holds (declared under `roles`).")
    description: str = Field(default="", description="Who this is, for people reading the file.")


class Principals(_Strict):
    """Who holds which roles. A caller holds the union of the roles of everything it matches."""

    local: Grant | None = Field(
        default=None, description='The single caller of `[auth] mode = "none"` (never an authenticated user).'
    )
    users: dict[str, Grant] = Field(default_factory=dict[str, Grant], description="People, by subject.")
    groups: dict[str, Grant] = Field(
        default_factory=dict[str, Grant], description="Groups the identity provider asserts for a caller."
    )
    clients: dict[str, Grant] = Field(
        default_factory=dict[str, Grant],
        description="OAuth clients, by client id: roles of every call made through that client.",
    )
    services: dict[str, Grant] = Field(
        default_factory=dict[str, Grant], description="Service principals (agents, CI bots), by subject."
    )


class RoleSpec(_Strict):
    """A role; rules grant or deny to roles."""

    description: str = Field(default="", description="What the role is for.")


class MatchSpec(_Strict):
    """What a rule, limit, redaction or egress entry applies to. Every key present must match."""

    name: str = Field(
        default="", pattern=NAME_PATTERN, description="Shown in decisions, the audit log and explanations."
    )
    description: str = Field(default="", description="Why the entry exists; a refused caller sees it.")
    roles: list[RoleRef] = Field(min_length=1, description="Roles the entry applies to; `*` is every caller.")
    servers: list[Glob] = Field(default_factory=list[str], description="Server names (globs); absent: any.")
    tools: list[Glob] = Field(
        default_factory=list[str],
        description="Names clients see (globs): tool and prompt names (`SERVER__name`), resource URIs; absent: any.",
    )
    annotations: Hints = Field(
        default_factory=dict[Hint, bool],
        description="Tool annotation hints that must be declared with these values (undeclared hints never match).",
    )
    when: str = Field(
        default="",
        description="A CEL condition over principal, tool, arguments, request and now; absent: always.",
    )


class RuleSpec(MatchSpec):
    """Allow, deny or require approval for what matches. Every key present must match."""

    effect: Effect = Field(description="Deny wins over require_approval, which wins over allow.")


def parse_rate(text: str) -> tuple[int, int]:
    """``"10/minute"`` as ``(10, 60)``: a count and a window in seconds.

    Raises:
        ValueError: ``text`` is not ``COUNT/UNIT`` or ``COUNT/N UNITS``.
    """
    found = _RATE.fullmatch(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not a rate: write COUNT/UNIT, e.g. '10/minute', '1000/day' or '5/30s' "
            "(units: s, second, m, minute, h, hour, d, day, week)"
        )
    count, every, unit = int(found[1]), int(found[2] or 1), found[3]
    return count, every * _UNITS[unit.removesuffix("s") if len(unit) > 3 else unit]


_UNITS = dict(
    s=1, sec=1, second=1, m=60, min=60, minute=60, h=3600, hour=3600, d=86400, day=86400, w=604800, week=604800
)
RATE_PATTERN = (
    r"^ *([1-9][0-9]{0,9}) */ *([1-9][0-9]{0,6})? *(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?|w|weeks?) *$"
)
_RATE = re.compile(RATE_PATTERN.strip("^$"))
Rate = Annotated[
    str,
    Field(
        description="At most COUNT calls per fixed window: `10/minute`, `100/hour`, `1000/day`, `5/30s`.",
        json_schema_extra={"pattern": RATE_PATTERN},
    ),
]
Per = Literal["principal", "tool", "server"]


class LimitSpec(MatchSpec):
    """A rate limit or quota on the calls that match, counted in the database across every portal process."""

    rate: Rate = Field(default="", description="A short-window limit, e.g. `10/minute`.")
    quota: Rate = Field(default="", description="A long-window allowance, e.g. `1000/day`.")
    per: list[Per] = Field(
        default_factory=lambda: ["principal"],
        description="Count separately per caller, tool and/or server; `[]` counts every matching call together.",
    )

    @field_validator("rate", "quota")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value:
            parse_rate(value)
        return value

    @model_validator(mode="after")
    def _some(self) -> LimitSpec:
        if not self.rate and not self.quota:
            raise ValueError("give 'rate' (e.g. '10/minute'), 'quota' (e.g. '1000/day') or both")
        if self.rate and self.quota and parse_rate(self.rate)[1] == parse_rate(self.quota)[1]:
            raise ValueError(f"'rate' ({self.rate}) and 'quota' ({self.quota}) have the same window; keep one")
        return self


class RedactSpec(MatchSpec):
    """What to replace with `[REDACTED:NAME]` in the results of the calls that match."""

    patterns: list[PatternName] = Field(
        default_factory=list[PatternName], description="Built-in patterns: " + ", ".join(f"`{p}`" for p in PATTERNS)
    )
    regex: dict[Annotated[str, Field(pattern=NAME_PATTERN)], str] = Field(
        default_factory=dict[str, str],
        description="Your own patterns, by name: Python regular expressions (`(?i)` for any case).",
    )

    @model_validator(mode="after")
    def _some(self) -> RedactSpec:
        if not self.patterns and not self.regex:
            raise ValueError(f"give 'patterns' (built-in: {', '.join(PATTERNS)}) or 'regex' (your own), or both")
        return self


HOST_PATTERN = (
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[0-9]{1,5})?$"
    r"|^\[[0-9a-f:.]+\](:[0-9]{1,5})?$"
)
_HOST = re.compile(HOST_PATTERN)
_PORT = re.compile(r":([0-9]+)$")
Host = Annotated[
    str,
    Field(
        description="A host (`api.github.com`), every subdomain of one (`*.example.com`), an IP address, "
        "each with an optional `:port`.",
        json_schema_extra={"pattern": HOST_PATTERN},
    ),
]


class EgressSpec(MatchSpec):
    """Hosts the servers of the calls that match may reach on the caller's behalf (sandbox, browser)."""

    hosts: list[Host] = Field(min_length=1, description="Hosts; anything else stays unreachable.")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            port = _PORT.search(host)
            if _HOST.match(host) is None or (port is not None and not 0 < int(port[1]) < 65536):
                lower = " (host names are lower case)" if host.lower() != host else ""
                raise ValueError(
                    f"{host!r} is not a host{lower}: write 'api.github.com', '*.example.com', '10.0.0.5' or "
                    "'127.0.0.1:8080' (no scheme, path or bare '*')"
                )
        return hosts


class CaseSpec(_Strict):
    """A test case: this principal making this call gets this decision."""

    name: str = Field(default="", description="What the case shows.")
    as_: str = Field(alias="as", pattern=PRINCIPAL_PATTERN, description=f"The caller: {PRINCIPAL_RULE}.")
    groups: list[str] = Field(default_factory=list[str], description="Groups the caller belongs to.")
    client: str = Field(default="", description="The OAuth client id the call comes through.")
    scopes: list[str] = Field(default_factory=list[str], description="Granted OAuth scopes.")
    tool: str = Field(min_length=1, description="The name clients see (tool, prompt, or resource URI).")
    server: str = Field(default="", description="Its server; default: the part of `tool` before `__`.")
    method: Method = Field(default="tools/call", description="The MCP method of the call.")
    annotations: Hints = Field(default_factory=dict[Hint, bool], description="Hints the tool declares.")
    arguments: dict[str, Any] = Field(default_factory=dict[str, Any], description="The call's arguments.")
    now: str = Field(
        default="",
        description="The time of the call (ISO 8601 with an offset); default: the current time.",
        json_schema_extra={"format": "date-time"},
    )
    expect: Effect = Field(description="The decision the call must get.")
    listed: bool | None = Field(default=None, description="Whether the target must (true) or must not be listed.")
    limits: list[str] | None = Field(
        default=None, description="The names of exactly the limits that must apply to the call (`[]`: none)."
    )
    redacts: list[str] | None = Field(
        default=None, description="Exactly the redaction patterns (built-in or `regex` names) the call's result gets."
    )
    egress: list[str] | None = Field(default=None, description="Exactly the hosts the call's server may reach.")

    @field_validator("now")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if value:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"must be an ISO 8601 time such as '2026-03-02T09:30:00Z', got {value!r}") from None
            if parsed.tzinfo is None:
                raise ValueError(f"needs an offset ('Z' or '+01:00'), got {value!r}")
        return value


class PolicyFile(_Strict):
    """One policy file. All files of a directory form one policy; names are shared between them."""

    version: Literal[1] = Field(description="The format version; 1.")
    description: str = Field(default="", description="What this file is about.")
    principals: Principals = Field(default_factory=Principals)
    roles: dict[Annotated[str, Field(pattern=NAME_PATTERN)], RoleSpec] = Field(
        default_factory=dict[str, RoleSpec], description="Roles this file declares (each declared once)."
    )
    rules: list[RuleSpec] = Field(default_factory=list[RuleSpec])
    limits: list[LimitSpec] = Field(
        default_factory=list[LimitSpec], description="Rate limits and quotas on the calls an entry matches."
    )
    redact: list[RedactSpec] = Field(
        default_factory=list[RedactSpec], description="What to redact from the results of the calls an entry matches."
    )
    egress: list[EgressSpec] = Field(
        default_factory=list[EgressSpec], description="Hosts the sandbox and browser servers may reach for a call."
    )
    tests: list[CaseSpec] = Field(default_factory=list[CaseSpec])


_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def schema() -> dict[str, Any]:
    """The JSON Schema of a policy file (``policies/policy.schema.json`` is this, pretty-printed)."""
    generated = PolicyFile.model_json_schema(by_alias=True)
    generated["properties"]["roles"]["additionalProperties"] = False
    cases = generated["$defs"]["CaseSpec"]["properties"]
    for name, shape in (("listed", {"type": "boolean"}), *((n, _STRINGS) for n in ("limits", "redacts", "egress"))):
        cases[name].pop("anyOf", None)
        cases[name].pop("default", None)
        cases[name].update(shape)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **generated,
        "title": "Dockyard policy file",
    }
