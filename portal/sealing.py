"""Authenticated opaque state handed to clients (SECURITY.md T5).

``requestState`` the portal returns in an input-required result wraps the upstream's own state with the
server, tool and principal it belongs to, signed with HMAC-SHA256. A tampered or foreign state is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["Sealer", "TamperedStateError", "load_or_create_key"]


class TamperedStateError(ValueError):
    """The state was not issued by this portal, or was changed."""


def load_or_create_key(path: Path) -> bytes:
    """Read a 32-byte key from ``path``, creating it (mode 0600) on first use."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
        finally:
            os.close(fd)
        return key
    if len(key) < 32:
        raise ValueError(f"{path} holds {len(key)} bytes; a state key needs 32")
    return key


class Sealer:
    """Seals JSON-able values into URL-safe strings and opens them again."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, value: dict[str, Any]) -> str:
        """Sign ``value``; the result is opaque to clients."""
        body = base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).rstrip(b"=")
        tag = base64.urlsafe_b64encode(hmac.digest(self._key, body, hashlib.sha256)).rstrip(b"=")
        return f"dy1.{body.decode()}.{tag.decode()}"

    def open(self, token: str) -> dict[str, Any]:
        """Verify and decode a sealed value.

        Raises:
            TamperedStateError: The token is malformed or its signature does not match.
        """
        try:
            version, body, tag = token.split(".")
        except ValueError:
            raise TamperedStateError("malformed requestState") from None
        expected = base64.urlsafe_b64encode(hmac.digest(self._key, body.encode(), hashlib.sha256)).rstrip(b"=")
        if version != "dy1" or not hmac.compare_digest(expected, tag.encode()):
            raise TamperedStateError("requestState was not issued by this portal or was modified")
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if not isinstance(value, dict):
            raise TamperedStateError("malformed requestState")
        return value  # pyright: ignore[reportUnknownVariableType]
