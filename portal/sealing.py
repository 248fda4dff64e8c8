"""Authenticated opaque state handed to clients (SECURITY.md T5).

``requestState`` the portal returns in an input-required result wraps the upstream's own state with the
server, tool and principal it belongs to, signed with HMAC-SHA256. A tampered or foreign state is refused,
and so is one sealed with a time to live that has run out.

Two token forms, both ``VERSION.BODY.TAG`` in URL-safe base64 without padding:

- ``dy1``: BODY is the JSON value; TAG is the HMAC of BODY. Never expires.
- ``dy2``: BODY is ``{"exp": UNIX_SECONDS, "v": VALUE}``; TAG is the HMAC of ``dy2.BODY``, so neither form's
  tag can be replayed as the other's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from portal import keyfile
from portal.errors import ExpiredStateError, StateKeyError, TamperedStateError

__all__ = ["KEY_SIZE", "ExpiredStateError", "Sealer", "StateKeyError", "TamperedStateError", "load_or_create_key"]

KEY_SIZE = 32
"""Bytes of a state key."""


def load_or_create_key(path: Path) -> bytes:
    """Read the state key from ``path``, creating it (mode 0600) on first use.

    The key is written to a temporary file and then linked into place, so a process that finds the file
    always finds the whole key; when two processes create it at once, both end up with the winner's key.

    Raises:
        StateKeyError: The file is too short, is readable or writable by group or others, or cannot be read
            or created.
    """
    return keyfile.load_or_create(
        path,
        what="state key",
        size=KEY_SIZE,
        error=StateKeyError,
        wrong_size=lambda _: (
            f"; a state key needs {KEY_SIZE}: delete the file to have a new key created (requestState values "
            "already issued then stop working)"
        ),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals JSON-able values into URL-safe strings and opens them again.

    Args:
        key: The signing key (see :func:`load_or_create_key`).
        clock: Seconds since the epoch; the default is :func:`time.time`.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def _tag(self, message: str) -> str:
        # surrogatepass: a token comes from the client and may hold any string; it must fail the check, not crash.
        return _b64(hmac.digest(self._key, message.encode("utf-8", "surrogatepass"), hashlib.sha256))

    def seal(self, value: dict[str, Any], *, ttl: float | None = None) -> str:
        """Sign ``value``; the result is opaque to clients.

        Args:
            value: A JSON-able mapping.
            ttl: Seconds the token stays valid; None (the default) for no expiry.
        """
        if ttl is None:
            body = _b64(json.dumps(value, separators=(",", ":")).encode())
            return f"dy1.{body}.{self._tag(body)}"
        if not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        expires = math.ceil(self._clock() + ttl)
        body = _b64(json.dumps({"exp": expires, "v": value}, separators=(",", ":")).encode())
        return f"dy2.{body}.{self._tag(f'dy2.{body}')}"

    def open(self, token: str) -> dict[str, Any]:
        """Verify and decode a sealed value.

        Raises:
            TamperedStateError: The token is malformed or its signature does not match.
            ExpiredStateError: The token was sealed with a ``ttl`` that has run out.
        """
        try:
            version, body, tag = token.split(".")
        except ValueError:
            raise TamperedStateError("malformed requestState") from None
        if version == "dy1":
            expected = self._tag(body)
        elif version == "dy2":
            expected = self._tag(f"dy2.{body}")
        else:
            raise TamperedStateError("requestState was not issued by this portal or was modified")
        if not hmac.compare_digest(expected.encode(), tag.encode("utf-8", "surrogatepass")):
            raise TamperedStateError("requestState was not issued by this portal or was modified")
        try:
            value: object = json.loads(_unb64(body))
        except (binascii.Error, ValueError):
            raise TamperedStateError("malformed requestState") from None
        if version == "dy2":
            value = self._unexpired(value)
        if not isinstance(value, dict):
            raise TamperedStateError("malformed requestState")
        return cast(dict[str, Any], value)

    def _unexpired(self, envelope: object) -> object:
        if not isinstance(envelope, dict):
            raise TamperedStateError("malformed requestState")
        fields = cast(dict[str, object], envelope)
        expires = fields.get("exp")
        if not isinstance(expires, int) or isinstance(expires, bool) or "v" not in fields:
            raise TamperedStateError("malformed requestState")
        if self._clock() >= expires:
            raise ExpiredStateError("requestState has expired; start the request again")
        return fields["v"]
