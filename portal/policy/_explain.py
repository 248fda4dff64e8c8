"""Why a decision came out as it did: ``dockyard policy explain`` and failing policy tests print this."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from portal.policy._engine import DEFAULT_DENY, Obligation, ObligationResult, Rule, RuleResult, effect_of
from portal.policy._format import HINTS, Effect
from portal.policy._roles import RoleSource
from portal.policy_seam import Decision, Request
from portal.principal import Principal

__all__ = ["Explanation"]

_HINT_NAMES = {attribute: hint for hint, attribute in HINTS.items()}


def _where(rule: Rule | Obligation) -> str:
    return f"{PurePath(rule.file).name}:{rule.line}"


def _hints(rule: Rule) -> str:
    return ", ".join(f"{_HINT_NAMES[a]}={str(v).lower()}" for a, v in rule.hints)


def _outcome(result: RuleResult) -> str:
    rule = result.rule
    match result.outcome:
        case "applies":
            return "applies"
        case "role":
            return f"caller holds none of its roles ({', '.join(sorted(rule.roles or ()))})"
        case "annotations":
            return f"the tool does not declare {_hints(rule)}"
        case "false":
            return "its condition is false"
        case "error":
            closed = "counts: fails closed" if result.counts else "does not apply"
            return f"its condition failed ({result.detail}); {closed}"
        case "deferred":
            counted = "may show the target" if result.counts else "cannot hide the target"
            return f"its condition reads the call, which a listing does not have; {counted}"


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision with the rules that could have made it.

    Attributes:
        principal: Who asked.
        request: What for.
        decision: The decision (the same :meth:`PolicyEngine.decide` gives).
        roles: Each role the caller holds, with the grants that gave it.
        results: Every rule whose names match the target, deciding rules first.
        decider: The rule that decided, or None for the default deny.
        obligations: For a call that is allowed or waits for approval: every limit, redaction and egress
            entry whose names match, and whether it applies.
    """

    principal: Principal
    request: Request
    decision: Decision
    roles: Mapping[str, Sequence[RoleSource]]
    results: tuple[RuleResult, ...]
    decider: Rule | None
    obligations: tuple[ObligationResult, ...] = ()

    @property
    def effect(self) -> Effect:
        """``allow``, ``deny`` or ``require_approval``; for a listing, ``allow`` means listed."""
        return effect_of(self.decision)

    def render(self) -> str:
        """The explanation as text for people."""
        request, decision = self.request, self.decision
        listing = request.method == "list"
        if self.decider is None:
            verdict = f"{'not listed' if listing else 'deny'} (default: {decision.reason})"
        else:
            shown = ("listed" if decision.allowed else "not listed") if listing else self.effect
            verdict = f"{shown} by rule {decision.rule!r} ({_where(self.decider)})"
        lines = [f"decision: {verdict}"]
        if decision.reason and self.decider is not None:
            lines.append(f"          {decision.reason}")
        p = self.principal
        extra = [f"groups: {', '.join(sorted(p.groups))}"] if p.groups else []
        extra += [f"client: {p.client_id}"] if p.client_id else []
        lines.append(f"caller:   {p.label}" + (f" ({'; '.join(extra)})" if extra else ""))
        if self.roles:
            for role, sources in sorted(self.roles.items()):
                given = ", ".join(f"{s.key} in {PurePath(s.file).name}:{s.line}" for s in sources)
                lines.append(f"role:     {role} (from {given})")
        else:
            lines.append("roles:    none (no grant in the policy matches this caller)")
        lines.append(f"request:  {request.method} {request.target} (server {request.server})")
        if request.annotations is not None:
            declared = request.annotations.model_dump(by_alias=True, exclude_none=True)
            lines.append(f"          annotations: {json.dumps(declared, sort_keys=True)}")
        if request.arguments:
            lines.append(f"          arguments: {json.dumps(dict(request.arguments), sort_keys=True, default=str)}")
        if not self.results:
            lines.append("rules:    none has servers and tools that match this target")
        else:
            lines.append("rules whose servers and tools match, deciding rules first:")
            width = max(len(r.rule.id) for r in self.results)
            for result in self.results:
                mark = "=>" if result.rule is self.decider else "  "
                rule = result.rule
                lines.append(f"  {mark} {rule.effect:<16} {rule.id:<{width}}  {_where(rule):<20} {_outcome(result)}")
        if self.decider is None and decision.rule == DEFAULT_DENY:
            lines.append("nothing allows this, so it is denied (deny by default)")
        lines += _obligation_lines(self.obligations)
        return "\n".join(lines)


def _what(entry: Obligation) -> str:
    if entry.kind == "limit":
        return "; ".join(limit.describe() for limit in entry.limits)
    if entry.kind == "redact":
        return "redacts " + ", ".join(r.name for r in entry.redactions)
    return "may reach " + ", ".join(entry.egress)


def _obligation_lines(results: tuple[ObligationResult, ...]) -> list[str]:
    if not results:
        return []
    lines = ["limits, redactions and egress whose servers and tools match:"]
    width = max(len(r.obligation.id) for r in results)
    for result in results:
        entry = result.obligation
        mark = "=>" if result.applies else "  "
        match result.outcome:
            case "applies":
                why = "applies"
            case "error":
                closed = "applies: fails closed" if result.applies else "not granted: fails closed"
                why = f"its condition failed ({result.detail}); {closed}"
            case "role":
                why = f"caller holds none of its roles ({', '.join(sorted(entry.roles or ()))})"
            case "annotations":
                hints = ", ".join(f"{_HINT_NAMES[a]}={str(v).lower()}" for a, v in entry.hints)
                why = f"the tool does not declare {hints}"
            case _:
                why = "its condition is false"
        lines.append(f"  {mark} {entry.kind:<16} {entry.id:<{width}}  {_where(entry):<20} {_what(entry)}; {why}")
    return lines
