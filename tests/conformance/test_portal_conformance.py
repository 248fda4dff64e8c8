"""The official MCP conformance suites pass through the portal, with the fixture federated behind it.

The fixture is an ordinary stdio upstream with ``prefix = false`` (the suites call its tools by their
exact names); everything the suites check of the HTTP endpoint itself (sessions, headers, SSE, status
codes) is checked of the portal. Failures the portal cannot fix are listed, each with its reason, in
``expected-failures-portal-<suite>.yaml``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import RunningPortal, make_settings, running_portal

from .runner import NODE22, Suite, run_suite

HERE = Path(__file__).parent
FIXTURE = HERE / "fixture_server.py"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def portal(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPortal]:
    tmp_path = tmp_path_factory.mktemp("portal")
    fixture = {"command": sys.executable, "args": [str(FIXTURE), "--stdio"], "prefix": False}
    settings = make_settings(tmp_path, {"conformance": fixture}, health_interval=15.0)
    async with running_portal(settings) as running:
        assert running.gateway.upstreams["conformance"].connected, running.gateway.upstreams["conformance"].last_error
        yield running


@pytest.mark.npm
@pytest.mark.anyio
@pytest.mark.parametrize("suite", ["2025", "2026"])
async def test_the_portal_passes_the_conformance_suite_with_the_fixture_behind_it(
    suite: Suite, portal: RunningPortal
) -> None:
    if not NODE22.exists():
        pytest.fail(f"Node.js 22 is missing at {NODE22}; run `make setup` (npm install in tests/npm).")
    baseline = HERE / f"expected-failures-portal-{suite}.yaml"
    result = await run_suite(portal.mcp_url, suite=suite, expected_failures=baseline, timeout=300)
    print(result.summary())
    assert result.ok, result.report()
