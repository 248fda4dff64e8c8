"""``dockyard policy check | test | explain | schema``, run in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal.cli import main
from portal.config import SHIPPED_POLICIES
from tests.policy.conftest import write_files

GOOD = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: own, effect: allow, roles: [owner]}
      - {name: no-rm, effect: deny, roles: [owner], tools: [fs__rm], description: Never.}
    tests:
      - {as: local, tool: fs__ls, expect: allow}
      - {as: local, tool: fs__rm, expect: deny, listed: false}
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``$DOCKYARD_CONFIG`` and no ``./dockyard.toml`` from the developer's shell reach the CLI."""
    monkeypatch.delenv("DOCKYARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_check_reports_what_it_loaded(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    write_files(policy_dir, good=GOOD)
    status, out, err = run(capsys, "policy", "check", str(policy_dir))
    assert (status, err) == (0, "")
    assert out.startswith(f"{policy_dir}: ok (version ")
    assert out.rstrip().endswith(": 1 file(s), 2 rule(s), 1 role(s), 2 test case(s))")


def test_check_prints_every_problem_with_file_and_line_and_exits_1(
    capsys: pytest.CaptureFixture[str], policy_dir: Path
) -> None:
    write_files(policy_dir, a="version: 1\nrules:\n  - {effect: alow, roles: ['*']}\n", b="version: 1\nroles: 3\n")
    status, out, err = run(capsys, "policy", "check", str(policy_dir))
    assert (status, out) == (1, "")
    assert err.splitlines() == [
        f"{policy_dir}/a.yaml:3: rules[0].effect: input should be 'allow', 'deny' or 'require_approval', got 'alow'",
        f"{policy_dir}/b.yaml:2: roles: input should be a valid dictionary, got 3",
        f"dockyard: 2 problems in {policy_dir}",
    ]


def test_check_without_a_directory_uses_the_policy_dir_of_the_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_files(tmp_path / "mine", good=GOOD)
    (tmp_path / "dockyard.toml").write_text('[policy]\ndir = "mine"\n')
    status, out, _ = run(capsys, "policy", "check")
    assert status == 0 and out.startswith(f"{tmp_path / 'mine'}: ok")
    (tmp_path / "dockyard.toml").unlink()
    status, out, _ = run(capsys, "policy", "check")
    assert status == 0 and out.startswith(f"{SHIPPED_POLICIES}: ok")


def test_test_runs_the_cases_and_exits_1_on_a_failure(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    write_files(policy_dir, good=GOOD)
    status, out, _ = run(capsys, "policy", "test", str(policy_dir))
    assert status == 0
    assert out.splitlines()[-1].startswith(f"2 passed, 0 failed ({policy_dir}, version ")
    write_files(
        policy_dir, wrong="version: 1\ntests:\n  - {name: rm is fine, as: local, tool: fs__rm, expect: allow}\n"
    )
    status, out, _ = run(capsys, "policy", "test", "-q", str(policy_dir))
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == "FAIL  wrong.yaml:3  rm is fine: expected allow, got deny"
    assert lines[1] == "      decision: deny by rule 'no-rm' (good.yaml:7)"
    assert lines[-1].startswith("2 passed, 1 failed")


def test_test_of_a_broken_directory_prints_the_problems(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    write_files(policy_dir, a="version: 1\nrules: [\n")
    status, _, err = run(capsys, "policy", "test", str(policy_dir))
    assert status == 1 and err.startswith(f"{policy_dir}/a.yaml:3: not valid YAML")


def test_explain_prints_the_decision_and_the_rules(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    write_files(policy_dir, good=GOOD)
    status, out, _ = run(capsys, "policy", "explain", "--dir", str(policy_dir), "--as", "local", "fs__rm", '{"p": 1}')
    assert status == 0
    assert out.splitlines()[:2] == ["decision: deny by rule 'no-rm' (good.yaml:7)", "          Never."]
    assert '          arguments: {"p": 1}' in out
    status, out, _ = run(
        capsys, "policy", "explain", "--dir", str(policy_dir), "--as", "local", "--method", "list", "fs__ls"
    )
    assert out.splitlines()[0] == "decision: listed by rule 'own' (good.yaml:6)"


def test_explain_takes_groups_client_server_annotations_and_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "policy",
        "explain",
        "--dir",
        str(SHIPPED_POLICIES / "examples"),
        "--as",
        "service:ci-bot",
        "--at",
        "2026-03-07T10:00:00Z",
        "--annotations",
        '{"openWorldHint": true}',
        "--server",
        "deploy",
        "deploy__release",
    ]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    assert out.splitlines()[0] == "decision: deny (default: no policy rule allows it)"
    assert "ci-deploys-in-office-hours" in out and "its condition is false" in out
    status, out, _ = run(capsys, *[a.replace("03-07", "03-02") for a in argv])
    assert out.splitlines()[0] == "decision: allow by rule 'ci-deploys-in-office-hours' (ci-bot.yaml:35)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--as", "root", "s__t"], "a principal is 'local', 'user:NAME' or 'service:NAME', got 'root'"),
        (["--as", "local", "plain"], "'plain' has no SERVER__ prefix; give its server with --server"),
        (["--as", "local", "s__t", "{bad"], "ARGS is not valid JSON"),
        (["--as", "local", "s__t", "[1]"], "ARGS must be a JSON object"),
        (["--as", "local", "--annotations", '{"readOnlyHint": 1}', "s__t"], "--annotations: Input should be"),
        (["--as", "local", "--at", "noon", "s__t"], "--at must be an ISO 8601 time"),
        (["--as", "local", "--at", "2026-03-02T09:00", "s__t"], "--at needs an offset"),
    ],
)
def test_explain_refuses_bad_input_with_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, "policy", "explain", *argv)
    assert (status, out) == (2, "")
    assert err.startswith(f"dockyard: error: {message}")


def test_schema_prints_the_shipped_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "policy", "schema")
    assert status == 0
    assert json.loads(out) == json.loads((SHIPPED_POLICIES / "policy.schema.json").read_text())
    assert out == (SHIPPED_POLICIES / "policy.schema.json").read_text()


def test_check_names_the_file_and_line_of_a_bad_limit_regex_or_host(
    capsys: pytest.CaptureFixture[str], policy_dir: Path
) -> None:
    bad = """
        version: 1
        roles: {ci: {}}
        limits:
          - {name: fast, roles: [ci], rate: 10/fortnight}
        egress:
          - {name: out, roles: [ci], hosts: ["https://example.com"]}
    """
    worse = "version: 1\nredact:\n  - name: ids\n    roles: ['*']\n    regex: {staff: 'EMP-[0-9'}\n"
    write_files(policy_dir, a=bad, b=worse)
    status, _, err = run(capsys, "policy", "check", str(policy_dir))
    lines = err.splitlines()
    assert status == 1 and lines[-1] == f"dockyard: 3 problems in {policy_dir}"
    assert lines[0].startswith(f"{policy_dir}/a.yaml:4: limits[0].rate: '10/fortnight' is not a rate")
    assert lines[1].startswith(f"{policy_dir}/a.yaml:6: egress[0].hosts: 'https://example.com' is not a host")
    assert lines[2].startswith(f"{policy_dir}/b.yaml:5: regex 'staff': 'EMP-[0-9' is not a valid regular expression")


def test_explain_lists_the_limits_redactions_and_egress_of_a_call(capsys: pytest.CaptureFixture[str]) -> None:
    examples = str(SHIPPED_POLICIES / "examples")
    status, out, _ = run(capsys, "policy", "explain", "--dir", examples, "--as", "service:ci-bot", "github__get_issue")
    assert status == 0
    carried = out.split("limits, redactions and egress whose servers and tools match:\n", 1)[1]
    assert "=> limit            ci-bot-github" in carried
    assert "60 call(s) per minute per principal; 2000 call(s) per day per principal; applies" in carried
    assert "=> redact           credentials-never-leave" in carried
