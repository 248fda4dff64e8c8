"""The shipped policies: valid against the JSON Schema editors use, and their own test cases pass."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import portal.policy
from portal.cli import main
from portal.config import SHIPPED_POLICIES, load_settings
from portal.policy import load_policy, policy_schema, run_cases
from portal.policy._yaml import parse_yaml

SHIPPED = sorted(SHIPPED_POLICIES.rglob("*.yaml"))
DIRECTORIES = [SHIPPED_POLICIES, SHIPPED_POLICIES / "examples"]


def test_the_policy_package_exports_exactly_its_public_surface() -> None:
    assert sorted(portal.policy.__all__) == [
        "Case",
        "CaseResult",
        "Effect",
        "Explanation",
        "Obligation",
        "ObligationResult",
        "PolicyEngine",
        "PolicyError",
        "PolicyLoadError",
        "PrincipalSpecError",
        "Problem",
        "ReloadingPolicy",
        "Rule",
        "RuleResult",
        "effect_of",
        "load_policy",
        "parse_principal",
        "policy_schema",
        "run_cases",
    ]
    assert all(hasattr(portal.policy, name) for name in portal.policy.__all__)


def test_the_schema_file_is_the_schema_of_the_format() -> None:
    shipped = json.loads((SHIPPED_POLICIES / "policy.schema.json").read_text())
    assert shipped == policy_schema(), "regenerate it: dockyard policy schema > policies/policy.schema.json"
    jsonschema.Draft202012Validator.check_schema(shipped)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(SHIPPED_POLICIES).as_posix() for p in SHIPPED])
def test_every_shipped_policy_validates_against_the_json_schema(path: Path) -> None:
    document, problems = parse_yaml(path.read_text(), file=str(path))
    assert document is not None and not problems
    validator = jsonschema.Draft202012Validator(policy_schema(), format_checker=jsonschema.FormatChecker())
    data: Any = document.data
    assert [e.message for e in validator.iter_errors(data)] == []
    assert path.read_text().startswith("# yaml-language-server: $schema="), "editors find the schema by this line"


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    validator = jsonschema.Draft202012Validator(policy_schema())
    bad = {"version": 1, "rules": [{"effect": "permit", "roles": []}], "roles": {"bad name": {}}, "extra": 1}
    messages = sorted(e.message for e in validator.iter_errors(bad))
    assert len(messages) == 4, messages


@pytest.mark.parametrize("directory", DIRECTORIES, ids=["default", "examples"])
def test_the_shipped_policies_pass_their_own_tests(directory: Path) -> None:
    engine = load_policy(directory)
    results = run_cases(engine)
    assert len(results) >= 6
    assert [r.render() for r in results if not r.passed] == []


def test_each_example_carries_test_cases() -> None:
    engine = load_policy(SHIPPED_POLICIES / "examples")
    assert {Path(c.file).name for c in engine.cases} == {
        "analyst.yaml",
        "ci-bot.yaml",
        "engineer.yaml",
        "guardrails.yaml",
    }


def test_the_default_policy_dir_is_the_shipped_one_and_a_relative_dir_follows_the_config(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).policy.dir == SHIPPED_POLICIES
    config = tmp_path / "conf" / "dockyard.toml"
    config.parent.mkdir()
    config.write_text('[policy]\ndir = "policies"\n')
    assert load_settings(config, environ={}).policy.dir == tmp_path / "conf" / "policies"
    config.write_text(f'[policy]\ndir = "{tmp_path / "abs"}"\n')
    assert load_settings(config, environ={}).policy.dir == tmp_path / "abs"


def test_the_readme_policy_example_loads_passes_its_cases_and_explains_as_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (SHIPPED_POLICIES.parent / "README.md").read_text()
    section = readme.split("## Policies", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert blocks
    for i, block in enumerate(blocks):
        (tmp_path / f"readme{i}.yaml").write_text(block)
    results = run_cases(load_policy(tmp_path))
    assert len(results) == 8 and [r.render() for r in results if not r.passed] == []
    (command,) = [line for line in section.splitlines() if line.startswith("dockyard policy explain")]
    argv = shlex.split(command)[1:]
    assert main([*argv[:2], "--dir", str(tmp_path), *argv[2:]]) == 0
    assert capsys.readouterr().out.startswith("decision: allow by rule 'analysts-select'")
