"""Loading policy files: every problem is reported with its file, line and reason, all at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from portal.policy import PolicyEngine, PolicyLoadError, load_policy

Problems = Callable[..., list[str]]

OWNER = """
    version: 1
    principals:
      local: {roles: [owner]}
    roles:
      owner: {}
    rules:
      - name: owner-all
        effect: allow
        roles: [owner]
"""


def test_a_valid_directory_loads_with_its_rules_roles_cases_and_a_version(load: Callable[..., PolicyEngine]) -> None:
    engine = load(a=OWNER, b="version: 1\ntests:\n  - {as: local, tool: s__t, expect: allow}\n")
    assert [r.id for r in engine.rules] == ["owner-all"]
    assert engine.roles == ("owner",)
    assert [(Path(c.file).name, c.line, c.request.server) for c in engine.cases] == [("b.yaml", 3, "s")]
    assert len(engine.version) == 12


def test_the_version_changes_with_the_content_and_only_with_it(policy_dir: Path) -> None:
    policy_dir.mkdir()
    (policy_dir / "a.yaml").write_text("version: 1\n")
    first = load_policy(policy_dir).version
    assert load_policy(policy_dir).version == first
    (policy_dir / "a.yaml").write_text("version: 1\ndescription: changed\n")
    assert load_policy(policy_dir).version != first


def test_yaml_syntax_errors_name_the_line(problems: Problems) -> None:
    (found,) = problems(a="version: 1\nrules:\n  - effect: [allow\n")
    assert found.startswith("a.yaml:4: not valid YAML: while parsing a flow sequence")


def test_unknown_keys_are_refused_with_a_suggestion(problems: Problems) -> None:
    text = """
        version: 1
        roles: {owner: {}}
        rules:
          - efect: allow
            roles: [owner]
    """
    assert problems(a=text) == [
        "a.yaml:4: rules[0].efect: unknown key; did you mean 'effect'?",
        "a.yaml:4: rules[0]: missing required key 'effect'",
    ]


def test_an_unknown_key_without_a_close_match_lists_the_known_ones(problems: Problems) -> None:
    assert problems(a="version: 1\nacl: []\n") == [
        "a.yaml:2: acl: unknown key (known keys: version, description, principals, roles, rules, limits, redact, "
        "egress, tests)"
    ]


def test_wrong_values_say_what_is_allowed_and_what_was_found(problems: Problems) -> None:
    text = """
        version: 1
        roles: {owner: {}}
        rules:
          - effect: permit
            roles: [owner]
            annotations: {readOnly: true, destructiveHint: "yes"}
    """
    assert problems(a=text) == [
        "a.yaml:4: rules[0].effect: input should be 'allow', 'deny' or 'require_approval', got 'permit'",
        "a.yaml:6: rules[0].annotations.destructiveHint: input should be a valid boolean, got 'yes'",
        "a.yaml:6: rules[0].annotations.readOnly: input should be 'readOnlyHint', 'destructiveHint', "
        "'idempotentHint' or 'openWorldHint', got 'readOnly'",
    ]


def test_a_missing_or_wrong_version_is_refused(problems: Problems) -> None:
    assert problems(a="rules: []\n", b="version: 2\n") == [
        "a.yaml:1: missing required key 'version'",
        "b.yaml:1: version: input should be 1, got 2",
    ]


def test_roles_must_be_declared_somewhere_in_the_directory(problems: Problems) -> None:
    a = """
        version: 1
        principals:
          users: {alice: {roles: [analyts]}}
        rules:
          - {effect: allow, roles: [engineer]}
    """
    assert problems(a=a, b="version: 1\nroles: {analyst: {}}\n") == [
        "a.yaml:3: role 'analyts' is not declared (declared: analyst); did you mean 'analyst'?",
        "a.yaml:5: role 'engineer' is not declared (declared: analyst) under 'roles'",
    ]


def test_a_role_declared_twice_names_where_it_was_first(policy_dir: Path, problems: Problems) -> None:
    found = problems(a="version: 1\nroles: {analyst: {}}\n", b="version: 1\nroles:\n  analyst: {}\n")
    assert found == [f"b.yaml:3: role 'analyst' is already declared at {policy_dir}/a.yaml:2"]


def test_rule_names_are_unique_across_files(policy_dir: Path, problems: Problems) -> None:
    rule = "version: 1\nrules:\n  - {name: same, effect: deny, roles: ['*']}\n"
    assert problems(a=rule, b=rule) == [f"b.yaml:3: rule name 'same' is already used at {policy_dir}/a.yaml:3"]


def test_names_must_be_names(problems: Problems) -> None:
    text = """
        version: 1
        roles: {"bad role": {}}
        rules:
          - {name: "no spaces", effect: deny, roles: ["*"]}
    """
    assert problems(a=text) == [
        "a.yaml:2: roles.bad role: 'bad role' is not a valid name: a letter or digit, then up to 63 letters, "
        "digits, '_', '.' or '-'",
        "a.yaml:4: rules[0].name: 'no spaces' is not a valid name: a letter or digit, then up to 63 letters, "
        "digits, '_', '.' or '-'",
    ]


def test_a_cel_syntax_error_is_a_load_error_at_the_line_of_the_condition(problems: Problems) -> None:
    text = """
        version: 1
        rules:
          - effect: deny
            roles: ["*"]
            when: 'principal.subject =='
    """
    assert problems(a=text) == [
        "a.yaml:5: condition 'principal.subject ==': CEL syntax error at line 1, column 21: mismatched input "
        "'<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, "
        "STRING, BYTES, IDENTIFIER}"
    ]


def test_unknown_variables_and_functions_in_conditions_are_load_errors(problems: Problems) -> None:
    text = """
        version: 1
        rules:
          - {effect: deny, roles: ["*"], when: 'princpal.subject == "x"'}
          - {effect: deny, roles: ["*"], when: 'now.getHour() > 3'}
          - {effect: deny, roles: ["*"], when: 'principal.groups.exists(g, g == "ops") && type(1) == int'}
    """
    assert problems(a=text) == [
        "a.yaml:3: condition 'princpal.subject == \"x\"': unknown variable 'princpal' (conditions see principal, "
        "tool, arguments, request, now); did you mean 'principal'?",
        "a.yaml:4: condition 'now.getHour() > 3': unknown function 'getHour': the CEL runtime does not provide it",
    ]


def test_yaml_traps_are_refused(problems: Problems) -> None:
    text = """
        version: 1
        description: one
        description: two
        roles:
          base: &base {description: x}
          other:
            <<: *base
    """
    assert problems(a=text) == [
        "a.yaml:3: duplicate key 'description'",
        "a.yaml:7: merge keys ('<<') are not supported; write the keys out",
    ]


def test_an_empty_file_and_an_unsafe_tag_are_refused(problems: Problems) -> None:
    found = problems(
        a="", b="version: !!python/object/apply:os.system [true]\n", c="version: !!python/name:os.system\n"
    )
    assert found == [
        "a.yaml:1: the file is empty; a policy file starts with 'version: 1'",
        "b.yaml:1: unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        "c.yaml:1: not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'",
    ]


def test_test_cases_are_checked_too(problems: Problems) -> None:
    text = """
        version: 1
        tests:
          - {as: bob, tool: s__t, expect: allow}
          - {as: local, tool: s__t, expect: allow, now: "tomorrow"}
          - {as: local, tool: s__t, expect: allow, now: "2026-03-02T09:00:00"}
    """
    checked_after_the_format = "version: 1\ntests:\n  - {as: local, tool: no_prefix, expect: allow}\n"
    assert problems(a=text, b=checked_after_the_format) == [
        "a.yaml:3: tests[0].as: 'bob' is not a principal: write 'local', 'user:NAME' or 'service:NAME'",
        "a.yaml:4: tests[1].now: must be an ISO 8601 time such as '2026-03-02T09:30:00Z', got 'tomorrow'",
        "a.yaml:5: tests[2].now: needs an offset ('Z' or '+01:00'), got '2026-03-02T09:00:00'",
        "b.yaml:3: 'no_prefix' has no SERVER__ prefix; give 'server:'",
    ]


def test_every_file_is_checked_and_every_problem_reported_in_file_and_line_order(problems: Problems) -> None:
    found = problems(b="version: 1\nrules:\n  - {effect: nope, roles: ['*']}\n", a="nope: 1\nversion: 1\n")
    assert [f.split(":")[0] + ":" + f.split(":")[1] for f in found] == ["a.yaml:1", "b.yaml:3"]


def test_a_missing_or_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="the policy directory does not exist; create it or set"):
        load_policy(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a policy")
    with pytest.raises(PolicyLoadError, match=r"no policy files \(\*\.yaml\) in the policy directory"):
        load_policy(tmp_path / "empty")


def test_subdirectories_are_not_read(load: Callable[..., PolicyEngine], policy_dir: Path) -> None:
    (policy_dir / "examples").mkdir(parents=True)
    (policy_dir / "examples" / "broken.yaml").write_text("not: [valid\n")
    assert load(a=OWNER).files == (str(policy_dir / "a.yaml"),)
