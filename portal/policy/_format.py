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

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["HINTS", "CaseSpec", "Effect", "Grant", "PolicyFile", "Principals", "RoleSpec", "RuleSpec", "schema"]

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


class RuleSpec(_Strict):
    """Allow, deny or require approval for what matches. Every key present must match."""

    name: str = Field(
        default="", pattern=NAME_PATTERN, description="Shown in decisions, the audit log and explanations."
    )
    description: str = Field(default="", description="Why the rule exists; a denied caller sees it.")
    effect: Effect = Field(description="Deny wins over require_approval, which wins over allow.")
    roles: list[RoleRef] = Field(min_length=1, description="Roles the rule applies to; `*` is every caller.")
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
    tests: list[CaseSpec] = Field(default_factory=list[CaseSpec])


def schema() -> dict[str, Any]:
    """The JSON Schema of a policy file (``policies/policy.schema.json`` is this, pretty-printed)."""
    generated = PolicyFile.model_json_schema(by_alias=True)
    generated["properties"]["roles"]["additionalProperties"] = False
    listed = generated["$defs"]["CaseSpec"]["properties"]["listed"]
    listed.pop("anyOf", None)
    listed.pop("default", None)
    listed["type"] = "boolean"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **generated,
        "title": "Dockyard policy file",
    }
