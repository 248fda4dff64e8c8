"""The benchmark's own venv, ``bench/.venv-fastmcp``: FastMCP (the baseline) and py-spy, out of the project venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["FASTMCP_VERSION", "VENV", "Unavailable", "ensure_fastmcp", "ensure_package", "ensure_pyspy", "venv_bin"]

VENV = Path(__file__).resolve().parent / ".venv-fastmcp"
FASTMCP_VERSION = "4.1.6"
_INSTALL_TIMEOUT = 600


class Unavailable(Exception):
    """A baseline or tool cannot be had on this machine; the benchmark reports it and goes on."""


def venv_bin(name: str) -> Path:
    """Path of an executable in the bench venv."""
    return VENV / "bin" / name


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{what}: {error}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


def _create_venv() -> None:
    if venv_bin("python").exists():
        return
    python3 = shutil.which("python3") or sys.executable
    print(f"bench: creating {VENV} (first use)", file=sys.stderr)
    _run([python3, "-m", "venv", str(VENV)], f"python3 -m venv {VENV}")


def ensure_package(requirement: str, *, probe: list[str]) -> None:
    """Install ``requirement`` into the bench venv unless ``probe`` (argv run with that venv) already succeeds.

    Raises:
        Unavailable: The venv cannot be created or the package cannot be installed.
    """
    _create_venv()
    try:
        if subprocess.run(probe, capture_output=True, timeout=120, check=False).returncode == 0:
            return
    except (OSError, subprocess.TimeoutExpired):
        pass
    print(f"bench: pip install {requirement} into {VENV}", file=sys.stderr)
    _run([str(venv_bin("python")), "-m", "pip", "install", "--quiet", requirement], f"pip install {requirement}")
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=120, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise Unavailable(f"{requirement} installed but {' '.join(probe[-2:])!r} still fails")


def ensure_fastmcp() -> Path:
    """The bench venv's interpreter, with ``fastmcp==4.1.6`` importable.

    Raises:
        Unavailable: FastMCP cannot be installed.
    """
    probe = [
        str(venv_bin("python")),
        "-c",
        f"import fastmcp, sys; sys.exit(fastmcp.__version__ != {FASTMCP_VERSION!r})",
    ]
    ensure_package(f"fastmcp=={FASTMCP_VERSION}", probe=probe)
    return venv_bin("python")


def ensure_pyspy() -> Path:
    """The bench venv's ``py-spy``.

    Raises:
        Unavailable: py-spy cannot be installed.
    """
    ensure_package("py-spy", probe=[str(venv_bin("py-spy")), "--version"])
    return venv_bin("py-spy")
