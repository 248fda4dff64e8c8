"""Runs a stdio upstream so that it dies with the portal, even when the portal is killed with SIGKILL.

Usage: ``python -m portal.upstreams._launcher [--unset=NAME ...] -- COMMAND [ARGS...]``.
The portal starts this launcher as
a session leader (its own process group). The launcher asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``), starts the command in the same process group with the same stdio, and
relays its exit status. On SIGTERM or SIGINT, or when the parent is already gone, it kills the whole
group, so grandchildren (``npx`` → ``node``) go too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

_PR_SET_PDEATHSIG = 1


def _kill_group(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(128 + signum)


def main(argv: list[str]) -> int:
    """Start ``argv`` tied to the parent's lifetime; return its exit status."""
    while argv and argv[0].startswith("--unset="):
        os.environ.pop(argv.pop(0).removeprefix("--unset="), None)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m portal.upstreams._launcher [--unset=NAME ...] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    signal.signal(signal.SIGTERM, _kill_group)
    signal.signal(signal.SIGINT, _kill_group)
    if os.getppid() != parent:  # the parent died before prctl took effect
        _kill_group(signal.SIGTERM, None)
    try:
        child = subprocess.Popen(argv)
    except OSError as error:
        print(f"dockyard: cannot start {argv[0]!r}: {error.strerror}", file=sys.stderr)
        return 127
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
