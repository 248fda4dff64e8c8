"""Hot reload: a changed directory is swapped in; a broken one is refused and the previous policy stays."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from portal.policy import ReloadingPolicy, load_policy
from portal.policy_seam import Request
from portal.principal import LOCAL_PRINCIPAL
from tests.policy.conftest import write_files
from tests.support import wait_for

ALLOW = """\
version: 1
roles: {owner: {}}
principals: {local: {roles: [owner]}}
rules:
  - {effect: allow, roles: [owner]}
"""
DENY_T = "version: 1\nrules:\n  - {name: no-t, effect: deny, roles: ['*'], tools: [s__t]}\n"
T = Request("tools/call", "s__t", "s")


def reloading(policy_dir: Path) -> ReloadingPolicy:
    write_files(policy_dir, base=ALLOW)
    return ReloadingPolicy(policy_dir, load_policy(policy_dir))


def test_nothing_changes_until_a_file_does(policy_dir: Path) -> None:
    policy = reloading(policy_dir)
    version = policy.current.version
    assert not policy.reload()
    assert policy.current.version == version and policy.decide(LOCAL_PRINCIPAL, T).allowed


def test_an_added_changed_or_removed_file_is_picked_up(policy_dir: Path) -> None:
    policy = reloading(policy_dir)
    write_files(policy_dir, deny=DENY_T)
    assert policy.reload()
    assert policy.decide(LOCAL_PRINCIPAL, T).rule == "no-t"
    write_files(policy_dir, deny=DENY_T.replace("s__t", "s__u"))
    assert policy.reload() and policy.decide(LOCAL_PRINCIPAL, T).allowed
    (policy_dir / "deny.yaml").unlink()
    assert policy.reload() and len(policy.current.rules) == 1


def test_a_broken_file_is_refused_logged_with_file_and_line_and_the_old_policy_stays(
    policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = reloading(policy_dir)
    before = policy.current
    write_files(policy_dir, deny=DENY_T.replace("effect: deny", "effect: dney"))
    with caplog.at_level(logging.ERROR, logger="dockyard.policy"):
        assert not policy.reload()
    assert policy.current is before and policy.decide(LOCAL_PRINCIPAL, T).allowed
    problem = f"{policy_dir}/deny.yaml:3: rules[0].effect: input should be 'allow', 'deny' or 'require_approval'"
    assert policy.last_error is not None and str(policy.last_error).startswith(problem)
    assert f"version {before.version} stays in force" in caplog.text and problem in caplog.text
    caplog.clear()
    assert not policy.reload()  # the same broken files are not reloaded (nor logged) again every second
    assert caplog.text == ""
    write_files(policy_dir, deny=DENY_T)
    assert policy.reload() and policy.last_error is None
    assert not policy.decide(LOCAL_PRINCIPAL, T).allowed


def test_a_vanished_directory_keeps_the_policy(policy_dir: Path) -> None:
    policy = reloading(policy_dir)
    for path in policy_dir.iterdir():
        path.unlink()
    policy_dir.rmdir()
    assert not policy.reload()
    assert policy.decide(LOCAL_PRINCIPAL, T).allowed
    assert policy.last_error is not None and "does not exist" in str(policy.last_error)


@pytest.mark.anyio
async def test_watch_swaps_the_policy_in_the_background(policy_dir: Path) -> None:
    policy = reloading(policy_dir)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: policy.watch(interval=0.02))
        write_files(policy_dir, deny=DENY_T)
        await wait_for(lambda: not policy.decide(LOCAL_PRINCIPAL, T).allowed, timeout=10)
        tg.cancel_scope.cancel()
