# pyright: strict
"""The conformance fixture passes both official MCP conformance suites on its own.

The portal's conformance tests run the same suites through the portal, with this fixture
federated behind it; these tests pin down that every failure there is the portal's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.stdio import StdioServerParameters

from .runner import NODE22, Suite, run_suite

FIXTURE = Path(__file__).with_name("fixture_server.py")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fixture_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fixture") / "stderr.log"


@pytest.fixture(scope="module")
async def fixture_url(fixture_log: Path) -> AsyncIterator[str]:
    """Start the fixture over HTTP on a free loopback port; yield its /mcp URL."""
    with fixture_log.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(FIXTURE), "--http", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield await _announced_url(process, fixture_log)
        finally:
            await _stop(process)


async def _announced_url(process: Process, log: Path) -> str:
    # The fixture prints its URL only once the socket listens, so no readiness polling is needed.
    assert process.stdout is not None
    try:
        with anyio.fail_after(30):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1024)
    except (TimeoutError, anyio.EndOfStream, anyio.IncompleteRead) as exc:
        raise AssertionError(f"the fixture did not announce its URL; its stderr:\n{log.read_text()}") from exc
    return line.decode().strip()


async def _stop(process: Process) -> None:
    process.terminate()
    with anyio.move_on_after(10) as scope:
        await process.wait()
    if scope.cancelled_caught:
        process.kill()
        await process.wait()


@pytest.mark.npm
@pytest.mark.anyio
@pytest.mark.parametrize("suite", ["2025", "2026"])
async def test_the_fixture_passes_the_conformance_suite(suite: Suite, fixture_url: str, fixture_log: Path) -> None:
    if not NODE22.exists():
        pytest.fail(f"Node.js 22 is missing at {NODE22}; run `make setup` (npm install in tests/npm).")
    result = await run_suite(fixture_url, suite=suite, timeout=240)
    print(result.summary())
    assert result.ok, f"{result.report()}\nfixture stderr: {fixture_log}"


async def _sample(context: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    reply = types.TextContent(type="text", text="Paris")
    return types.CreateMessageResult(role="assistant", content=reply, model="test-model", stop_reason="endTurn")


async def _elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada", "color": "green"})


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_fixture_answers_interactive_tools_in_both_eras_over_stdio(mode: str) -> None:
    # The portal federates the fixture over stdio; the same tools must work whichever era it speaks.
    server = StdioServerParameters(command=sys.executable, args=[str(FIXTURE), "--stdio"])
    with anyio.fail_after(30):
        async with Client(server, mode=mode, sampling_callback=_sample, elicitation_callback=_elicit) as client:
            sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
            multi_round = await client.call_tool("test_input_required_result_multi_round", {})
    assert sampled.content == [types.TextContent(type="text", text="LLM response: Paris")]
    assert multi_round.content == [types.TextContent(type="text", text="Ada likes green.")]
