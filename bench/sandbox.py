"""Sandbox latency per backend: create + first command, and a steady command, against plain bwrap and docker run.

Run ``.venv/bin/python -m bench.sandbox`` (``--quick`` for a short run; ``make bench-sandbox`` builds the
docker image first). In one run, on one machine, it times:

- ``bwrap-true``: the baseline for bubblewrap, a plain ``bwrap`` with every namespace unshared, uid 65534,
  the host's ``/usr`` read-only, running ``true`` (a fresh process each time);
- ``docker-run-true``: the baseline for docker, ``docker run --rm --network none IMAGE true`` with the
  sandbox image;
- ``bwrap-python``, ``docker-run-python``: the same running ``python3 -I -S -c ''`` instead of ``true``, to
  show how much of a box's start is its agent's interpreter;
- for each backend (``bubblewrap``, ``docker``), through the backend interface and the agent client the
  sandbox server itself uses:

  - ``create+first``: ``backend.start(spec)`` (it returns once the box's agent answers) and the first
    ``exec(["true"])`` answered, on fresh directories; the box is stopped after each, untimed;
  - ``steady``: ``exec(["true"])`` on a running box, one after another;
  - ``tool create+exec`` and ``tool exec``: the same through the sandbox MCP server (``create_server``,
    in process, the official ``mcp`` client): the ``create`` tool, then ``exec`` of ``true``, the sandbox
    destroyed after each, untimed; and ``exec`` of ``true`` in a live sandbox. This adds the manager (the
    workspace, a loop-mounted ext4 image when run as root; metadata on disk), MCP and the shell;
  - with ``--runsc``, also ``docker-runsc``: the docker backend with gVisor's ``runsc`` runtime (it must be
    registered with dockerd; see ``servers/sandbox/_docker.py``), against the same ``docker run`` baseline.

Figures are p50/p99 in milliseconds and ratios of p50s: ``create+first`` against the backend's own
baseline (what a long-lived box with an agent costs over one bare sandboxed process), and ``steady``
against the same baseline (what running a command in a live box saves over starting a sandbox per
command). Rounds alternate the scenarios so drift on a shared machine hits them alike. The workspace is a
plain directory here; the server's loop-mounted, size-limited workspace (root only) is not part of it.
Results go to ``bench/results/sandbox.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench._procs import wait_quiet
from servers.sandbox import create_server
from servers.sandbox._agent_client import AgentClient
from servers.sandbox._backend import (
    SANDBOX_GID,
    SANDBOX_UID,
    Backend,
    BackendUnavailableError,
    Profile,
    SandboxSpec,
    backend_from_name,
)
from servers.sandbox._docker import sandbox_image_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BACKENDS = ("bubblewrap", "docker")


def _bwrap_argv(command: Sequence[str]) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--die-with-parent"]
    argv += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    if os.geteuid() == 0:  # as root, bwrap would keep every capability (ENVIRONMENT.md): drop them as the server does
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--", *argv]
    return [*argv, *command]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(_percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
        "min_ms": round(min(values) * 1000, 2),
    }


async def _time_process(argv: Sequence[str], runs: int) -> list[float]:
    timings: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await anyio.run_process(list(argv), check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
        timings.append(elapsed)
    return timings


class _Boxes:
    """Fresh sandbox specs under one directory every box user (65534) can traverse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def spec(self, backend: str) -> SandboxSpec:
        self.count += 1
        sandbox_id = f"bench{os.getpid()}{backend[0]}{self.count}"
        dirs = {name: self.root / sandbox_id / name for name in ("workspace", "control", "state")}
        for path in dirs.values():
            path.mkdir(parents=True)
            if os.geteuid() == 0:
                os.chown(path, SANDBOX_UID, SANDBOX_GID)
        return SandboxSpec(
            id=sandbox_id,
            profile=Profile(),
            workspace=dirs["workspace"],
            control_dir=dirs["control"],
            state_dir=dirs["state"],
        )


async def _true(agent: AgentClient) -> None:
    result = await agent.exec(["true"], timeout=30, output_limit=1024)
    if result.exit_code != 0:
        raise RuntimeError(f"`true` in the box exited with {result.exit_code}: {result.stderr!r}")


async def _create_first(backend: Backend, boxes: _Boxes, runs: int) -> list[float]:
    timings: list[float] = []
    for _ in range(runs):
        spec = boxes.spec(backend.name)
        started = time.perf_counter()
        await backend.start(spec)
        await _true(AgentClient(spec.control_dir))
        timings.append(time.perf_counter() - started)
        await backend.destroy(spec.id)
    return timings


async def _steady(agent: AgentClient, runs: int) -> list[float]:
    timings: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        await _true(agent)
        timings.append(time.perf_counter() - started)
    return timings


class _Tools:
    """The sandbox MCP server over one backend, in process, called through the official client."""

    def __init__(self, client: Client, sandbox_id: str) -> None:
        self.client = client
        self.sandbox_id = sandbox_id

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        if result.is_error or result.structured_content is None:
            raise RuntimeError(f"{tool} failed: {result.content}")
        return result.structured_content

    async def exec_true(self, sandbox_id: str) -> None:
        answer = await self.call("exec", {"sandbox_id": sandbox_id, "command": "true"})
        if answer["exit_code"] != 0:
            raise RuntimeError(f"exec true answered {answer}")

    async def create_first(self, runs: int) -> list[float]:
        timings: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            sandbox_id = (await self.call("create", {"name": "bench"}))["id"]
            await self.exec_true(sandbox_id)
            timings.append(time.perf_counter() - started)
            await self.call("destroy", {"sandbox_id": sandbox_id})
        return timings

    async def steady(self, runs: int) -> list[float]:
        timings: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            await self.exec_true(self.sandbox_id)
            timings.append(time.perf_counter() - started)
        return timings


async def _available(name: str) -> Backend | str:
    try:
        if name == "docker-runsc":
            backend: Backend = backend_from_name("docker", {"runtime": "runsc"})
        else:
            backend = backend_from_name(name)
        await backend.check()
    except BackendUnavailableError as error:
        return str(error)
    return backend


async def _open_live(
    backends: dict[str, Backend | str], boxes: _Boxes, live: dict[str, tuple[Backend, AgentClient]]
) -> None:
    """A running box per available backend in ``live``, warmed up (one steady burst, one create+first)."""
    for name, backend in backends.items():
        if isinstance(backend, str):
            continue
        spec = boxes.spec(name)
        await backend.start(spec)
        live[name] = (backend, AgentClient(spec.control_dir))
        await _steady(live[name][1], 20)
        await _create_first(backend, boxes, 1)


async def _open_tools(
    backends: dict[str, Backend | str], root: Path, stack: AsyncExitStack, tools: dict[str, _Tools]
) -> None:
    """The MCP server per available backend (runc only), each with one sandbox for the steady scenario."""
    for name in BACKENDS:
        if isinstance(backends[name], str):
            continue
        server = create_server({"backend": name}, data_dir=root / f"data-{name}")
        client = await stack.enter_async_context(Client(server))
        probe = _Tools(client, "")
        tools[name] = _Tools(client, (await probe.call("create", {"name": "steady"}))["id"])
        stack.push_async_callback(probe.call, "destroy", {"sandbox_id": tools[name].sandbox_id})
        await tools[name].steady(20)
        await tools[name].create_first(1)


def _scenarios(
    baselines: dict[str, list[str]],
    live: dict[str, tuple[Backend, AgentClient]],
    tools: dict[str, _Tools],
    boxes: _Boxes,
    *,
    cold: int,
    steady: int,
) -> list[tuple[str, Callable[[], Awaitable[list[float]]]]]:
    scenarios: list[tuple[str, Callable[[], Awaitable[list[float]]]]] = [
        (key, lambda argv=argv: _time_process(argv, cold)) for key, argv in baselines.items()
    ]
    for name, (backend, agent) in live.items():
        cold_runs = max(3, cold // 3) if name == "docker-runsc" else cold  # gVisor boxes are slow to make
        scenarios.append((f"{name}/create+first", lambda b=backend, n=cold_runs: _create_first(b, boxes, n)))
        scenarios.append((f"{name}/steady", lambda a=agent: _steady(a, steady)))
    for name, tool in tools.items():
        scenarios.append((f"{name}/tool create+exec", lambda t=tool: t.create_first(cold)))
        scenarios.append((f"{name}/tool exec", lambda t=tool: t.steady(steady)))
    return scenarios


async def run(*, rounds: int, cold: int, steady: int, runsc: bool = False, tools: bool = True) -> dict[str, Any]:
    """Measure every scenario ``rounds`` times in turn; ``cold`` boxes and ``steady`` commands per round."""
    image = sandbox_image_name()
    baselines: dict[str, list[str]] = {}
    unavailable: dict[str, str] = {}
    python = ["python3", "-I", "-S", "-c", ""]  # what starting the agent costs on top
    if shutil.which("bwrap"):
        baselines["bwrap-true"] = _bwrap_argv(["true"])
        baselines["bwrap-python"] = _bwrap_argv(python)
    else:
        unavailable["bwrap-true"] = "bwrap is not installed"
    if shutil.which("docker"):
        baselines["docker-run-true"] = ["docker", "run", "--rm", "--network", "none", image, "true"]
        baselines["docker-run-python"] = ["docker", "run", "--rm", "--network", "none", image, *python]
    else:
        unavailable["docker-run-true"] = "docker is not installed"
    backends = {name: await _available(name) for name in (*BACKENDS, *(["docker-runsc"] if runsc else []))}
    unavailable.update({name: reason for name, reason in backends.items() if isinstance(reason, str)})
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-sandbox-") as directory:
        root = Path(directory)
        root.chmod(0o755)
        boxes = _Boxes(root)
        live: dict[str, tuple[Backend, AgentClient]] = {}
        servers: dict[str, _Tools] = {}
        try:
            async with AsyncExitStack() as stack:
                await _open_live(backends, boxes, live)
                if tools:
                    await _open_tools(backends, root, stack, servers)
                for argv in baselines.values():
                    await _time_process(argv, 2)  # warm-up (page cache, dockerd)
                for round_no in range(rounds):
                    scenarios = _scenarios(baselines, live, servers, boxes, cold=cold, steady=steady)
                    if round_no % 2:
                        scenarios.reverse()
                    for key, measure in scenarios:
                        await anyio.to_thread.run_sync(lambda: wait_quiet(max_busy_cores=0.4, timeout=20))
                        samples.setdefault(key, []).extend(await measure())
        finally:
            for backend in backends.values():
                if not isinstance(backend, str):
                    await backend.aclose()
    return {"samples": {k: _stats(v) for k, v in samples.items()}, "unavailable": unavailable, "image": image}


def ratios(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 of each backend scenario over its baseline's p50 (and steady over create+first)."""
    out: dict[str, dict[str, float]] = {}
    for name, baseline in (
        ("bubblewrap", "bwrap-true"),
        ("docker", "docker-run-true"),
        ("docker-runsc", "docker-run-true"),
    ):
        base = stats.get(baseline, {}).get("p50_ms")
        cold = stats.get(f"{name}/create+first", {}).get("p50_ms")
        warm = stats.get(f"{name}/steady", {}).get("p50_ms")
        tool_cold = stats.get(f"{name}/tool create+exec", {}).get("p50_ms")
        tool_warm = stats.get(f"{name}/tool exec", {}).get("p50_ms")
        entry: dict[str, float] = {}
        if base and cold:
            entry["create_first_vs_baseline"] = round(cold / base, 2)
        if base and warm:
            entry["steady_vs_baseline"] = round(warm / base, 3)
        if base and tool_cold:
            entry["tool_create_exec_vs_baseline"] = round(tool_cold / base, 2)
        if base and tool_warm:
            entry["tool_exec_vs_baseline"] = round(tool_warm / base, 3)
        if entry:
            out[name] = entry
    return out


def _git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, few samples (a smoke run, ~15 s)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over all scenarios (default 3)")
    parser.add_argument("--runsc", action="store_true", help="also the docker backend on gVisor (runtime runsc)")
    parser.add_argument("--no-tools", action="store_true", help="skip the scenarios through the MCP server")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    cold, steady = (5, 50) if args.quick else (15, 300)
    logging.getLogger("sandbox").setLevel(logging.WARNING)  # the manager logs every create and destroy
    result = anyio.run(lambda: run(rounds=rounds, cold=cold, steady=steady, runsc=args.runsc, tools=not args.no_tools))
    stats: dict[str, dict[str, Any]] = result["samples"]
    print(f"{'scenario':<26} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8}")
    for key, row in stats.items():
        print(f"{key:<26} {row['n']:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['min_ms']:>8.2f}")
    for key, reason in result["unavailable"].items():
        print(f"{key:<26} unavailable: {reason}")
    computed = ratios(stats)
    print()
    print("p50 ratios against the baseline of the same run (bwrap-true for bubblewrap, docker-run-true for docker):")
    for name, entry in computed.items():
        parts = (
            [f"create+first {entry['create_first_vs_baseline']:.2f}x"] if "create_first_vs_baseline" in entry else []
        )
        if "steady_vs_baseline" in entry:
            parts.append(f"steady command {entry['steady_vs_baseline']:.3f}x")
        if "tool_create_exec_vs_baseline" in entry:
            parts.append(f"tools create+exec {entry['tool_create_exec_vs_baseline']:.2f}x")
        if "tool_exec_vs_baseline" in entry:
            parts.append(f"tool exec {entry['tool_exec_vs_baseline']:.3f}x")
        print(f"  {name:<13} " + ", ".join(parts))
    report = {
        "command": " ".join(["python -m bench.sandbox", *(argv if argv is not None else sys.argv[1:])]),
        "commit": _git_commit(),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cores": os.cpu_count(),
        "image": result["image"],
        "rounds": rounds,
        "scenarios": stats,
        "ratios": computed,
        "unavailable": result["unavailable"],
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sandbox.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'sandbox.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
