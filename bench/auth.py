"""Token verification cost per request, against an unauthenticated request measured in the same run.

Run ``.venv/bin/python -m bench.auth`` (``--quick`` for a short run). Two parts:

- **verify**: :meth:`portal.auth.TokenService.verify` alone, as the protected-resource guard calls it for
  every request (RS256 signature, claims, then the revocation lookup: one indexed join on SQLite), and its
  two halves (``decode`` = signature and claims; ``lookup`` = the database), timed with
  ``time.perf_counter_ns``.
- **http**: two portals served by uvicorn in this process on 127.0.0.1, identical but for ``[auth] mode``:
  ``none`` and ``oauth`` (a token minted as ``dockyard token create`` does, sent as ``Authorization:
  Bearer``). The official client (``mcp.Client``, ``mode="legacy"``) calls the in-process ``echo`` tool of
  each, one call after another; both portals are measured in alternating windows. The ratio of p50 latency
  (oauth / none) is the price of authentication per call.

Results go to ``bench/results/auth.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer

from portal.app import create_app
from portal.config import Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SERVER = MCPServer("bench")


@SERVER.tool()
def echo(message: str) -> str:
    """Return the message."""
    return message


POLICY = """version: 1
roles: {user: {}}
principals:
  local: {roles: [user]}
  services:
    bench: {roles: [user]}
rules:
  - {name: everyone-echoes, effect: allow, roles: [user]}
"""


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(ns: Sequence[int]) -> dict[str, float]:
    us = [n / 1000 for n in ns]
    return {"p50_us": round(_percentile(us, 0.5), 1), "p99_us": round(_percentile(us, 0.99), 1), "n": len(us)}


def _time(fn: Callable[[], object], count: int) -> list[int]:
    samples: list[int] = []
    for _ in range(count):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return samples


def _settings(tmp: Path, mode: str) -> Settings:
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "bench.yaml").write_text(POLICY)
    raw: dict[str, Any] = {
        "portal": {"data_dir": str(tmp / f"data-{mode}")},
        "auth": {"mode": mode},
        "policy": {"dir": str(policies)},
        "servers": {"bench": {"module": "bench.auth:SERVER"}},
    }
    return settings_from_mapping(raw, source="<bench>", base_dir=tmp, environ=os.environ)


@asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    settings = settings.with_overrides(host="127.0.0.1", port=port)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        await app.state.portal.gateway.ready.wait()
        try:
            yield f"http://127.0.0.1:{port}", app.state.portal
        finally:
            server.should_exit = True
    sock.close()


def verify_part(portal: Any, count: int) -> dict[str, Any]:
    """Time the guard's verification, whole and in halves, on the oauth portal's own service."""
    auth = portal.auth
    token, _ = auth.mint("bench", scopes=["tools:read", "tools:call"], ttl=3600)
    resource = f"{auth.issuer}/mcp"
    claims = auth.tokens.decode(token)
    for _ in range(200):  # warm-up: key import, statement cache, connection pool
        auth.tokens.verify(token, resource=resource)
    return {
        "verify": _summary(_time(lambda: auth.tokens.verify(token, resource=resource), count)),
        "decode": _summary(_time(lambda: auth.tokens.decode(token), count)),
        "lookup": _summary(_time(lambda: auth.ledger.is_revoked(claims["jti"]), count)),
    }


async def guard_part(portal: Any, count: int) -> dict[str, Any]:
    """The guard as the portal runs it (thread hop included), around an app that answers at once."""
    from portal.auth import ResourceGuard

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    auth = portal.auth
    token, _ = auth.mint("bench", scopes=["tools:read", "tools:call"], ttl=3600)
    guard = ResourceGuard(app, tokens=auth.tokens, public_url=auth.issuer, read_only_tools=lambda name: False)
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    async def once(target: Any) -> int:
        scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
        start = time.perf_counter_ns()
        await target(scope, receive, send)
        return time.perf_counter_ns() - start

    for _ in range(200):
        await once(guard)
    return {
        "guarded": _summary([await once(guard) for _ in range(count)]),
        "open": _summary([await once(app) for _ in range(count)]),
    }


async def _calls(url: str, headers: dict[str, str], count: int) -> list[int]:
    samples: list[int] = []
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as client,
    ):
        for i in range(20):
            await client.call_tool("bench__echo", {"message": f"warm {i}"})
        for i in range(count):
            start = time.perf_counter_ns()
            result = await client.call_tool("bench__echo", {"message": f"bench {i}"})
            samples.append(time.perf_counter_ns() - start)
            assert not result.is_error
    return samples


async def run(calls: int, rounds: int, verifies: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            _serve(_settings(Path(tmp), "none")) as (none_url, _),
            _serve(_settings(Path(tmp), "oauth")) as (oauth_url, oauth_portal),
        ):
            token, _ = oauth_portal.auth.mint("bench", scopes=["tools:read", "tools:call"], ttl=3600)
            samples: dict[str, list[int]] = {"none": [], "oauth": []}
            for _ in range(rounds):  # alternate, so drift in machine load hits both alike
                samples["none"] += await _calls(none_url, {}, calls)
                samples["oauth"] += await _calls(oauth_url, {"Authorization": f"Bearer {token}"}, calls)
            verify = await anyio.to_thread.run_sync(verify_part, oauth_portal, verifies)
            guard = await guard_part(oauth_portal, verifies)
    http = {mode: _summary(ns) for mode, ns in samples.items()}
    for mode, ns in samples.items():
        http[mode]["calls_per_s"] = round(len(ns) / (sum(ns) / 1e9), 1)
    extra = http["oauth"]["p50_us"] - http["none"]["p50_us"]
    return {
        "verify": verify,
        "guard": guard,
        "http": http,
        "ratio_p50": round(http["oauth"]["p50_us"] / http["none"]["p50_us"], 3),
        "extra_p50_us": round(extra, 1),
        "mean_ratio": round(statistics.mean(samples["oauth"]) / statistics.mean(samples["none"]), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.auth", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 calls x 1 round, 2,000 verifications")
    args = parser.parse_args(argv)
    calls, rounds, verifies = (200, 1, 2_000) if args.quick else (1_000, 3, 20_000)
    logging.basicConfig(level=logging.WARNING, force=True)  # a log line per request would be measured too
    started = time.time()
    result = anyio.run(run, calls, rounds, verifies)
    result["run"] = {
        "calls_per_round": calls,
        "rounds": rounds,
        "verifications": verifies,
        "seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auth.json").write_text(json.dumps(result, indent=2) + "\n")
    v, g, h = result["verify"], result["guard"], result["http"]
    print(f"verify (whole): p50 {v['verify']['p50_us']} us, p99 {v['verify']['p99_us']} us")
    print(f"  decode (RS256 + claims): p50 {v['decode']['p50_us']} us")
    print(f"  lookup (revocation, SQLite): p50 {v['lookup']['p50_us']} us")
    print(f"guard per request: p50 {g['guarded']['p50_us']} us vs {g['open']['p50_us']} us unguarded")
    for mode in ("none", "oauth"):
        figures = f"p50 {h[mode]['p50_us']} us, p99 {h[mode]['p99_us']} us, {h[mode]['calls_per_s']} calls/s"
        print(f"call via portal, auth {mode:<5}: {figures}")
    extra = f"+{result['extra_p50_us']} us per call"
    print(f"oauth / none p50: {result['ratio_p50']}x ({extra}); mean ratio {result['mean_ratio']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
