"""Secret key files: created once with mode 0600, refused when other users could read them (SECURITY.md U3).

A key is written to a temporary file and then linked into place, so a process that finds the file always
finds the whole key; when two processes create it at once, both end up with the winner's key. The state
key that seals ``requestState`` (:mod:`portal.sealing`) and the vault key (:mod:`portal.auth`) live in
such files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["load_or_create"]


def load_or_create(
    path: Path,
    *,
    what: str,
    size: int,
    error: Callable[[str], Exception],
    wrong_size: Callable[[int], str],
    exact: bool = False,
) -> bytes:
    """The key in ``path``, created with ``size`` random bytes (mode 0600) when there is none.

    Args:
        path: The key file.
        what: What the key is, for messages (``"state key"``).
        size: Bytes of a new key, and the least a file may hold.
        error: Builds the exception raised for a problem, from its message.
        wrong_size: The end of the message about a file of the wrong size, given its size.
        exact: Refuse a file longer than ``size`` too.

    Raises:
        Exception: Built by ``error``: the file is open to group or others, of the wrong size, or cannot be
            read or created.
    """
    try:
        return _read(path, what=what, size=size, error=error, wrong_size=wrong_size, exact=exact)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _private_temp(path)
    except OSError as problem:
        raise error(f"cannot create the {what} {str(path)!r}: {problem.strerror or problem}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first: use its key
            os.link(tmp, path)
    except OSError as problem:
        raise error(f"cannot create the {what} {str(path)!r}: {problem.strerror or problem}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    try:
        return _read(path, what=what, size=size, error=error, wrong_size=wrong_size, exact=exact)
    except FileNotFoundError:  # a symbolic link to nowhere: linking failed, yet there is nothing to read
        raise error(
            f"cannot read the {what} {str(path)!r}: missing right after being created (a broken symbolic link?)"
        ) from None


def _read(
    path: Path,
    *,
    what: str,
    size: int,
    error: Callable[[str], Exception],
    wrong_size: Callable[[int], str],
    exact: bool,
) -> bytes:
    """The key in ``path``; FileNotFoundError when there is none yet."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY), "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise error(
                    f"the {what} {str(path)!r} is accessible by group or others (mode {mode:04o}); "
                    f"run 'chmod 600 {path}' so only the portal's user can read it"
                )
            key = handle.read()
    except FileNotFoundError:
        raise
    except OSError as problem:
        raise error(f"cannot read the {what} {str(path)!r}: {problem.strerror or problem}") from None
    if len(key) < size or (exact and len(key) != size):
        raise error(f"the {what} {str(path)!r} holds {len(key)} bytes{wrong_size(len(key))}")
    return key


def _private_temp(path: Path) -> tuple[int, str]:
    """An exclusive new file next to ``path`` with mode 0600 whatever the umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.fchmod(fd, 0o600)
        return fd, str(tmp)
