"""Decisions: deny by default, deny wins, approval over allow, roles, globs, annotations, conditions.

SECURITY.md G1: an unknown server, tool or principal sees nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import mcp_types as types

from portal.policy import PolicyEngine, effect_of, parse_principal
from portal.policy_seam import Decision, Request
from portal.principal import LOCAL_PRINCIPAL, Principal

Load = Callable[..., PolicyEngine]

ROLES = """
    version: 1
    roles: {analyst: {}, engineer: {}, ide: {}, ci: {}, owner: {}}
    principals:
      local: {roles: [owner]}
      users: {alice: {roles: [analyst]}}
      groups: {engineering: {roles: [engineer]}}
      clients: {cursor: {roles: [ide]}}
      services: {ci-bot: {roles: [ci]}}
"""

ALICE = parse_principal("user:alice")
BOB = parse_principal("user:bob")
READ_ONLY = types.ToolAnnotations(read_only_hint=True)
DESTRUCTIVE = types.ToolAnnotations(destructive_hint=True)


def call(tool: str, arguments: dict[str, object] | None = None, annotations: types.ToolAnnotations | None = None):
    return Request("tools/call", tool, tool.partition("__")[0], arguments, annotations)


def listing(tool: str, annotations: types.ToolAnnotations | None = None) -> Request:
    return Request("list", tool, tool.partition("__")[0], None, annotations)


def effect(engine: PolicyEngine, principal: Principal, request: Request, now: datetime | None = None) -> str:
    return effect_of(engine.decide(principal, request, now=now))


def test_nothing_is_allowed_until_a_rule_says_so(load: Load) -> None:
    engine = load(roles=ROLES)
    for principal in (LOCAL_PRINCIPAL, ALICE, BOB, parse_principal("service:ci-bot")):
        assert engine.decide(principal, call("s__t")) == Decision(
            allowed=False, rule="default-deny", reason="no policy rule allows it"
        )
        assert not engine.decide(principal, listing("s__t")).allowed


def test_an_explicit_deny_wins_over_any_allow_in_any_file(load: Load) -> None:
    allow = "version: 1\nrules:\n  - {name: allow-all, effect: allow, roles: [analyst]}\n"
    deny = "version: 1\nrules:\n  - {name: no-t, effect: deny, roles: ['*'], tools: [s__t], description: Not t.}\n"
    approve = "version: 1\nrules:\n  - {name: t-approve, effect: require_approval, roles: [analyst]}\n"
    engine = load(roles=ROLES, a=allow, z=deny, m=approve)
    assert engine.decide(ALICE, call("s__t")) == Decision(allowed=False, rule="no-t", reason="Not t.")
    assert effect(engine, ALICE, call("s__other")) == "require_approval"


def test_rule_order_and_file_order_never_change_a_decision(load: Load, tmp_path: object) -> None:
    rules = [
        "{effect: allow, roles: [analyst]}",
        "{effect: deny, roles: [analyst], tools: ['s__secret*']}",
        "{effect: require_approval, roles: [analyst], annotations: {destructiveHint: true}}",
    ]
    forward = load(roles=ROLES, rules="version: 1\nrules:\n" + "".join(f"  - {r}\n" for r in rules))
    backward = load(roles=ROLES, rules="version: 1\nrules:\n" + "".join(f"  - {r}\n" for r in reversed(rules)))
    for request in (call("s__a"), call("s__secret_key"), call("s__drop", annotations=DESTRUCTIVE), listing("s__a")):
        assert effect(forward, ALICE, request) == effect(backward, ALICE, request)
    assert [effect(forward, ALICE, r) for r in (call("s__a"), call("s__secret"), call("s__x", None, DESTRUCTIVE))] == [
        "allow",
        "deny",
        "require_approval",
    ]


def test_approval_wins_over_allow_but_the_target_stays_listed(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {name: all, effect: allow, roles: [owner]}
          - {name: careful, effect: require_approval, roles: [owner], tools: [fs__delete], description: Deletes.}
    """
    engine = load(roles=ROLES, rules=rules)
    decision = engine.decide(LOCAL_PRINCIPAL, call("fs__delete"))
    assert (decision.allowed, decision.needs_approval, decision.rule) == (False, True, "careful")
    assert decision.reason == "Deletes."
    listed = engine.decide(LOCAL_PRINCIPAL, listing("fs__delete"))
    assert (listed.allowed, listed.needs_approval) == (True, True)


def test_require_approval_alone_grants_use_subject_to_approval(load: Load) -> None:
    engine = load(roles=ROLES, rules="version: 1\nrules:\n  - {effect: require_approval, roles: [ci]}\n")
    bot = parse_principal("service:ci-bot")
    assert effect(engine, bot, call("s__t")) == "require_approval"
    assert engine.decide(bot, listing("s__t")).allowed


def test_roles_come_from_the_user_its_groups_its_client_and_the_service(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {effect: allow, roles: [analyst], tools: [a__*]}
          - {effect: allow, roles: [engineer], tools: [e__*]}
          - {effect: allow, roles: [ide], tools: [i__*]}
          - {effect: allow, roles: [ci], tools: [c__*]}
          - {effect: allow, roles: [owner], tools: [o__*]}
    """
    engine = load(roles=ROLES, rules=rules)

    def allowed(principal: Principal) -> list[str]:
        return [p for p in "aeico" if engine.decide(principal, call(f"{p}__t")).allowed]

    assert allowed(ALICE) == ["a"]
    assert allowed(parse_principal("user:bob", groups=frozenset({"engineering"}), client_id="cursor")) == ["e", "i"]
    assert allowed(parse_principal("service:ci-bot")) == ["c"]
    assert allowed(LOCAL_PRINCIPAL) == ["o"]
    assert allowed(BOB) == []


def test_the_local_kind_is_not_a_user_called_local_and_services_are_not_users(load: Load) -> None:
    engine = load(roles=ROLES, rules="version: 1\nrules:\n  - {effect: allow, roles: [owner, ci]}\n")
    assert engine.decide(LOCAL_PRINCIPAL, call("s__t")).allowed
    assert not engine.decide(parse_principal("user:local"), call("s__t")).allowed
    assert not engine.decide(parse_principal("user:ci-bot"), call("s__t")).allowed


def test_a_star_rule_applies_to_every_caller_even_one_without_roles(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {effect: allow, roles: [analyst]}
          - {effect: deny, roles: ["*"], servers: [prod]}
    """
    engine = load(roles=ROLES, rules=rules)
    assert not engine.decide(ALICE, call("prod__query")).allowed
    assert engine.decide(ALICE, call("dev__query")).allowed
    assert not engine.decide(BOB, call("dev__query")).allowed


def test_server_and_tool_globs_match_whole_names(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {effect: allow, roles: [analyst], servers: [git*], tools: ["*__list_?", "*__get_[ab]"]}
    """
    engine = load(roles=ROLES, rules=rules)
    cases = [
        ("github__list_x", "github", True),
        ("github__list_xy", "github", False),  # '?' is one character
        ("gitlab__get_b", "gitlab", True),
        ("gitlab__get_c", "gitlab", False),
        ("jira__list_x", "jira", False),
        ("github__list_x", "GitHub", False),  # case-sensitive, like the names themselves
    ]
    assert [engine.decide(ALICE, Request("tools/call", n, s)).allowed for n, s, _ in cases] == [c[2] for c in cases]


def test_annotations_match_only_what_the_tool_declares(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {effect: allow, roles: [analyst], annotations: {readOnlyHint: true}}
          - {effect: deny, roles: [analyst], annotations: {openWorldHint: true, readOnlyHint: true}}
    """
    engine = load(roles=ROLES, rules=rules)
    assert engine.decide(ALICE, call("s__read", annotations=READ_ONLY)).allowed
    assert not engine.decide(ALICE, call("s__undeclared")).allowed
    assert not engine.decide(ALICE, call("s__write", annotations=types.ToolAnnotations(read_only_hint=False))).allowed
    world = types.ToolAnnotations(read_only_hint=True, open_world_hint=True)
    assert not engine.decide(ALICE, call("s__web", annotations=world)).allowed
    assert engine.decide(ALICE, listing("s__read", READ_ONLY)).allowed
    assert not engine.decide(ALICE, listing("s__undeclared")).allowed


def test_conditions_see_the_principal_the_tool_the_arguments_the_request_and_the_time(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - effect: allow
            roles: [engineer]
            when: >-
              principal.subject == "bob" && "engineering" in principal.groups && "engineer" in principal.roles
              && tool.server == "db" && tool.name.endsWith("query") && tool.annotations.readOnlyHint == true
              && arguments.limit <= 100 && request.method == "tools/call" && now.getHours() < 18
    """
    engine = load(roles=ROLES, rules=rules)
    bob = parse_principal("user:bob", groups=frozenset({"engineering"}))
    morning = datetime(2026, 3, 2, 9, tzinfo=UTC)
    request = Request("tools/call", "db__query", "db", {"limit": 10}, READ_ONLY)
    assert engine.decide(bob, request, now=morning).allowed
    assert not engine.decide(bob, request, now=morning.replace(hour=19)).allowed
    assert not engine.decide(
        bob, Request("tools/call", "db__query", "db", {"limit": 1000}, READ_ONLY), now=morning
    ).allowed


def test_a_failing_condition_fails_closed(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {name: small, effect: allow, roles: [analyst], when: 'arguments.n < 10'}
          - {name: no-etc, effect: deny, roles: [engineer], when: 'arguments.path.startsWith("/etc")'}
          - {name: eng, effect: allow, roles: [engineer]}
          - {name: big, effect: require_approval, roles: [owner], when: 'arguments.size > 5'}
          - {name: own, effect: allow, roles: [owner]}
    """
    engine = load(roles=ROLES, rules=rules)
    bob = parse_principal("user:bob", groups=frozenset({"engineering"}))
    assert engine.decide(ALICE, call("s__t", {"n": 3})).allowed
    assert engine.decide(ALICE, call("s__t", {})).rule == "default-deny"  # an allow that fails does not apply
    assert engine.decide(ALICE, call("s__t", {"n": "three"})).rule == "default-deny"
    assert engine.decide(bob, call("s__t", {"path": "/tmp/x"})).allowed
    assert engine.decide(bob, call("s__t", {})).rule == "no-etc"  # a deny that fails applies
    assert engine.decide(bob, call("s__t", {"path": 7})).rule == "no-etc"
    assert effect(engine, LOCAL_PRINCIPAL, call("s__t", {})) == "require_approval"
    assert effect(engine, LOCAL_PRINCIPAL, call("s__t", {"size": 1})) == "allow"


def test_a_non_boolean_condition_is_a_failure(load: Load) -> None:
    engine = load(roles=ROLES, rules="version: 1\nrules:\n  - {effect: allow, roles: [analyst], when: 'tool.name'}\n")
    explanation = engine.explain(ALICE, call("s__t"))
    assert explanation.decision.rule == "default-deny"
    assert explanation.results[0].detail == "the condition must be true or false, but gave 's__t'"


def test_listings_defer_conditions_on_the_call_and_evaluate_the_rest(load: Load) -> None:
    rules = """
        version: 1
        rules:
          - {effect: allow, roles: [analyst], tools: [db__query], when: 'arguments.sql.startsWith("SELECT")'}
          - {effect: allow, roles: [analyst], tools: [db__admin], when: 'principal.subject == "root"'}
          - {effect: allow, roles: [analyst], tools: [db__drop]}
          - {effect: deny, roles: [analyst], tools: [db__drop], when: 'arguments.table == "users"'}
          - {effect: deny, roles: [analyst], tools: [db__hidden], when: 'principal.subject == "alice"'}
          - {effect: allow, roles: [analyst], tools: [db__hidden]}
    """
    engine = load(roles=ROLES, rules=rules)
    visible = {t: engine.decide(ALICE, listing(f"db__{t}")).allowed for t in ("query", "admin", "drop", "hidden")}
    assert visible == {"query": True, "admin": False, "drop": True, "hidden": False}
    assert not engine.decide(ALICE, call("db__query", {"sql": "DROP TABLE x"})).allowed
    assert engine.decide(ALICE, call("db__query", {"sql": "SELECT 1"})).allowed
    assert not engine.decide(ALICE, call("db__drop", {"table": "users"})).allowed
    assert engine.decide(ALICE, call("db__drop", {"table": "scratch"})).allowed


def test_unnamed_rules_are_named_by_file_and_line(load: Load) -> None:
    engine = load(roles=ROLES, rules="version: 1\nrules:\n  - effect: allow\n    roles: [analyst]\n")
    assert engine.decide(ALICE, call("s__t")) == Decision(allowed=True, rule="rules.yaml:3")


def test_decisions_are_stable_across_repeated_and_interleaved_requests(load: Load) -> None:
    rules = "version: 1\nrules:\n  - {effect: allow, roles: [analyst], tools: [s__a]}\n"
    engine = load(roles=ROLES, rules=rules)
    first = [engine.decide(p, call(t)) for p in (ALICE, BOB) for t in ("s__a", "s__b")]
    again = [engine.decide(p, call(t)) for p in (ALICE, BOB) for t in ("s__a", "s__b")]
    assert first == again
    assert [d.allowed for d in first] == [True, False, False, False]


def test_a_decision_looks_only_at_rules_whose_names_can_match(load: Load) -> None:
    rules = "".join(f"  - {{effect: allow, roles: [analyst], tools: [s{i}__t{i}]}}\n" for i in range(1000))
    globs = "".join(f"  - {{effect: deny, roles: [analyst], tools: ['s{i}__x*']}}\n" for i in range(500))
    servers = "".join(f"  - {{effect: allow, roles: [analyst], servers: [s{i}]}}\n" for i in range(500))
    engine = load(roles=ROLES, rules=f"version: 1\nrules:\n{rules}{globs}{servers}")
    assert len(engine.rules) == 2000
    explained = engine.explain(ALICE, call("s7__t7"))
    assert [r.rule.line for r in explained.results] == [10, 1510]  # its name, its server; not the other 1,998
    assert len(engine.explain(ALICE, call("s7__x1")).results) == 2  # the glob of its prefix, its server
