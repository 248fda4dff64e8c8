"""Limits, redactions and egress: written in YAML, checked with file and line, collected into call decisions.

They match like rules (roles, servers, tools, annotations, ``when``) and attach to a call that is allowed or
waits for approval, never to a denied call or a listing. A condition that fails fails closed: a limit or a
redaction still applies, egress is not granted (SECURITY.md G1, G6).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from portal.policy import PolicyEngine, parse_principal, run_cases
from portal.policy_seam import Limit, Request
from portal.redaction import PATTERNS

Load = Callable[..., PolicyEngine]
Problems = Callable[..., list[str]]

BASE = """
    version: 1
    roles: {analyst: {}, ci: {}, engineer: {}}
    principals:
      users: {ana: {roles: [analyst]}, erin: {roles: [engineer]}}
      services: {ci-bot: {roles: [ci]}}
    rules:
      - {name: everyone-reads, effect: allow, roles: [analyst, ci, engineer]}
      - {name: no-drop, effect: deny, roles: ["*"], tools: [db__drop]}
      - {name: wipe-needs-approval, effect: require_approval, roles: ["*"], tools: [db__wipe]}
"""

EFFECTS = """
    version: 1
    limits:
      - name: ci-rate
        roles: [ci]
        rate: 10/minute
        quota: 1000/day
        per: [principal, tool]
      - name: github-shared
        roles: ["*"]
        servers: [github]
        rate: 5/30s
        per: []
      - name: big-queries
        roles: ["*"]
        tools: [db__query]
        when: 'arguments.rows > 100'
        rate: 2/hour
    redact:
      - name: analysts-see-no-emails
        roles: [analyst]
        patterns: [email]
      - name: keys-everywhere
        roles: ["*"]
        patterns: [aws_access_key, private_key]
        regex:
          employee_id: 'EMP-[0-9]{6}'
      - name: secrets-of-the-db
        roles: ["*"]
        servers: [db]
        when: 'arguments.table.startsWith("secret")'
        patterns: [jwt]
    egress:
      - name: engineers-reach-github
        roles: [engineer]
        servers: [sandbox, browser]
        hosts: [api.github.com, "*.githubusercontent.com"]
      - name: engineers-reach-pypi
        roles: [engineer]
        servers: [sandbox]
        when: 'arguments.network == "pypi"'
        hosts: [pypi.org, "files.pythonhosted.org:443"]
"""

ANA = parse_principal("user:ana")
ERIN = parse_principal("user:erin")
CI = parse_principal("service:ci-bot")


def call(tool: str, arguments: dict[str, object] | None = None, method: str = "tools/call") -> Request:
    return Request(method, tool, tool.partition("__")[0], arguments)  # type: ignore[arg-type]


def test_limits_read_as_counts_per_window_per_dimension(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    decision = engine.decide(CI, call("github__get_issue"))
    assert decision.allowed
    assert set(decision.limits) == {
        Limit("ci-rate", 10, 60.0, ("principal", "tool")),
        Limit("ci-rate", 1000, 86400.0, ("principal", "tool")),
        Limit("github-shared", 5, 30.0, ()),
    }
    assert decision.redactions[0].name in {"aws_access_key", "private_key", "employee_id"}
    assert {r.name for r in decision.redactions} == {"aws_access_key", "private_key", "employee_id"}
    assert decision.egress == ()


def test_redactions_union_across_entries_and_carry_their_patterns(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    decision = engine.decide(ANA, call("notes__read"))
    assert {(r.rule, r.name) for r in decision.redactions} == {
        ("analysts-see-no-emails", "email"),
        ("keys-everywhere", "aws_access_key"),
        ("keys-everywhere", "private_key"),
        ("keys-everywhere", "employee_id"),
    }
    assert {r.name: r.pattern for r in decision.redactions}["email"] == PATTERNS["email"]
    assert {r.name: r.pattern for r in decision.redactions}["employee_id"] == "EMP-[0-9]{6}"


def test_egress_is_the_sorted_union_of_the_hosts_that_apply(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    assert engine.decide(ERIN, call("sandbox__run", {"network": "pypi"})).egress == (
        "*.githubusercontent.com",
        "api.github.com",
        "files.pythonhosted.org:443",
        "pypi.org",
    )
    assert engine.decide(ERIN, call("browser__open", {"network": "pypi"})).egress == (
        "*.githubusercontent.com",
        "api.github.com",
    )
    assert engine.decide(ANA, call("sandbox__run")).egress == (), "no egress for a role that is not granted it"


def test_conditions_that_fail_fail_closed_limits_and_redactions_apply_egress_is_not_granted(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    # no `rows`, no `table`, no `network`: each condition fails to evaluate
    query = engine.decide(ANA, call("db__query", {}))
    assert [limit.rule for limit in query.limits] == ["big-queries"]
    assert "jwt" in {r.name for r in query.redactions}
    assert engine.decide(ERIN, call("sandbox__run", {})).egress == ("*.githubusercontent.com", "api.github.com")
    small = engine.decide(ANA, call("db__query", {"rows": 5, "table": "public"}))
    assert small.limits == () and "jwt" not in {r.name for r in small.redactions}


def test_denied_calls_and_listings_carry_nothing_and_calls_awaiting_approval_carry_everything(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    denied = engine.decide(CI, call("db__drop"))
    assert not denied.allowed and denied.limits == () and denied.redactions == ()
    listed = engine.decide(CI, Request("list", "github__get_issue", "github"))
    assert listed.allowed and listed.limits == () and listed.redactions == ()
    held = engine.decide(CI, call("db__wipe"))
    assert held.needs_approval and {limit.rule for limit in held.limits} == {"ci-rate"}
    unknown = engine.decide(parse_principal("user:nobody"), call("github__get_issue"))
    assert not unknown.allowed and unknown.limits == (), "an unknown caller gets nothing (G1)"


@pytest.mark.parametrize("method", ["prompts/get", "resources/read"])
def test_prompts_and_resources_get_redactions_but_no_limits(load: Load, method: str) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    decision = engine.decide(ANA, call("notes__summary", method=method))
    assert "email" in {r.name for r in decision.redactions}
    assert engine.decide(CI, call("github__issue", method=method)).limits == (), "limits count tool calls only"


def test_explain_shows_which_limits_redactions_and_egress_apply(load: Load) -> None:
    engine = load(base=BASE, effects=EFFECTS)
    text = engine.explain(ERIN, call("sandbox__run", {"network": "npm"})).render()
    assert "limits, redactions and egress whose servers and tools match:" in text
    lines = {
        parts[1]: line
        for line in text.splitlines()
        if len(parts := line.replace("=>", "").split()) > 2 and parts[0] in ("limit", "redact", "egress")
    }
    assert "may reach *.githubusercontent.com, api.github.com; applies" in lines["engineers-reach-github"]
    assert "its condition is false" in lines["engineers-reach-pypi"]
    assert "redacts email; caller holds none of its roles (analyst)" in lines["analysts-see-no-emails"]
    ci = engine.explain(CI, call("github__list")).render()
    assert "10 call(s) per minute per principal, tool; 1000 call(s) per day per principal, tool; applies" in ci
    assert "5 call(s) per 30s in all; applies" in ci


def test_cases_may_assert_the_limits_redactions_and_egress_of_a_call(load: Load) -> None:
    cases = """
        version: 1
        tests:
          - {as: "service:ci-bot", tool: github__get_issue, expect: allow, limits: [ci-rate, github-shared]}
          - {as: "user:ana", tool: notes__read, expect: allow,
             redacts: [email, aws_access_key, private_key, employee_id]}
          - {as: "user:erin", tool: browser__open, expect: allow, egress: [api.github.com]}
    """
    results = run_cases(load(base=BASE, effects=EFFECTS, cases=cases))
    assert [r.passed for r in results] == [True, True, False]
    assert "expected egress [api.github.com], got [*.githubusercontent.com, api.github.com]" in results[2].render()


def test_format_errors_name_the_file_and_line(problems: Problems, policy_dir: object) -> None:
    shape = """
        version: 1
        limits:
          - name: too-fast
            roles: [ci]
            rate: 10/fortnight
          - name: nothing
            roles: [ci]
          - name: per-what
            roles: [ci]
            rate: 1/s
            per: [client]
        redact:
          - name: typo
            roles: [ci]
            patterns: [emial]
        egress:
          - name: schemes
            roles: [ci]
            hosts: ["https://api.github.com"]
          - name: everything
            roles: [ci]
            hosts: ["*"]
    """
    meaning = """
        version: 1
        roles: {ci: {}}
        limits:
          - roles: [ci]
            quota: 5/day
          - name: twice
            roles: [ci]
            rate: 1/s
        redact:
          - name: broken
            roles: [ci]
            regex: {bad: '([a-z]', empty: 'x*', email: 'mail'}
        egress:
          - name: twice
            roles: [cii]
            hosts: [ok.example]
    """
    not_a_host = (
        "is not a host: write 'api.github.com', '*.example.com', '10.0.0.5' or '127.0.0.1:8080' "
        "(no scheme, path or bare '*')"
    )
    builtins = ", ".join(f"'{p}'" for p in list(PATTERNS)[:-1]) + f" or '{list(PATTERNS)[-1]}'"
    assert problems(a=shape, b=meaning) == [
        "a.yaml:5: limits[0].rate: '10/fortnight' is not a rate: write COUNT/UNIT, e.g. '10/minute', '1000/day' "
        "or '5/30s' (units: s, second, m, minute, h, hour, d, day, week)",
        "a.yaml:6: limits[1]: give 'rate' (e.g. '10/minute'), 'quota' (e.g. '1000/day') or both",
        "a.yaml:11: limits[2].per[0]: input should be 'principal', 'tool' or 'server', got 'client'",
        f"a.yaml:15: redact[0].patterns[0]: input should be {builtins}, got 'emial'",
        f"a.yaml:19: egress[0].hosts: 'https://api.github.com' {not_a_host}",
        f"a.yaml:22: egress[1].hosts: '*' {not_a_host}",
        "b.yaml:4: a limit needs a 'name': its counters are kept under it",
        "b.yaml:12: 'email' is a built-in pattern; list it under 'patterns', or give your regex another name",
        "b.yaml:12: regex 'bad': '([a-z]' is not a valid regular expression: missing ), unterminated subpattern "
        "at position 0",
        "b.yaml:12: regex 'empty': 'x*' matches the empty string; it must match at least one character",
        f"b.yaml:14: name 'twice' is already used at {policy_dir}/b.yaml:6",
        "b.yaml:15: role 'cii' is not declared (declared: ci); did you mean 'ci'?",
    ]


def test_hosts_may_be_names_wildcards_addresses_and_ports(load: Load) -> None:
    good = """
        version: 1
        roles: {engineer: {}}
        egress:
          - roles: [engineer]
            hosts: [api.github.com, "*.example.com", 127.0.0.1, "127.0.0.1:8080", "[::1]:443", "[2001:db8::1]"]
    """
    engine = load(a=good)
    assert len(engine.obligations[0].egress) == 6


def test_a_policy_without_obligations_decides_as_before(load: Load) -> None:
    engine = load(base=BASE)
    decision = engine.decide(CI, call("github__get_issue", {}))
    assert decision.allowed and decision.limits == () and decision.redactions == () and decision.egress == ()


def test_decide_and_explain_agree_on_what_a_call_carries_call_after_call(load: Load) -> None:
    """``decide`` plans the unconditional part once per caller and target; the answer must not drift."""
    engine = load(base=BASE, effects=EFFECTS)
    arguments: list[dict[str, object] | None] = [
        None,
        {},
        {"rows": 5, "table": "public", "network": "pypi"},
        {"rows": 500, "table": "secrets", "network": "npm"},
        {"rows": "many"},
    ]
    tools = ["db__query", "db__wipe", "db__drop", "sandbox__run", "browser__open", "github__get_issue", "notes__read"]
    for _ in range(2):
        for principal in (ANA, ERIN, CI, parse_principal("user:nobody")):
            for tool in tools:
                for args in arguments:
                    request = call(tool, args)
                    assert engine.decide(principal, request) == engine.explain(principal, request).decision


def test_a_rate_and_a_quota_over_the_same_window_are_refused(problems: Problems) -> None:
    same = "version: 1\nlimits:\n  - {name: twice, roles: ['*'], rate: 10/day, quota: 1000/1 days}\n"
    assert problems(a=same) == [
        "a.yaml:3: limits[0]: 'rate' (10/day) and 'quota' (1000/1 days) have the same window; keep one"
    ]
