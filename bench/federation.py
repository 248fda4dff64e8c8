"""Federation overhead: ``echo`` through the Dockyard portal and through FastMCP's proxy, against direct calls.

Run ``.venv/bin/python -m bench.federation`` (``--quick`` for a short run, ``--profile`` to sample the portal with
py-spy afterwards). One run starts the npm ``server-everything`` over Streamable HTTP, a portal federating it
(``dockyard -c CONFIG serve``) and FastMCP 4.1.6's ``create_proxy`` of it, all on 127.0.0.1, measures each with the
official ``mcp`` client, prints a table with ratios against the direct figures of the same run, writes
``bench/results/federation.json`` and stops every process it started. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import anyio

from bench._load import ScenarioError, Window, percentile, run_clients
from bench._procs import (
    BenchError,
    Services,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    wait_http_ok,
    wait_port,
    wait_quiet,
)
from bench._profile import ProfileSummary, record, summarize
from bench._report import git_state, machine, print_profile, print_table, ratios
from bench._venv import FASTMCP_VERSION, Unavailable, ensure_fastmcp, ensure_pyspy

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
EVERYTHING_JS = ROOT / "tests/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
RESULTS = BENCH / "results"
MODERN = "2026-07-28"
_QUIET_CORES = 0.3
"""Busy cores (of 2) from other work above which a scenario waits before it starts, and is measured again."""
_TRIES = 3

TargetName = Literal["direct", "portal", "fastmcp"]


@dataclass(frozen=True)
class Scenario:
    key: str
    target: TargetName
    mode: str
    clients: int


@dataclass(frozen=True)
class Target:
    url: str
    tool: str
    pid: int | None
    """The proxy's process (None for direct calls)."""


@dataclass
class Result:
    scenario: Scenario
    status: Literal["ok", "failed", "unavailable"] = "ok"
    reason: str | None = None
    latencies: list[float] = field(default_factory=list[float])
    wall: float = 0.0
    errors: int = 0
    first_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict[str, float])
    per_round: list[float] = field(default_factory=list[float])

    def add(self, window: Window) -> None:
        self.per_round.append(round(len(window.latencies) / window.wall, 1) if window.wall else 0.0)
        self.latencies += window.latencies
        self.wall += window.wall
        self.errors += window.errors
        self.first_error = self.first_error or window.first_error
        for role, seconds in window.cpu.items():
            self.cpu[role] = self.cpu.get(role, 0.0) + seconds

    def summary(self) -> dict[str, Any]:
        calls = len(self.latencies)
        body: dict[str, Any] = {
            "target": self.scenario.target,
            "mode": self.scenario.mode,
            "clients": self.scenario.clients,
            "status": self.status,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.status != "ok" or calls == 0:
            return body
        body |= {
            "calls": calls,
            "errors": self.errors,
            "seconds": round(self.wall, 3),
            "calls_per_s": round(calls / self.wall, 1),
            "calls_per_s_by_round": self.per_round,
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 3),
            "mean_ms": round(sum(self.latencies) / calls * 1000, 3),
            "cpu_ms_per_call": {
                role: round(s / calls * 1000, 3) for role, s in sorted(self.cpu.items()) if role != "machine"
            },
            "background_cores": round(
                max(0.0, self.cpu.get("machine", 0.0) - sum(s for r, s in self.cpu.items() if r != "machine"))
                / self.wall,
                2,
            ),
        }
        if self.first_error:
            body["first_error"] = self.first_error
        return body


def _scenarios(clients: int) -> list[Scenario]:
    return [
        Scenario("direct", "direct", "legacy", 1),
        Scenario("portal-legacy", "portal", "legacy", 1),
        Scenario("portal-2026", "portal", MODERN, 1),
        Scenario(f"direct-x{clients}", "direct", "legacy", clients),
        Scenario(f"portal-legacy-x{clients}", "portal", "legacy", clients),
        Scenario(f"portal-2026-x{clients}", "portal", MODERN, clients),
        # Last in each round: it opens (and leaves to the upstream to clean up) one session per call.
        Scenario("fastmcp-legacy", "fastmcp", "legacy", 1),
        Scenario("fastmcp-2026", "fastmcp", MODERN, 1),
    ]


# ----------------------------------------------------------------------------------------- services


def _node() -> str:
    found = shutil.which("node")
    if found is None:
        raise BenchError("node is not installed; run `make setup`")
    if not EVERYTHING_JS.exists():
        raise BenchError(f"{EVERYTHING_JS} is missing; run `make setup` to install the npm test servers")
    return found


def _start_everything(services: Services) -> tuple[str, int]:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"), "PORT": str(port)}
    argv = [_node(), "--require", str(BENCH / "_loopback.cjs"), str(EVERYTHING_JS), "streamableHttp"]
    proc = services.start("everything", argv, env=env)
    wait_port(port, proc, name="everything", services=services, timeout=30)
    return f"http://127.0.0.1:{port}/mcp", proc.pid


def _start_portal(services: Services, upstream: str, workdir: Path) -> Target:
    port = free_port()
    config = workdir / "dockyard.toml"
    config.write_text(
        f'[portal]\npublic_url = "http://127.0.0.1:{port}"\ndata_dir = "{workdir / "data"}"\n\n'
        '[auth]\nmode = "none"\n\n'
        f'[servers.everything]\nurl = "{upstream}"\n'
    )
    dockyard = Path(sys.executable).parent / "dockyard"
    argv = [str(dockyard)] if dockyard.exists() else [sys.executable, "-m", "portal"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    proc = services.start("portal", [*argv, "-c", str(config), "serve"], env=env, cwd=workdir)
    wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, name="portal", services=services, timeout=60)
    return Target(f"http://127.0.0.1:{port}/mcp", "everything__echo", proc.pid)


def _start_fastmcp(services: Services, upstream: str) -> Target:
    python = ensure_fastmcp()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "FASTMCP_CHECK_FOR_UPDATES": "off",
        "FASTMCP_SHOW_SERVER_BANNER": "false",
    }
    argv = [str(python), str(BENCH / "_fastmcp_proxy.py"), upstream, str(port)]
    proc = services.start("fastmcp", argv, env=env)
    wait_port(port, proc, name="fastmcp", services=services, timeout=90)
    return Target(f"http://127.0.0.1:{port}/mcp", "echo", proc.pid)


# ----------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Settings:
    calls: int
    warmup: int
    rounds: int
    clients: int
    budget: float
    quick: bool


async def _measure(
    scenarios: Sequence[Scenario],
    targets: dict[TargetName, Target | str],
    upstream_pid: int,
    settings: Settings,
) -> dict[str, Result]:
    results = {s.key: Result(s) for s in scenarios}
    for name, target in targets.items():
        if isinstance(target, str):
            for result in results.values():
                if result.scenario.target == name:
                    result.status, result.reason = "unavailable", target
    for round_no in range(settings.rounds):
        for scenario in scenarios:
            result = results[scenario.key]
            target = targets[scenario.target]
            if result.status != "ok" or isinstance(target, str):
                continue
            print(f"bench: round {round_no + 1}/{settings.rounds} {scenario.key}", file=sys.stderr)
            try:
                window = await _measure_quietly(scenario, target, upstream_pid, settings)
            except Exception as error:  # top-level handler of one scenario: a broken target must not end the run
                result.status, result.reason = "failed", _describe(error)
                continue
            result.add(window)
    return results


def _background(window: Window) -> float:
    """Cores that other processes of the machine used during ``window``."""
    ours = sum(seconds for role, seconds in window.cpu.items() if role != "machine")
    return max(0.0, window.cpu.get("machine", 0.0) - ours) / window.wall if window.wall else 0.0


async def _measure_quietly(scenario: Scenario, target: Target, upstream_pid: int, settings: Settings) -> Window:
    """One timed window; measured again (up to ``_TRIES`` times) while other work on the machine skews it."""
    pids = {"upstream": upstream_pid} | ({"proxy": target.pid} if target.pid is not None else {})

    def cpu() -> dict[str, float]:
        ours = {role: cpu_seconds(pid) for role, pid in pids.items()}
        return {"client": time.process_time(), "machine": machine_busy_seconds()} | ours

    for attempt in range(1, _TRIES + 1):
        await anyio.to_thread.run_sync(
            lambda: wait_quiet(max_busy_cores=_QUIET_CORES, timeout=10 if settings.quick else 60)
        )
        with anyio.fail_after(settings.budget + 120):
            window = await run_clients(
                target.url,
                tool=target.tool,
                mode=scenario.mode,
                clients=scenario.clients,
                calls=settings.calls,
                warmup=settings.warmup,
                budget=settings.budget,
                cpu=cpu,
            )
        others = _background(window)
        if others <= _QUIET_CORES or attempt == _TRIES:
            return window
        print(f"bench:   other processes used {others:.2f} cores meanwhile; measuring again", file=sys.stderr)
    raise AssertionError("unreachable")


def _describe(error: BaseException) -> str:
    """The leaf errors of ``error`` (the client's task groups wrap what went wrong in exception groups)."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType,reportUnknownMemberType]
    if isinstance(error, ScenarioError):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def _profile_load(target: Target, mode: str, clients: int, calls: int) -> None:
    await run_clients(
        target.url, tool=target.tool, mode=mode, clients=clients, calls=calls, warmup=20, budget=120, cpu=lambda: {}
    )


def _profile(services: Services, portal: Target, calls: int, clients: int) -> dict[str, ProfileSummary | str]:
    profiles: dict[str, ProfileSummary | str] = {}
    try:
        py_spy = ensure_pyspy()
    except Unavailable as error:
        return {"unavailable": str(error)}
    assert portal.pid is not None
    for mode, n in (("legacy", 1), (MODERN, 1), ("legacy", clients), (MODERN, clients)):
        key = mode if n == 1 else f"{mode}-x{n}"
        out = RESULTS / f"portal-profile-{key}.txt"
        print(f"bench: profiling the portal ({key}, {calls} calls) into {out}", file=sys.stderr)
        try:
            with record(py_spy, portal.pid, out, services=services, name=f"py-spy-{key}"):
                anyio.run(_profile_load, portal, mode, n, calls)
        except BenchError as error:
            profiles[key] = f"unavailable: {error}"
            continue
        profiles[key] = summarize(out, ROOT / "portal")
    return profiles


# ----------------------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.federation", description="Dockyard federation overhead.")
    parser.add_argument("--quick", action="store_true", help="short run: 100 calls, 1 round")
    parser.add_argument("--calls", type=int, help="timed calls per scenario and round (default 500)")
    parser.add_argument("--rounds", type=int, help="rounds over all scenarios, pooled (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the parallel scenarios")
    parser.add_argument("--no-fastmcp", action="store_true", help="skip the FastMCP baseline")
    parser.add_argument("--profile", action="store_true", help="then sample the portal with py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS / "federation.json")
    return parser


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through Services.close, which reaps every child


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parser().parse_args(argv)
    settings = Settings(
        calls=args.calls or (100 if args.quick else 500),
        warmup=10 if args.quick else 50,
        rounds=args.rounds or (1 if args.quick else 2),
        clients=max(2, args.clients),
        budget=10.0 if args.quick else 30.0,
        quick=args.quick,
    )
    signal.signal(signal.SIGTERM, _terminate)
    RESULTS.mkdir(parents=True, exist_ok=True)
    scenarios = _scenarios(settings.clients)
    started = datetime.datetime.now(datetime.UTC)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    measured = git_state()  # before the portal starts: the code it loads is the code of this moment
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp, Services(Path(tmp)) as services:
        try:
            upstream, upstream_pid = _start_everything(services)
            targets: dict[TargetName, Target | str] = {
                "direct": Target(upstream, "echo", None),
                "portal": _start_portal(services, upstream, Path(tmp)),
            }
        except BenchError as error:
            print(f"bench: error: {error}", file=sys.stderr)
            return 2
        if args.no_fastmcp:
            targets["fastmcp"] = "skipped (--no-fastmcp)"
        else:
            try:
                targets["fastmcp"] = _start_fastmcp(services, upstream)
            except (Unavailable, BenchError) as error:
                targets["fastmcp"] = f"FastMCP {FASTMCP_VERSION} unavailable: {error}"
        results = anyio.run(_measure, scenarios, targets, upstream_pid, settings)
        portal = targets["portal"]
        profiles: dict[str, ProfileSummary | str] = {}
        if args.profile and isinstance(portal, Target):
            profiles = _profile(services, portal, 300 if args.quick else 1500, settings.clients)
    summaries = {key: result.summary() for key, result in results.items()}
    ratio_table = ratios(summaries, settings.clients)
    report = {
        "benchmark": "federation",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(_node()) | {"loadavg_at_start": load_before},
        "git": measured,
        "settings": {
            "calls": settings.calls,
            "warmup": settings.warmup,
            "rounds": settings.rounds,
            "clients": settings.clients,
            "budget_s": settings.budget,
            "quick": settings.quick,
        },
        "scenarios": summaries,
        "ratios": ratio_table,
        "profile": profiles,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print_table(summaries, ratio_table)
    print_profile(profiles)
    print(f"\nresults: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
