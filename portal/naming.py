"""Client-safe, stable names for federated tools and prompts.

Every name a client sees matches ``[A-Za-z0-9_-]{1,64}`` (valid for the major model APIs). A prefixed
name is ``PREFIX__upstream``; characters outside the set become ``_``; a name that is too long, or that
collides with another after cleaning, keeps a readable head and gets an 8-hex suffix derived from the
server and the exact upstream name, so the same upstream tool always gets the same name.

Which name keeps the plain form never depends on the order the upstream lists its tools in: an upstream
name that is already client-safe (and fits with the prefix) always keeps its exact form, so an added tool
can never take a name away from it; the other names then take what is left, in sorted order, and a
suffixed name that is taken too gets another suffix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["MAX_NAME", "SEPARATOR", "assign_names", "is_client_safe"]

MAX_NAME = 64
SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_client_safe(name: str) -> bool:
    """Whether ``name`` is a valid client-facing tool name."""
    return _SAFE.fullmatch(name) is not None


def _suffix(server: str, upstream: str, attempt: int) -> str:
    seed = f"{server}\0{upstream}" if attempt == 0 else f"{server}\0{upstream}\0{attempt}"
    # surrogatepass: an upstream name decoded from JSON may hold a lone surrogate; it must not crash.
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _with_suffix(base: str, server: str, upstream: str, taken: set[str]) -> str:
    attempt = 0
    while True:
        tail = "_" + _suffix(server, upstream, attempt)
        candidate = base[: MAX_NAME - len(tail)] + tail
        if candidate not in taken:
            return candidate
        attempt += 1


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
    unique = set(upstream_names)
    # Names that need no cleaning keep their exact form: they are distinct, so they never collide.
    result = {u: head + u for u in unique if is_client_safe(u) and len(head + u) <= MAX_NAME}
    taken = set(result.values())
    # Sorted so that which of two colliding names keeps the plain form never depends on upstream order.
    for upstream in sorted(unique - result.keys()):
        candidate = head + (_UNSAFE.sub("_", upstream) or "_")
        if len(candidate) > MAX_NAME or candidate in taken:
            candidate = _with_suffix(candidate, server, upstream, taken)
        result[upstream] = candidate
        taken.add(candidate)
    return result
