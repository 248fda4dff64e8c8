"""The policy engine: a loaded policy that decides every request at the choke point.

Semantics (SECURITY.md G1):

- A rule *applies* when the caller holds one of its roles (``*``: anyone), the target's server and name
  match its globs, the tool declares the annotation hints it lists, and its ``when`` condition holds.
- An applying ``deny`` decides; otherwise an applying ``require_approval``; otherwise an applying
  ``allow``; otherwise the default: deny. Rule order never matters.
- A condition that fails to evaluate (a missing argument, a type mismatch) fails closed: it counts as
  holding for ``deny`` and ``require_approval`` and as not holding for ``allow``.
- Listings (``method == "list"``) have no arguments: a condition that reads ``arguments`` or ``request``
  is *deferred*: it cannot hide a target (``deny``) but can show one (``allow``, ``require_approval``),
  so whatever some call may use is listed, and whatever is listed is refused only by a condition on the
  call itself. Without such conditions, listing and calling always agree.

Obligations (``limits``, ``redact`` and ``egress`` entries) match like rules. A call (``tools/call``,
``prompts/get``, ``resources/read``) that is allowed, or that waits for approval, carries every obligation
that applies to it (the union; limits count tool calls only); one whose condition fails to evaluate fails
closed too: a limit or a redaction applies, egress is not granted. Listings carry none.

Rules and obligations are indexed by exact tool name and exact server name, and the candidates for a
``(name, server)`` pair are remembered, so a decision looks at the few entries that can match, not at all of
them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import translate
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

import mcp_types as types

from portal.naming import SEPARATOR
from portal.policy._conditions import Bindings, Condition, ConditionError
from portal.policy._format import Effect
from portal.policy._roles import RoleBook
from portal.policy_seam import Decision, Limit, Redaction, Request
from portal.principal import Principal

if TYPE_CHECKING:
    from portal.policy._explain import Explanation

__all__ = [
    "Case",
    "Glob",
    "Obligation",
    "ObligationResult",
    "Outcome",
    "PolicyEngine",
    "Rule",
    "RuleResult",
    "effect_of",
]

Outcome = Literal["applies", "role", "annotations", "false", "error", "deferred"]
"""How a rule fared: it applies, or the role, the annotations or the condition ruled it out; ``error``: its
condition failed; ``deferred``: its condition needs the call's arguments, which a listing does not have."""

_PRIORITY: dict[Effect, int] = {"deny": 0, "require_approval": 1, "allow": 2}
_OBLIGED = frozenset({"tools/call", "prompts/get", "resources/read"})
ObligationKind = Literal["limit", "redact", "egress"]
_MEMO_LIMIT = 16_384
DEFAULT_DENY = "default-deny"


@dataclass(frozen=True, slots=True)
class Glob:
    """A name pattern: ``*`` any run of characters, ``?`` one, ``[abc]`` one of a set."""

    pattern: str
    literal: bool
    _match: Callable[[str], re.Match[str] | None]

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        """Compile ``pattern`` (case-sensitive, like tool names)."""
        literal = not any(c in pattern for c in "*?[")
        return cls(pattern, literal, re.compile(translate(pattern)).match)

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches the whole pattern."""
        return name == self.pattern if self.literal else self._match(name) is not None


def _targets(servers: tuple[Glob, ...], tools: tuple[Glob, ...], name: str, server: str) -> bool:
    return (not servers or any(g.matches(server) for g in servers)) and (
        not tools or any(g.matches(name) for g in tools)
    )


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """A loaded rule; ``id`` is its name, or ``FILE:LINE`` when it has none."""

    id: str
    file: str
    line: int
    effect: Effect
    roles: frozenset[str] | None
    """None: every caller (``*``)."""
    servers: tuple[Glob, ...]
    tools: tuple[Glob, ...]
    hints: tuple[tuple[str, bool], ...]
    """``(attribute of ToolAnnotations, required value)``."""
    condition: Condition | None
    description: str = ""

    def targets(self, name: str, server: str) -> bool:
        """Whether the rule's server and name globs match (absent globs match anything)."""
        return _targets(self.servers, self.tools, name, server)

    @property
    def sort_key(self) -> tuple[int, str, int]:
        """Deny first, then require_approval, then allow; then file and line (for stable reporting only)."""
        return _PRIORITY[self.effect], self.file, self.line


@dataclass(frozen=True, slots=True, eq=False)
class Obligation:
    """A loaded ``limits``, ``redact`` or ``egress`` entry; ``id`` is its name, or ``FILE:LINE``."""

    id: str
    file: str
    line: int
    kind: ObligationKind
    roles: frozenset[str] | None
    servers: tuple[Glob, ...]
    tools: tuple[Glob, ...]
    hints: tuple[tuple[str, bool], ...]
    condition: Condition | None
    description: str = ""
    limits: tuple[Limit, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    egress: tuple[str, ...] = ()

    def targets(self, name: str, server: str) -> bool:
        """Whether the entry's server and name globs match (absent globs match anything)."""
        return _targets(self.servers, self.tools, name, server)

    @property
    def sort_key(self) -> tuple[int, str, int]:
        """File and line."""
        return 0, self.file, self.line


@dataclass(frozen=True, slots=True)
class ObligationResult:
    """One candidate obligation in an explanation: whether it applies to the call, and why (not)."""

    obligation: Obligation
    outcome: Outcome
    applies: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Case:
    """A test case from a policy file."""

    file: str
    line: int
    name: str
    principal: Principal
    request: Request
    now: datetime | None
    expect: Effect
    listed: bool | None
    limits: frozenset[str] | None = None
    redacts: frozenset[str] | None = None
    egress: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One candidate rule in an explanation: how it fared, and whether it counted towards the decision."""

    rule: Rule
    outcome: Outcome
    counts: bool
    detail: str = ""


def effect_of(decision: Decision) -> Effect:
    """``allow``, ``deny`` or ``require_approval`` (a listed target is ``allow``)."""
    if decision.allowed:
        return "allow"
    return "require_approval" if decision.needs_approval else "deny"


def _counts(effect: Effect, outcome: Outcome) -> bool:
    if outcome == "applies":
        return True
    if outcome == "error":
        return effect != "allow"  # fail closed
    if outcome == "deferred":
        return effect != "deny"  # a listing shows what some call may use
    return False


def _prefix(glob: Glob) -> str | None:
    """The ``PREFIX`` of a name glob that starts with a literal ``PREFIX__`` (``github__list_*``), else None."""
    head = re.split(r"[*?\[]", glob.pattern, maxsplit=1)[0]
    prefix, separator, _ = head.partition(SEPARATOR)
    return prefix if separator else None


class _Entry(Protocol):
    @property
    def servers(self) -> tuple[Glob, ...]: ...
    @property
    def tools(self) -> tuple[Glob, ...]: ...
    @property
    def sort_key(self) -> tuple[int, str, int]: ...
    def targets(self, name: str, server: str) -> bool: ...


_E = TypeVar("_E", bound=_Entry)


class _Index(Generic[_E]):
    """Candidate rules (or obligations) for a ``(name, server)`` pair.

    Each rule is filed under its exact names, else the ``PREFIX__`` its name globs start with, else its exact
    servers, else with the few rules that can match anything; candidates are remembered per pair.
    """

    def __init__(self, rules: Sequence[_E]) -> None:
        self.by_tool: dict[str, list[_E]] = {}
        self.by_prefix: dict[str, list[_E]] = {}
        self.by_server: dict[str, list[_E]] = {}
        self.rest: list[_E] = []
        for rule in rules:
            prefixes = [None if g.literal else _prefix(g) for g in rule.tools]
            if rule.tools and all(g.literal or p for g, p in zip(rule.tools, prefixes, strict=True)):
                for glob, prefix in zip(rule.tools, prefixes, strict=True):
                    if prefix is None:
                        self.by_tool.setdefault(glob.pattern, []).append(rule)
                    else:
                        self.by_prefix.setdefault(prefix, []).append(rule)
            elif rule.servers and all(g.literal for g in rule.servers):
                for glob in rule.servers:
                    self.by_server.setdefault(glob.pattern, []).append(rule)
            else:
                self.rest.append(rule)
        self._memo: dict[tuple[str, str], tuple[_E, ...]] = {}

    def candidates(self, name: str, server: str) -> tuple[_E, ...]:
        key = (name, server)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            found = self._memo[key] = self._find(name, server)
        return found

    def _find(self, name: str, server: str) -> tuple[_E, ...]:
        rules = {id(r): r for r in self.by_tool.get(name, ()) if r.targets(name, server)}
        prefix, separator, _ = name.partition(SEPARATOR)
        if separator:
            rules.update((id(r), r) for r in self.by_prefix.get(prefix, ()) if r.targets(name, server))
        rules.update((id(r), r) for r in self.by_server.get(server, ()) if r.targets(name, server))
        rules.update((id(r), r) for r in self.rest if r.targets(name, server))
        return tuple(sorted(rules.values(), key=lambda r: r.sort_key))


class PolicyEngine:
    """A loaded policy: decides requests, explains decisions, carries its own test cases.

    Implements :class:`portal.policy_seam.Policy`. Build one with :func:`portal.policy.load_policy`.

    Attributes:
        directory: Where the policy was loaded from.
        files: The files it was loaded from.
        rules: Every rule, in file and line order.
        obligations: Every limit, redaction and egress entry, in file and line order.
        cases: Every test case, in file and line order.
        roles: Every declared role.
        version: A digest of the files' names and contents (12 hex digits).
    """

    def __init__(
        self,
        *,
        directory: str,
        files: Sequence[str],
        rules: Sequence[Rule],
        obligations: Sequence[Obligation] = (),
        cases: Sequence[Case],
        roles: Sequence[str],
        book: RoleBook,
        version: str,
    ) -> None:
        self.directory = directory
        self.files = tuple(files)
        self.rules = tuple(rules)
        self.obligations = tuple(obligations)
        self.cases = tuple(cases)
        self.roles = tuple(roles)
        self.version = version
        self.book = book
        self._index = _Index(self.rules)
        self._obligations = _Index(self.obligations) if self.obligations else None
        self._plans: dict[tuple[frozenset[str], str, str, str, _HintKey], _Plan] = {}

    def __repr__(self) -> str:
        shown = f"rules={len(self.rules)} obligations={len(self.obligations)}"
        return f"<PolicyEngine {self.directory!r} version={self.version} {shown}>"

    def decide(self, principal: Principal, request: Request, *, now: datetime | None = None) -> Decision:
        """Decide one request; ``request.method == "list"`` asks whether the target may be listed.

        Args:
            principal: Who asks.
            request: What for.
            now: The time conditions see; default: the current time.
        """
        call = _Call(principal, self.book.roles(principal), request, now)
        for result in self._results(call):
            if result.counts:
                decision = _decision(result.rule, listing=request.method == "list")
                if self._obligations is not None and request.method in _OBLIGED:
                    return self._carry(decision, call)
                return decision
        return _DEFAULT

    def explain(self, principal: Principal, request: Request, *, now: datetime | None = None) -> Explanation:
        """Decide, and say how each candidate rule fared and where the caller's roles come from."""
        from portal.policy._explain import Explanation

        call = _Call(principal, self.book.roles(principal), request, now)
        results = tuple(self._results(call))
        decider = next((r.rule for r in results if r.counts), None)
        decision = _DEFAULT if decider is None else _decision(decider, listing=request.method == "list")
        obligations: tuple[ObligationResult, ...] = ()
        if self._obligations is not None and request.method in _OBLIGED and decider is not None:
            obligations = tuple(self._obligation_results(call))
            decision = _oblige(decision, obligations)
        return Explanation(
            principal=principal,
            request=request,
            decision=decision,
            roles=self.book.sources(principal),
            results=results,
            decider=decider,
            obligations=obligations,
        )

    def _carry(self, decision: Decision, call: _Call) -> Decision:
        """``decision`` with the obligations that apply to the call (what :func:`_oblige` gives, but planned).

        Which obligations without a condition apply depends only on the caller's roles, the target and its
        hints, so that part is worked out once per combination; only conditions are evaluated per call.
        """
        if not (decision.allowed or decision.needs_approval):
            return decision
        request = call.request
        key = (call.roles, request.method, request.target, request.server, _hint_key(request.annotations))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MEMO_LIMIT:
                self._plans.clear()
            plan = self._plans[key] = self._plan(call)
        carried = plan.carried
        if plan.conditional:
            applying = tuple(_applies(entry, call) for entry in plan.conditional)
            carried = plan.with_conditions.get(applying) or plan.merge(applying)
        if carried is _NOTHING:
            return decision
        return Decision(
            allowed=decision.allowed,
            rule=decision.rule,
            reason=decision.reason,
            needs_approval=decision.needs_approval,
            limits=carried.limits,
            redactions=carried.redactions,
            egress=carried.egress,
        )

    def _plan(self, call: _Call) -> _Plan:
        assert self._obligations is not None
        unconditional: list[Obligation] = []
        conditional: list[Obligation] = []
        limited = call.request.method == "tools/call"
        for entry in self._obligations.candidates(call.request.target, call.request.server):
            if entry.kind == "limit" and not limited:
                continue  # limits count tool calls only
            if entry.roles is not None and entry.roles.isdisjoint(call.roles):
                continue
            if entry.hints and not _hints_match(entry.hints, call.request.annotations):
                continue
            (unconditional if entry.condition is None else conditional).append(entry)
        return _Plan(_Carried.of(unconditional), tuple(conditional))

    def _obligation_results(self, call: _Call) -> Iterator[ObligationResult]:
        """How each candidate obligation fares for a call; failing conditions fail closed."""
        assert self._obligations is not None
        request = call.request
        for entry in self._obligations.candidates(request.target, request.server):
            if entry.kind == "limit" and request.method != "tools/call":
                continue  # limits count tool calls only
            if entry.roles is not None and entry.roles.isdisjoint(call.roles):
                yield ObligationResult(entry, "role", False)
            elif entry.hints and not _hints_match(entry.hints, request.annotations):
                yield ObligationResult(entry, "annotations", False)
            elif entry.condition is None:
                yield ObligationResult(entry, "applies", True)
            else:
                yield _evaluate(entry, call)

    def _results(self, call: _Call) -> Iterator[RuleResult]:
        """How each candidate fares, deciding rules first; :meth:`decide` stops at the first that counts."""
        request = call.request
        roles = call.roles
        listing = request.method == "list"
        annotations = request.annotations
        for rule in self._index.candidates(request.target, request.server):
            if rule.roles is not None and rule.roles.isdisjoint(roles):
                yield RuleResult(rule, "role", False)
                continue
            if rule.hints and not _hints_match(rule.hints, annotations):
                yield RuleResult(rule, "annotations", False)
                continue
            condition = rule.condition
            if condition is None:
                yield RuleResult(rule, "applies", True)
            elif listing and condition.call_time:
                yield RuleResult(rule, "deferred", _counts(rule.effect, "deferred"))
            else:
                try:
                    holds = condition.holds(call.bindings())
                except ConditionError as error:
                    yield RuleResult(rule, "error", _counts(rule.effect, "error"), str(error))
                else:
                    yield RuleResult(rule, "applies" if holds else "false", holds)


class _Call:
    """One decision's inputs; the CEL bindings are made once, when a rule or obligation first needs them."""

    __slots__ = ("_bindings", "now", "principal", "request", "roles")

    def __init__(self, principal: Principal, roles: frozenset[str], request: Request, now: datetime | None) -> None:
        self.principal = principal
        self.roles = roles
        self.request = request
        self.now = now
        self._bindings: Bindings | None = None

    def bindings(self) -> Bindings:
        if self._bindings is None:
            request = self.request
            self._bindings = Bindings(
                self.principal,
                self.roles,
                method=request.method,
                target=request.target,
                server=request.server,
                annotations=request.annotations,
                arguments=request.arguments,
                now=self.now,
            )
        return self._bindings


def _applies(entry: Obligation, call: _Call) -> bool:
    """Whether a conditional obligation applies (:func:`_evaluate` without the explanation)."""
    assert entry.condition is not None
    try:
        return entry.condition.holds(call.bindings())
    except ConditionError:
        return entry.kind != "egress"


def _evaluate(entry: Obligation, call: _Call) -> ObligationResult:
    assert entry.condition is not None
    try:
        holds = entry.condition.holds(call.bindings())
    except ConditionError as error:  # fail closed: limits and redactions apply, egress is not granted
        return ObligationResult(entry, "error", entry.kind != "egress", str(error))
    return ObligationResult(entry, "applies" if holds else "false", holds)


_HintKey = tuple[bool | None, bool | None, bool | None, bool | None] | None


def _hint_key(annotations: types.ToolAnnotations | None) -> _HintKey:
    if annotations is None:
        return None
    a = annotations
    return a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint


@dataclass(frozen=True, slots=True)
class _Carried:
    """The union of some obligations: limits and redactions without repeats, egress sorted."""

    limits: tuple[Limit, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    egress: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[Obligation]) -> _Carried:
        limits: list[Limit] = []
        redactions: list[Redaction] = []
        egress: list[str] = []
        for entry in entries:
            limits += entry.limits
            redactions += entry.redactions
            egress += entry.egress
        return cls._build(limits, redactions, egress)

    @classmethod
    def _build(cls, limits: Iterable[Limit], redactions: Iterable[Redaction], egress: Iterable[str]) -> _Carried:
        """Sorted, without repeats (a pattern given by two entries is named after the first entry's name)."""
        unique: dict[tuple[str, str], Redaction] = {}
        for redaction in sorted(redactions, key=lambda r: (r.name, r.rule, r.pattern)):
            unique.setdefault((redaction.name, redaction.pattern), redaction)
        carried = cls(
            tuple(sorted(set(limits), key=lambda x: (x.rule, x.window, x.count, x.per))),
            tuple(unique.values()),
            tuple(sorted(set(egress))),
        )
        return carried if carried.limits or carried.redactions or carried.egress else _NOTHING

    def merge(self, other: _Carried) -> _Carried:
        return _Carried._build(
            (*self.limits, *other.limits), (*self.redactions, *other.redactions), (*self.egress, *other.egress)
        )


_NOTHING = _Carried()


@dataclass(frozen=True, slots=True)
class _Plan:
    carried: _Carried
    """What the obligations without a condition give."""
    conditional: tuple[Obligation, ...]
    """Obligations whose condition decides, evaluated per call."""
    with_conditions: dict[tuple[bool, ...], _Carried] = field(default_factory=dict[tuple[bool, ...], _Carried])
    """What the plan gives for each combination of conditions that held, once seen."""

    def merge(self, applying: tuple[bool, ...]) -> _Carried:
        extra = _Carried.of(entry for entry, applies in zip(self.conditional, applying, strict=True) if applies)
        merged = self.carried if extra is _NOTHING else extra if self.carried is _NOTHING else self.carried.merge(extra)
        self.with_conditions[applying] = merged
        return merged


def _hints_match(hints: tuple[tuple[str, bool], ...], annotations: types.ToolAnnotations | None) -> bool:
    if annotations is None:
        return False
    return all(getattr(annotations, attribute) is value for attribute, value in hints)


_DEFAULT = Decision(allowed=False, rule=DEFAULT_DENY, reason="no policy rule allows it")


def _oblige(decision: Decision, results: Iterable[ObligationResult]) -> Decision:
    """``decision`` (of a call that is allowed or waits for approval) with the obligations that apply."""
    if not (decision.allowed or decision.needs_approval):
        return decision
    carried = _Carried.of(r.obligation for r in results if r.applies)
    if carried is _NOTHING:
        return decision
    return replace(decision, limits=carried.limits, redactions=carried.redactions, egress=carried.egress)


def _decision(rule: Rule, *, listing: bool) -> Decision:
    if rule.effect == "allow":
        return Decision(allowed=True, rule=rule.id)
    if rule.effect == "deny":
        return Decision(allowed=False, rule=rule.id, reason=rule.description)
    if listing:
        return Decision(allowed=True, rule=rule.id, needs_approval=True)
    return Decision(allowed=False, rule=rule.id, reason=rule.description, needs_approval=True)
