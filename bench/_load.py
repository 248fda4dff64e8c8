"""Load: ``echo`` calls with the official ``mcp`` client, sequential on each of N clients, timed per call."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import mcp_types as types
from mcp import Client, MCPError

__all__ = ["CpuProbe", "ScenarioError", "Window", "percentile", "run_clients"]

CpuProbe = Callable[[], dict[str, float]]
"""CPU seconds consumed so far, by process role (``client``, ``upstream``, ``proxy``)."""


class ScenarioError(Exception):
    """The target does not answer ``echo`` correctly, so the scenario cannot be measured."""


@dataclass
class Window:
    """What one timed window of calls produced."""

    latencies: list[float] = field(default_factory=list[float])
    """Seconds per successful call."""
    wall: float = 0.0
    errors: int = 0
    first_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict[str, float])
    """CPU seconds each process spent during the window."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _echo(client: Client, tool: str, n: int) -> str | None:
    """One call; None when the answer is the expected echo, else what was wrong."""
    message = f"bench {n}"
    try:
        result = await client.call_tool(tool, {"message": message})
    except MCPError as error:
        return f"protocol error {error.error.code}: {error.error.message}"
    first = result.content[0] if result.content else None
    text = first.text if isinstance(first, types.TextContent) else repr(first)
    if result.is_error:
        return f"isError result: {text}"
    if text != f"Echo: {message}":
        return f"unexpected result {text!r}"
    return None


async def run_clients(
    url: str,
    *,
    tool: str,
    mode: str,
    clients: int,
    calls: int,
    warmup: int,
    budget: float,
    cpu: CpuProbe,
) -> Window:
    """Open ``clients`` connections, warm each up, then time ``calls`` calls split between them.

    Each client calls sequentially (the next call starts when the previous answer is in); the clients run
    concurrently. The window ends when every client is done or ``budget`` seconds have passed.

    Raises:
        ScenarioError: A warm-up call did not return the expected echo.
    """
    per_client = max(1, calls // clients)
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(Client(url, mode=mode, read_timeout_seconds=30)) for _ in range(clients)
        ]
        for client in opened:
            for n in range(warmup):
                if (problem := await _echo(client, tool, n)) is not None:
                    raise ScenarioError(problem)
        window = Window()
        deadline = time.perf_counter() + budget

        async def worker(client: Client, offset: int) -> None:
            for n in range(offset, offset + per_client):
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                problem = await _echo(client, tool, n)
                elapsed = time.perf_counter() - started
                if problem is None:
                    window.latencies.append(elapsed)
                else:
                    window.errors += 1
                    window.first_error = window.first_error or problem

        before = cpu()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index, client in enumerate(opened):
                tg.start_soon(worker, client, warmup + index * per_client)
        window.wall = time.perf_counter() - started
        after = cpu()
        window.cpu = {role: after[role] - before[role] for role in after}
    return window
