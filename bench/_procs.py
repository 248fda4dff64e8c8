"""Subprocesses of a benchmark run: started in their own process group, bound to loopback, always reaped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "BenchError",
    "Services",
    "cpu_seconds",
    "free_port",
    "machine_busy_seconds",
    "wait_http_ok",
    "wait_port",
    "wait_quiet",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A service of the benchmark could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads, live and exited), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy (not idle or waiting for I/O), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def wait_quiet(*, max_busy_cores: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) until the machine is busier than ``max_busy_cores`` for no whole second.

    Other work on a 2-core machine (a test suite, a build) skews latency figures; this keeps the benchmark
    from starting a scenario in the middle of it. Returns the busy cores of the last one-second sample.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy


def _tail(path: Path, limit: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


class Services:
    """Starts subprocesses and stops every one of them (process group and all) on exit, even on error."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as a session leader; its stdout and stderr go to ``log_dir/NAME.log``."""
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def log_tail(self, name: str) -> str:
        """The end of a service's log, for error messages."""
        return _tail(self.log_dir / f"{name}.log")

    def close(self) -> None:
        """Stop every service: SIGTERM to its group, SIGKILL after 5 s, then reap it."""
        for _, proc in reversed(self._procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # grandchildren too, even when the leader has exited
            proc.wait()
        self._procs.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def wait_port(port: int, proc: subprocess.Popen[bytes], *, name: str, services: Services, timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``.

    Raises:
        BenchError: ``proc`` exited, or nothing listened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}: {services.log_tail(name)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        time.sleep(0.2)  # a server that lost the port to another process exits at once (EADDRINUSE)
        if proc.poll() is None:
            return
    raise BenchError(f"{name} did not listen on 127.0.0.1:{port} within {timeout}s: {services.log_tail(name)}")


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], *, name: str, services: Services, timeout: float) -> None:
    """Wait until ``url`` answers 200 (the portal's ``/readyz`` once its upstreams are connected).

    Raises:
        BenchError: ``proc`` exited, or ``url`` did not answer 200 within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}: {services.log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}: {error.read()[:300]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.1)
    raise BenchError(f"{name} was not ready at {url} within {timeout}s ({last}): {services.log_tail(name)}")
