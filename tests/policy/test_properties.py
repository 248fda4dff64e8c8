"""Property tests over generated policies (SECURITY.md G1):

- deny by default: nothing is allowed or put up for approval unless some allow/approval rule applies;
- an explicit deny wins, whatever else applies and wherever the rules sit;
- rule and file order never change a decision;
- listing and calling agree: whatever a call may use is listed, and whatever is not listed no call may use;
  without conditions on the call itself, the listing is exactly what calls may use.

Each generated policy is written as YAML and loaded like any other, and compared with a small model of
the semantics written independently of the engine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import mcp_types as types
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.policy import PolicyEngine, effect_of, load_policy
from portal.policy_seam import Request
from portal.principal import LOCAL_PRINCIPAL, Principal

ROLES = ["r0", "r1", "r2"]
TOOLS = [("a__x", "a"), ("a__y", "a"), ("b__x", "b"), ("b__z", "b")]
HINTS = {"readOnlyHint": "read_only_hint", "destructiveHint": "destructive_hint"}
PRINCIPALS = [
    LOCAL_PRINCIPAL,
    Principal("u0", groups=frozenset({"g0"})),
    Principal("u1", groups=frozenset({"g1"})),
    Principal("u2"),
    Principal("s0", kind="service"),
]


@dataclass(frozen=True)
class Cond:
    """A CEL condition and what it means: True, False, or None when evaluating it fails."""

    cel: str
    meaning: Callable[[Principal, Request], bool | None]
    call_time: bool


def _n(request: Request) -> Any:
    return (request.arguments or {}).get("n")


CONDITIONS = [
    Cond("true", lambda p, r: True, False),
    Cond("false", lambda p, r: False, False),
    Cond('principal.subject == "u0"', lambda p, r: p.subject == "u0", False),
    Cond('"g1" in principal.groups', lambda p, r: "g1" in p.groups, False),
    Cond('tool.server == "a"', lambda p, r: r.server == "a", False),
    Cond(
        "tool.annotations.readOnlyHint == true",
        lambda p, r: r.annotations is not None and r.annotations.read_only_hint is True,
        False,
    ),
    Cond("arguments.n > 3", lambda p, r: None if _n(r) is None else _n(r) > 3, True),
    Cond("has(arguments.n) && arguments.n < 2", lambda p, r: _n(r) is not None and _n(r) < 2, True),
    Cond('request.method == "tools/call"', lambda p, r: r.method == "tools/call", True),
]


@dataclass(frozen=True)
class GenRule:
    effect: str
    roles: tuple[str, ...]
    servers: tuple[str, ...]
    tools: tuple[str, ...]
    hints: tuple[tuple[str, bool], ...]
    cond: Cond | None

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"effect": self.effect, "roles": list(self.roles)}
        if self.servers:
            spec["servers"] = list(self.servers)
        if self.tools:
            spec["tools"] = list(self.tools)
        if self.hints:
            spec["annotations"] = dict(self.hints)
        if self.cond is not None:
            spec["when"] = self.cond.cel
        return spec


rules_strategy = st.builds(
    GenRule,
    effect=st.sampled_from(["allow", "deny", "require_approval"]),
    roles=st.one_of(st.just(("*",)), st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True).map(tuple)),
    servers=st.lists(st.sampled_from(["a", "b", "*", "?"]), max_size=2, unique=True).map(tuple),
    tools=st.lists(st.sampled_from(["a__x", "b__x", "a__*", "*__x", "*", "b__[xz]"]), max_size=2, unique=True).map(
        tuple
    ),
    hints=st.dictionaries(st.sampled_from(list(HINTS)), st.booleans(), max_size=2).map(
        lambda d: tuple(sorted(d.items()))
    ),
    cond=st.one_of(st.none(), st.sampled_from(CONDITIONS)),
)
grants_strategy = st.fixed_dictionaries(
    {
        "local": st.lists(st.sampled_from(ROLES), max_size=2, unique=True),
        "users": st.dictionaries(st.sampled_from(["u0", "u1", "s0"]), st.lists(st.sampled_from(ROLES), min_size=1)),
        "groups": st.dictionaries(st.sampled_from(["g0", "g1"]), st.lists(st.sampled_from(ROLES), min_size=1)),
        "services": st.dictionaries(st.sampled_from(["s0", "u0"]), st.lists(st.sampled_from(ROLES), min_size=1)),
    }
)
annotations_strategy = st.one_of(
    st.none(),
    st.builds(
        types.ToolAnnotations,
        read_only_hint=st.one_of(st.none(), st.booleans()),
        destructive_hint=st.one_of(st.none(), st.booleans()),
    ),
)
arguments_strategy = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"n": st.integers(-1, 6)}))


def write_policy(directory: Path, grants: dict[str, Any], rules: list[GenRule], *, split: bool) -> PolicyEngine:
    principals: dict[str, Any] = {}
    if grants["local"]:
        principals["local"] = {"roles": grants["local"]}
    for section in ("users", "groups", "services"):
        if grants[section]:
            principals[section] = {name: {"roles": sorted(set(roles))} for name, roles in grants[section].items()}
    head = {"version": 1, "roles": {r: {} for r in ROLES}, "principals": principals}
    specs = [r.spec() for r in rules]
    if split:
        (directory / "a.yaml").write_text(yaml.safe_dump({**head, "rules": specs[::2]}))
        (directory / "b.yaml").write_text(yaml.safe_dump({"version": 1, "rules": specs[1::2]}))
    else:
        (directory / "a.yaml").write_text(yaml.safe_dump({**head, "rules": specs}))
    return load_policy(directory)


def model_roles(grants: dict[str, Any], principal: Principal) -> set[str]:
    if principal.kind == "local":
        return set(grants["local"])
    section = "users" if principal.kind == "user" else "services"
    roles = set(grants[section].get(principal.subject, []))
    for group in principal.groups:
        roles |= set(grants["groups"].get(group, []))
    return roles


def model_counts(rule: GenRule, roles: set[str], request: Request, principal: Principal) -> bool:
    """Whether ``rule`` counts towards the decision, by the documented semantics."""
    if "*" not in rule.roles and not roles & set(rule.roles):
        return False
    if rule.servers and not any(fnmatchcase(request.server, s) for s in rule.servers):
        return False
    if rule.tools and not any(fnmatchcase(request.target, t) for t in rule.tools):
        return False
    a = request.annotations
    if rule.hints and (a is None or any(getattr(a, HINTS[h]) is not v for h, v in rule.hints)):
        return False
    if rule.cond is None:
        return True
    if request.method == "list" and rule.cond.call_time:
        return rule.effect != "deny"
    holds = rule.cond.meaning(principal, request)
    if holds is None:
        return rule.effect != "allow"
    return holds


def model_effect(rules: list[GenRule], roles: set[str], request: Request, principal: Principal) -> str:
    counted = {r.effect for r in rules if model_counts(r, roles, request, principal)}
    for effect in ("deny", "require_approval", "allow"):
        if effect in counted:
            return effect
    return "deny"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grants=grants_strategy,
    rules=st.lists(rules_strategy, max_size=6),
    principal=st.sampled_from(PRINCIPALS),
    tool=st.sampled_from(TOOLS),
    annotations=annotations_strategy,
    arguments=arguments_strategy,
)
def test_generated_policies_deny_by_default_let_deny_win_and_ignore_order(
    grants: dict[str, Any],
    rules: list[GenRule],
    principal: Principal,
    tool: tuple[str, str],
    annotations: types.ToolAnnotations | None,
    arguments: dict[str, Any] | None,
) -> None:
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        engine = write_policy(Path(one), grants, rules, split=False)
        shuffled = write_policy(Path(two), grants, list(reversed(rules)), split=True)
    roles = model_roles(grants, principal)
    for request in (
        Request("tools/call", tool[0], tool[1], arguments, annotations),
        Request("list", tool[0], tool[1], None, annotations),
    ):
        decided = effect_of(engine.decide(principal, request))
        counted = [r for r in rules if model_counts(r, roles, request, principal)]
        if not any(r.effect in ("allow", "require_approval") for r in counted):
            assert decided == "deny"  # deny by default
        if request.method != "list" and any(r.effect == "deny" for r in counted):
            assert decided == "deny"  # deny wins
        if request.method == "list" and any(r.effect == "deny" for r in counted):
            assert not engine.decide(principal, request).allowed
        expected = model_effect(rules, roles, request, principal)
        if request.method == "list":
            expected = "deny" if expected == "deny" else "allow"  # a listing is listed or not
        assert decided == expected
        assert effect_of(shuffled.decide(principal, request)) == decided  # order never matters


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grants=grants_strategy,
    rules=st.lists(rules_strategy, max_size=6),
    principal=st.sampled_from(PRINCIPALS),
    tool=st.sampled_from(TOOLS),
    annotations=annotations_strategy,
    calls=st.lists(arguments_strategy, min_size=1, max_size=4),
)
def test_listing_and_calling_reach_the_same_decision(
    grants: dict[str, Any],
    rules: list[GenRule],
    principal: Principal,
    tool: tuple[str, str],
    annotations: types.ToolAnnotations | None,
    calls: list[dict[str, Any] | None],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        engine = write_policy(Path(directory), grants, rules, split=False)
    listed = engine.decide(principal, Request("list", tool[0], tool[1], None, annotations)).allowed
    usable = [
        effect_of(engine.decide(principal, Request("tools/call", tool[0], tool[1], args, annotations))) != "deny"
        for args in calls
    ]
    if any(usable):
        assert listed, "a tool some call may use is listed"
    if not listed:
        assert not any(usable), "a tool that is not listed cannot be called"
    if not any(r.cond is not None and r.cond.call_time for r in rules):
        assert all(u == listed for u in usable), "without conditions on the call, listing is exactly calling"
