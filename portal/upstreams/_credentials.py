"""What the portal presents to an upstream besides its configuration: secrets and user tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import httpx2

__all__ = ["Credentials"]


class Credentials(Protocol):
    """Supplies stored credentials when an upstream connects (implemented in ``portal/auth/``).

    Values are fetched at each connection, never kept on the :class:`Upstream`, so a changed secret takes
    effect at the next reconnect and nothing secret sits in the settings.
    """

    async def headers(self, server: str) -> Mapping[str, str]:
        """Headers to send to a ``url`` server, on top of its configured ones."""
        ...

    async def env(self, server: str) -> Mapping[str, str]:
        """Environment of a ``command`` server, on top of its configured ``env``."""
        ...

    def auth(self, server: str, subject: str | None) -> httpx2.Auth | None:
        """The OAuth token flow of ``server`` for ``subject`` (None: the shared session), if it uses OAuth."""
        ...
