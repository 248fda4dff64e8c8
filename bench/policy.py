"""Policy decision cost at 10, 200 and 2,000 rules, against a trivial allow-all decision measured in the same run.

Run ``.venv/bin/python -m bench.policy`` (``--quick`` for a short run). For each size it writes a synthetic but
realistic policy directory (literal tool rules, server rules with annotation hints, name globs, CEL conditions
on the principal and on the arguments, guardrail denies for everyone, roles from users and groups), loads it
with :func:`portal.policy.load_policy` like the portal does, and times single decisions with
``time.perf_counter_ns``:

- ``call``: ``tools/call`` decisions over a catalog of tools the engine has seen before (the steady state);
- ``first``: ``tools/call`` decisions for names it has never seen (the index is consulted, nothing remembered);
- ``list``: filtering a whole ``tools/list`` of the catalog (one decision per tool), per listing.

Besides its rules, each policy has a limit, redaction or egress entry for every five rules (literal tools,
servers, ``SERVER__verb_*`` globs, some with conditions on the principal or the arguments, two for everyone),
so an allowed call also pays for collecting the ones that apply.

Figures are p50/p99 in microseconds, and the ratio of p50 to the allow-all baseline (``AllowLocal``) timed the
same way in the same run. Results go to ``bench/results/policy.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mcp_types as types
import yaml

from portal.policy import PolicyEngine, load_policy, parse_principal
from portal.policy_seam import AllowLocal, Request
from portal.principal import LOCAL_PRINCIPAL, Principal

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SIZES = (10, 200, 2_000)
VERBS = ["get", "list", "search", "create", "update", "delete", "run", "read", "write", "close"]


def _server(i: int) -> str:
    return f"srv{i:03d}"


def synthetic_policy(rules: int, *, seed: int = 7) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A policy file with ``rules`` rules, and the catalog ``(name, server)`` it speaks about."""
    rng = random.Random(seed)
    servers = max(4, rules // 20)
    roles = [f"role{i}" for i in range(max(3, rules // 25))]
    catalog = [(f"{_server(s)}__{verb}_{k}", _server(s)) for s in range(servers) for verb in VERBS for k in range(2)]
    specs: list[dict[str, Any]] = [
        {
            "name": "no-private-keys",
            "effect": "deny",
            "roles": ["*"],
            "when": 'has(arguments.key) && arguments.key.contains("PRIVATE KEY")',
        },
        {
            "name": "no-prod-deletes",
            "effect": "deny",
            "roles": ["*"],
            "servers": [_server(0)],
            "tools": ["*__delete_*"],
        },
    ]
    while len(specs) < rules:
        kind = rng.random()
        role = rng.choice(roles)
        effect = rng.choices(["allow", "deny", "require_approval"], weights=[7, 2, 1])[0]
        name, server = rng.choice(catalog)
        spec: dict[str, Any] = {"name": f"r{len(specs)}", "effect": effect, "roles": [role]}
        if kind < 0.40:
            spec["tools"] = [name]
        elif kind < 0.65:
            spec["servers"] = [server]
            if rng.random() < 0.5:
                spec["annotations"] = {"readOnlyHint": True} if effect == "allow" else {"destructiveHint": True}
        elif kind < 0.80:
            spec["tools"] = [f"{server}__{rng.choice(VERBS)}_*"]
        elif kind < 0.90:
            spec["servers"] = [server]
            spec["when"] = f'"{rng.choice(["g0", "g1", "g2"])}" in principal.groups && now.getHours() < 24'
        else:
            spec["tools"] = [name]
            spec["when"] = "has(arguments.n) && arguments.n < 100"
        specs.append(spec)
    policy = {
        "version": 1,
        **obligations(max(3, rules // 5), roles, catalog, rng),
        "roles": {r: {} for r in roles},
        "principals": {
            "users": {"alice": {"roles": roles[:2]}},
            "groups": {"g0": {"roles": [roles[2 % len(roles)]]}, "g1": {"roles": roles[3:6] or roles[:1]}},
        },
        "rules": specs[:rules],
    }
    return policy, catalog


def obligations(
    count: int, roles: list[str], catalog: Sequence[tuple[str, str]], rng: random.Random
) -> dict[str, list[dict[str, Any]]]:
    """``count`` limits, redactions and egress entries matched like rules; the first of each kind is for everyone."""
    found: dict[str, list[dict[str, Any]]] = {"limits": [], "redact": [], "egress": []}
    for i in range(count):
        kind = ("limits", "redact", "egress")[i % 3]
        name, server = rng.choice(catalog)
        spec: dict[str, Any] = {"name": f"o{i}", "roles": ["*"] if i < 3 else [rng.choice(roles)]}
        shape = rng.random()
        if i < 3:
            pass
        elif shape < 0.4:
            spec["tools"] = [name]
        elif shape < 0.7:
            spec["servers"] = [server]
        elif shape < 0.85:
            spec["tools"] = [f"{server}__{rng.choice(VERBS)}_*"]
        else:
            spec["servers"] = [server]
            spec["when"] = "has(arguments.n) && arguments.n > 50"
        if kind == "limits":
            spec |= {"rate": f"{rng.randrange(5, 100)}/minute", "per": ["principal", "tool"]}
        elif kind == "redact":
            spec["patterns"] = rng.sample(["email", "jwt", "bearer", "github_token", "aws_access_key"], 2)
        else:
            spec["hosts"] = [f"api{i}.example.com", f"*.cdn{i}.example.net"]
        found[kind].append(spec)
    return found


def _requests(catalog: Sequence[tuple[str, str]], rng: random.Random) -> list[Request]:
    hints = [None, types.ToolAnnotations(read_only_hint=True), types.ToolAnnotations(destructive_hint=True)]
    return [
        Request("tools/call", name, server, {"n": rng.randrange(200), "path": "/tmp/x"}, rng.choice(hints))
        for name, server in catalog
    ]


def _time(decide: Callable[[Principal, Request], object], principal: Principal, requests: list[Request]) -> list[int]:
    timings: list[int] = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        decide(principal, request)
        timings.append(clock() - start)
    return timings


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def _stats(values: list[int]) -> dict[str, float]:
    return {"p50_us": round(_percentile(values, 0.50), 2), "p99_us": round(_percentile(values, 0.99), 2)}


def measure(size: int, *, decisions: int, principal: Principal) -> dict[str, Any]:
    """Load a policy of ``size`` rules and time its decisions."""
    policy, catalog = synthetic_policy(size)
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "bench.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        started = time.perf_counter()
        engine: PolicyEngine = load_policy(Path(directory))
        load_ms = (time.perf_counter() - started) * 1000
    rng = random.Random(size)
    requests = _requests(catalog, rng)
    for request in requests:  # the steady state: every catalog name seen once
        engine.decide(principal, request)
    steady = [rng.choice(requests) for _ in range(decisions)]
    fresh = [
        Request("tools/call", f"{server}__new_{i}", server, {"n": 1}, None)
        for i, (_, server) in enumerate(rng.choice(catalog) for _ in range(min(decisions, 5_000)))
    ]
    listing = [Request("list", r.target, r.server, None, r.annotations) for r in requests]
    list_timings: list[int] = []
    for _ in range(max(20, decisions // len(listing))):
        start = time.perf_counter_ns()
        for request in listing:
            engine.decide(principal, request)
        list_timings.append(time.perf_counter_ns() - start)
    allowed = sum(engine.decide(principal, r).allowed for r in requests)
    carried = [engine.decide(principal, r) for r in requests]
    return {
        "rules": len(engine.rules),
        "obligations": len(engine.obligations),
        "obligations_per_allowed_call": round(
            sum(len(d.limits) + len(d.redactions) + len(d.egress) for d in carried if d.allowed)
            / max(1, sum(d.allowed for d in carried)),
            1,
        ),
        "catalog_tools": len(catalog),
        "allowed_of_catalog": allowed,
        "load_ms": round(load_ms, 1),
        "call": _stats(_time(engine.decide, principal, steady)),
        "first": _stats(_time(engine.decide, principal, fresh)),
        "list_catalog": {k.replace("_us", "_ms"): round(v / 1000, 3) for k, v in _stats(list_timings).items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer decisions (a smoke run)")
    args = parser.parse_args(argv)
    decisions = 5_000 if args.quick else 50_000
    principal = parse_principal("user:alice", groups=frozenset({"g0", "g1"}))
    baseline_requests = _requests(synthetic_policy(10)[1], random.Random(0))
    baseline_requests = [random.Random(1).choice(baseline_requests) for _ in range(decisions)]
    baseline = _stats(_time(AllowLocal().decide, LOCAL_PRINCIPAL, baseline_requests))
    results = {size: measure(size, decisions=decisions, principal=principal) for size in SIZES}
    baseline = _stats(_time(AllowLocal().decide, LOCAL_PRINCIPAL, baseline_requests))  # again, after warm-up

    print(f"baseline (allow-all AllowLocal.decide): p50 {baseline['p50_us']:.2f} us, p99 {baseline['p99_us']:.2f} us")
    header = f"{'rules':>6} {'oblig':>6} {'load ms':>8} {'call p50':>9} {'p99':>8} {'x base':>7}"
    header += f" {'first p50':>10} {'p99':>8}"
    print(header + f" {'list ms p50':>12} {'tools':>6}")
    for size, r in results.items():
        ratio = r["call"]["p50_us"] / baseline["p50_us"]
        print(
            f"{size:>6} {r['obligations']:>6} {r['load_ms']:>8.1f}"
            f" {r['call']['p50_us']:>9.2f} {r['call']['p99_us']:>8.2f} {ratio:>6.0f}x"
            f" {r['first']['p50_us']:>10.2f} {r['first']['p99_us']:>8.2f} {r['list_catalog']['p50_ms']:>12.3f}"
            f" {r['catalog_tools']:>6}"
        )
    report = {
        "command": "python -m bench.policy" + (" --quick" if args.quick else ""),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "decisions_per_size": decisions,
        "baseline_allow_all": baseline,
        "sizes": {str(size): r for size, r in results.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "policy.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'policy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
