"""Explanations: the decision, where the caller's roles come from, and how each candidate rule fared."""

from __future__ import annotations

from collections.abc import Callable

import mcp_types as types

from portal.policy import PolicyEngine, parse_principal, run_cases
from portal.policy_seam import Request

Load = Callable[..., PolicyEngine]

POLICY = """
    version: 1
    roles: {engineer: {}, analyst: {}}
    principals:
      groups:
        engineering: {roles: [engineer]}
    rules:
      - {name: eng-all, effect: allow, roles: [engineer], servers: [github]}
      - name: destructive
        description: The tool says it may destroy data.
        effect: require_approval
        roles: [engineer]
        annotations: {destructiveHint: true}
      - {name: no-main, effect: deny, roles: ["*"], when: 'arguments.branch == "main"'}
      - {name: readers, effect: allow, roles: [analyst], annotations: {readOnlyHint: true}}
      - {name: elsewhere, effect: allow, roles: [engineer], servers: [jira]}
"""

ERIN = parse_principal("user:erin", groups=frozenset({"engineering"}))


def test_an_explanation_shows_the_decider_the_roles_and_every_candidate(load: Load) -> None:
    engine = load(p=POLICY)
    request = Request(
        "tools/call", "github__delete_branch", "github", {"branch": "old"}, types.ToolAnnotations(destructive_hint=True)
    )
    explanation = engine.explain(ERIN, request)
    assert explanation.decision == engine.decide(ERIN, request)
    assert explanation.render() == "\n".join(
        [
            "decision: require_approval by rule 'destructive' (p.yaml:8)",
            "          The tool says it may destroy data.",
            "caller:   user:erin (groups: engineering)",
            "role:     engineer (from groups.engineering in p.yaml:5)",
            "request:  tools/call github__delete_branch (server github)",
            '          annotations: {"destructiveHint": true}',
            '          arguments: {"branch": "old"}',
            "rules whose servers and tools match, deciding rules first:",
            "     deny             no-main      p.yaml:13            its condition is false",
            "  => require_approval destructive  p.yaml:8             applies",
            "     allow            eng-all      p.yaml:7             applies",
            "     allow            readers      p.yaml:14            caller holds none of its roles (analyst)",
        ]
    )


def test_a_failed_condition_and_a_deferred_one_are_explained(load: Load) -> None:
    engine = load(p=POLICY)
    failed = engine.explain(ERIN, Request("tools/call", "github__push", "github", {}))
    assert failed.decision.rule == "no-main"
    assert "=> deny             no-main      p.yaml:13            its condition failed (" in failed.render()
    assert "counts: fails closed" in failed.render()
    listed = engine.explain(ERIN, Request("list", "github__push", "github"))
    assert listed.render().splitlines()[0] == "decision: listed by rule 'eng-all' (p.yaml:7)"
    assert "its condition reads the call, which a listing does not have; cannot hide the target" in listed.render()


def test_the_default_deny_is_explained_for_a_caller_without_roles(load: Load) -> None:
    engine = load(p=POLICY)
    request = Request("tools/call", "slack__post", "slack", {"branch": "dev"})
    text = engine.explain(parse_principal("service:unknown"), request).render()
    assert text.splitlines()[:2] == [
        "decision: deny (default: no policy rule allows it)",
        "caller:   service:unknown",
    ]
    assert "roles:    none (no grant in the policy matches this caller)" in text
    assert text.endswith("nothing allows this, so it is denied (deny by default)")


def test_a_failing_case_prints_what_was_expected_and_the_explanation(load: Load) -> None:
    cases = """
        version: 1
        tests:
          - {name: erin pushes, as: "user:erin", groups: [engineering], tool: github__push, expect: allow}
          - as: "user:erin"
            groups: [engineering]
            tool: jira__x
            arguments: {branch: b}
            expect: allow
            listed: false
          - {as: "user:erin", groups: [engineering], tool: github__x, arguments: {branch: b}, expect: allow}
    """
    results = run_cases(load(p=POLICY, t=cases))
    assert [r.passed for r in results] == [False, False, True]
    first = results[0].render().splitlines()
    assert first[0] == "FAIL  t.yaml:3  erin pushes: expected allow, got deny"
    assert first[1] == "      decision: deny by rule 'no-main' (p.yaml:13)"
    assert results[1].render().splitlines()[0] == (
        "FAIL  t.yaml:4  user:erin tools/call jira__x: expected not listed, got the opposite"
    )
    assert results[2].render() == "ok    t.yaml:10  user:erin tools/call github__x"
