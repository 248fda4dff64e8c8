"""Client-safe, stable names for federated tools and prompts.

Every name a client sees matches ``^[A-Za-z0-9_-]{1,64}$`` (valid for the major model APIs). A prefixed
name is ``PREFIX__upstream``; characters outside the set become ``_``; a name that is too long, or that
collides with another after cleaning, keeps a readable head and gets an 8-hex suffix derived from the
server and the exact upstream name, so the same upstream tool always gets the same name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["MAX_NAME", "SEPARATOR", "assign_names", "is_client_safe"]

MAX_NAME = 64
SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_client_safe(name: str) -> bool:
    """Whether ``name`` is a valid client-facing tool name."""
    return bool(_SAFE.match(name))


def _suffix(server: str, upstream: str) -> str:
    return hashlib.sha256(f"{server}\0{upstream}".encode()).hexdigest()[:8]


def _with_suffix(base: str, server: str, upstream: str) -> str:
    tail = "_" + _suffix(server, upstream)
    return base[: MAX_NAME - len(tail)] + tail


def assign_names(server: str, prefix: str | None, upstream_names: Iterable[str]) -> dict[str, str]:
    """Map each upstream name of one server to its client-facing name.

    Args:
        server: The server's configured name (seeds the collision suffix).
        prefix: The prefix to put before each name, or None to keep upstream names.
        upstream_names: The names the upstream reported.

    Returns:
        ``{upstream_name: exposed_name}``; exposed names are unique and client-safe.
    """
    head = f"{prefix}{SEPARATOR}" if prefix else ""
    result: dict[str, str] = {}
    taken: set[str] = set()
    # Sorted so that which of two colliding names keeps the plain form never depends on upstream order.
    for upstream in sorted(set(upstream_names)):
        candidate = head + (_UNSAFE.sub("_", upstream) or "_")
        if len(candidate) > MAX_NAME or candidate in taken:
            candidate = _with_suffix(candidate, server, upstream)
        result[upstream] = candidate
        taken.add(candidate)
    return result
