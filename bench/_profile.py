"""Where the portal's CPU goes: py-spy samples of the portal process, split into portal code, SDK code and the rest."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

from bench._procs import BenchError, Services

__all__ = ["ProfileSummary", "record", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
_SDK = {"mcp", "mcp_types"}
_ENTRY = {"cli.py", "__main__.py"}
"""Portal modules that only start the process: on every stack of the event loop, so not charged as portal work."""
_WAITING = {
    ("threading.py", "Condition.wait"),
    ("threading.py", "Event.wait"),
    ("queue.py", "Queue.get"),
    ("selectors.py", "EpollSelector.select"),
}
"""Leaf frames of a thread that waits (py-spy still reports some of them as active): left out of the shares."""


class ProfileSummary(TypedDict):
    """Shares of on-CPU samples of the portal process (py-spy, idle time excluded)."""

    samples: int
    """Samples of running code (waiting leaves excluded)."""
    waiting: int
    """Samples whose leaf was a wait (a worker thread's queue, the event loop's select), left out."""
    owner: dict[str, float]
    """Each sample charged to the innermost portal or SDK frame on its stack, else to the leaf's package."""
    self_by_package: dict[str, float]
    """Each sample charged to the package of the function that was running (leaf frame)."""
    top_self: list[tuple[str, float]]
    """Functions by self time."""
    top_portal: list[tuple[str, float]]
    """Portal functions by inclusive time (on the stack)."""


@contextmanager
def record(py_spy: Path, pid: int, out: Path, *, services: Services, name: str, rate: int = 200) -> Iterator[None]:
    """Sample ``pid`` with py-spy for the duration of the block; raw collapsed stacks go to ``out``.

    Raises:
        BenchError: py-spy could not attach or wrote nothing.
    """
    argv = [str(py_spy), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--full-filenames"]
    proc = services.start(name, [*argv, "--output", str(out)], env={"PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 15
    while "Sampling process" not in services.log_tail(name):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"py-spy did not attach to {pid}: {services.log_tail(name)}")
        time.sleep(0.05)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out.exists():
        raise BenchError(f"py-spy wrote no profile: {services.log_tail(name)}")


def _category(file: str, portal_root: Path) -> str:
    if file.startswith(f"{portal_root}/"):
        return "entry" if file.removeprefix(f"{portal_root}/") in _ENTRY else "portal"
    if "/site-packages/" in file:
        package = file.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        return "mcp SDK" if package in _SDK else package
    if file.startswith(f"{_STDLIB}/"):
        module = file.removeprefix(f"{_STDLIB}/").split("/", 1)[0].removesuffix(".py")
        return f"stdlib {module}"
    return "other"


def _label(func: str, file: str, portal_root: Path) -> str:
    if file.startswith(f"{portal_root.parent}/"):
        short = file.removeprefix(f"{portal_root.parent}/")
    elif "/site-packages/" in file:
        short = file.split("/site-packages/", 1)[1]
    elif file.startswith(f"{_STDLIB}/"):
        short = file.removeprefix(f"{_STDLIB}/")
    else:
        short = file
    return f"{short}:{func}"


def _shares(counter: Counter[str], total: int, limit: int) -> list[tuple[str, float]]:
    return [(key, round(count / total, 4)) for key, count in counter.most_common(limit)]


def summarize(path: Path, portal_root: Path) -> ProfileSummary:
    """Read py-spy's raw output (``root;...;leaf COUNT`` per line) and split the samples."""
    owner: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    portal_inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames: list[tuple[str, str]] = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw)
            frames.append((match["func"], match["file"]) if match else (raw, "?"))
        leaf_func, leaf_file = frames[-1]
        if (Path(leaf_file).name, leaf_func) in _WAITING:
            waiting += count
            continue
        total += count
        categories = [_category(file, portal_root) for _, file in frames]
        by_package[categories[-1]] += count
        self_time[_label(leaf_func, leaf_file, portal_root)] += count
        owner[next((c for c in reversed(categories) if c in ("portal", "mcp SDK")), categories[-1])] += count
        seen = {_label(f, file, portal_root) for (f, file), c in zip(frames, categories, strict=True) if c == "portal"}
        for label in seen:
            portal_inclusive[label] += count
    if total == 0:
        return ProfileSummary(samples=0, waiting=waiting, owner={}, self_by_package={}, top_self=[], top_portal=[])
    return ProfileSummary(
        samples=total,
        waiting=waiting,
        owner=dict(_shares(owner, total, 12)),
        self_by_package=dict(_shares(by_package, total, 15)),
        top_self=_shares(self_time, total, 20),
        top_portal=_shares(portal_inclusive, total, 15),
    )


if __name__ == "__main__":
    summary = summarize(Path(sys.argv[1]), Path(sys.argv[2]))
    for key, value in summary.items():
        print(key, value)
