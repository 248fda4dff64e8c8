"""Listings are remembered per principal while the catalog and the policy stay the same (SECURITY.md T4, G1).

A listing decides every tool of the catalog; at 2,000 tools that is milliseconds of the event loop per
``tools/list``. The gateway keeps each principal's filtered listing until the catalog or the policy's
listing key changes, and never keeps one when a rule's condition reads the time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from portal.config import settings_from_mapping
from portal.policy import ReloadingPolicy, load_policy
from portal.policy_seam import Decision, Policy, Request
from portal.principal import LOCAL_PRINCIPAL, Principal
from tests.policy.conftest import write_files
from tests.support import running_portal, wait_for

pytestmark = pytest.mark.anyio

POLICY = """
    version: 1
    roles: {owner: {}, reader: {}}
    principals:
      local: {roles: [owner]}
      users: {rita: {roles: [reader]}}
    rules:
      - {name: everything, effect: allow, roles: [owner]}
      - {name: reads, effect: allow, roles: [reader], annotations: {readOnlyHint: true}}
"""
TIMED = """
    version: 1
    rules:
      - {name: office-hours, effect: deny, roles: ['*'], tools: [x], when: 'now.getHours() < 0'}
"""


class Counting:
    """Delegates to the real policy, counting decisions."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.decisions = 0

    @property
    def version(self) -> str:
        return self.policy.version

    @property
    def listing_key(self) -> str | None:
        return self.policy.listing_key

    def decide(self, principal: Principal, request: Request) -> Decision:
        self.decisions += 1
        return self.policy.decide(principal, request)


def test_a_condition_on_the_time_makes_listings_uncacheable(tmp_path: Path) -> None:
    steady = write_files(tmp_path / "steady", main=POLICY)
    assert ReloadingPolicy(steady, load_policy(steady)).listing_key == load_policy(steady).version
    timed = write_files(tmp_path / "timed", main=POLICY, timed=TIMED)
    assert ReloadingPolicy(timed, load_policy(timed)).listing_key is None


async def test_a_listing_is_decided_once_per_principal_until_the_policy_changes(tmp_path: Path) -> None:
    policy_dir = write_files(tmp_path / "policies", main=POLICY)
    raw: dict[str, Any] = {
        "portal": {"data_dir": str(tmp_path / "data")},
        "auth": {"mode": "none"},
        "policy": {"dir": str(policy_dir)},
        "servers": {"notes": {"module": "tests.policy.notes_server:server"}},
    }
    settings = settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
    rita = Principal("rita")
    async with running_portal(settings) as portal:
        gateway = portal.gateway
        counting = Counting(gateway.policy)
        gateway.policy = counting
        everything = [t.name for t in gateway.list_tools(LOCAL_PRINCIPAL)]
        reads = [t.name for t in gateway.list_tools(rita)]
        assert reads == ["notes__read_note"] and len(everything) == 5
        decided = counting.decisions
        assert [t.name for t in gateway.list_tools(LOCAL_PRINCIPAL)] == everything
        assert [t.name for t in gateway.list_tools(rita)] == reads
        assert counting.decisions == decided  # both answered from the cache

        version = counting.version
        write_files(policy_dir, main=POLICY.replace("readOnlyHint: true", "destructiveHint: true"))
        await wait_for(lambda: counting.version != version, timeout=10)
        assert [t.name for t in gateway.list_tools(rita)] == ["notes__wipe_notes"]

        write_files(policy_dir, timed=TIMED)
        await wait_for(lambda: counting.listing_key is None, timeout=10)
        decided = counting.decisions
        gateway.list_tools(rita)
        gateway.list_tools(rita)
        assert counting.decisions == decided + 10  # decided afresh each time
