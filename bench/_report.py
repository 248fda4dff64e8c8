"""The benchmark's report: the table, the ratios against direct calls, the profile summary, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._profile import ProfileSummary
from bench._venv import FASTMCP_VERSION

__all__ = ["git_state", "machine", "print_profile", "print_table", "ratios"]

ROOT = Path(__file__).resolve().parent.parent


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if "calls_per_s" not in a or "calls_per_s" not in b:
        return None
    return round(a["calls_per_s"] / b["calls_per_s"], 3)


def ratios(summaries: dict[str, dict[str, Any]], clients: int) -> dict[str, Any]:
    direct, par = summaries["direct"], summaries[f"direct-x{clients}"]
    fastmcp = summaries["fastmcp-legacy"]
    out: dict[str, Any] = {}
    for key, base in (
        ("portal-legacy", direct),
        ("portal-2026", direct),
        (f"portal-legacy-x{clients}", par),
        (f"portal-2026-x{clients}", par),
        ("fastmcp-legacy", direct),
    ):
        row = summaries[key]
        if "p50_ms" not in row or "p50_ms" not in base:
            continue
        entry: dict[str, Any] = {
            "throughput_vs_direct": _ratio(row, base),
            "added_p50_ms": round(row["p50_ms"] - base["p50_ms"], 3),
            "added_p99_ms": round(row["p99_ms"] - base["p99_ms"], 3),
        }
        if key.startswith("portal") and "proxy" in row["cpu_ms_per_call"]:
            entry["portal_cpu_ms_per_call"] = row["cpu_ms_per_call"]["proxy"]
        if key in ("portal-legacy", "portal-2026"):
            entry["vs_fastmcp"] = _ratio(row, fastmcp)
        out[key] = entry
    return out


def print_table(summaries: dict[str, dict[str, Any]], ratios: dict[str, Any]) -> None:
    header = (
        f"{'scenario':<20} {'mode':<10} {'cl':>2} {'calls':>6} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f"  {'cpu ms/call: client upstream proxy'}  {'others'}"
    )
    print(header)
    print("-" * len(header))
    for key, row in summaries.items():
        if "calls" not in row:
            print(f"{key:<20} {row['mode']:<10} {row['clients']:>2}  {row['status']}: {row.get('reason', '')[:140]}")
            continue
        cpu = row["cpu_ms_per_call"]
        cpus = " ".join(f"{cpu[r]:6.2f}" if r in cpu else f"{'-':>6}" for r in ("client", "upstream", "proxy"))
        errors = f"  ({row['errors']} errors: {row.get('first_error', '')[:60]})" if row["errors"] else ""
        print(
            f"{key:<20} {row['mode']:<10} {row['clients']:>2} {row['calls']:>6} {row['calls_per_s']:>8.1f}"
            f" {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  {cpus:>34}  {row['background_cores']:>6.2f}{errors}"
        )
    print("(others: cores used by other processes of the machine during the scenario; 2 cores in all)")
    print()
    print("against direct, same run (targets: >= 0.70x throughput, <= 2 ms added p50, faster than FastMCP):")
    for key, entry in ratios.items():
        extra = f", {entry['vs_fastmcp']:.1f}x FastMCP" if entry.get("vs_fastmcp") else ""
        cpu = f", portal CPU {entry['portal_cpu_ms_per_call']:.2f} ms/call" if "portal_cpu_ms_per_call" in entry else ""
        print(
            f"  {key:<20} {entry['throughput_vs_direct']:.2f}x throughput, "
            f"{entry['added_p50_ms']:+.2f} ms p50, {entry['added_p99_ms']:+.2f} ms p99{cpu}{extra}"
        )


def print_profile(profiles: dict[str, ProfileSummary | str]) -> None:
    for mode, profile in profiles.items():
        print()
        if isinstance(profile, str):
            print(f"portal profile ({mode}): {profile}")
            continue
        print(f"portal profile ({mode}, {profile['samples']} samples):")
        print("  by owner:  " + ", ".join(f"{k} {v:.0%}" for k, v in profile["owner"].items() if v >= 0.01))
        print("  by leaf:   " + ", ".join(f"{k} {v:.0%}" for k, v in profile["self_by_package"].items() if v >= 0.01))
        print("  portal functions (inclusive):")
        for label, share in profile["top_portal"][:8]:
            print(f"    {share:6.1%}  {label}")
        print("  hottest functions (self):")
        for label, share in profile["top_self"][:10]:
            print(f"    {share:6.1%}  {label}")


def git_state() -> dict[str, Any]:
    """HEAD, and the portal files that differ from it (the portal runs from the work tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--", "portal").splitlines()}


def machine(node: str) -> dict[str, Any]:
    cpu_model = ""
    try:
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "node": node_version,
        "mcp": version("mcp"),
        "fastmcp": FASTMCP_VERSION,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
    }
