"""Upstream credentials as the gateway and the upstream supervisors use them.

Static secrets (``dockyard secrets set``) are read from the vault each time an upstream connects; calls
to an ``auth = "oauth"`` upstream go through a session of the calling user's own, which carries that
user's upstream token and nothing of the client's (SECURITY.md R4, U2).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError
from sqlalchemy import Engine

from portal.auth._fetch import FetchPolicy
from portal.auth._upstream_oauth import UpstreamOAuth
from portal.auth._vault import Vault, load_vault_key
from portal.channel import ClientChannel
from portal.config import Settings
from portal.errors import GrantRequiredError, UpstreamUnavailableError
from portal.sealing import Sealer
from portal.upstreams import Upstream

__all__ = ["UpstreamCredentials", "upstream_credentials"]

logger = logging.getLogger("dockyard.credentials")


@dataclass
class _Held:
    session: ClientSession
    close: anyio.Event = field(default_factory=anyio.Event)
    used: float = field(default_factory=time.monotonic)


class UpstreamCredentials:
    """Static secrets and per-user OAuth sessions (implements ``portal.upstreams.Credentials``).

    Args:
        vault: The encrypted vault.
        oauth: The OAuth client of ``auth = "oauth"`` upstreams.
        idle_timeout: Seconds a user's own upstream session stays open without a call.
    """

    def __init__(self, vault: Vault, oauth: UpstreamOAuth, *, idle_timeout: float = 30 * 60) -> None:
        self.vault = vault
        self.oauth = oauth
        self.idle_timeout = idle_timeout
        self._held: dict[tuple[str, str], _Held] = {}
        self._lock = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None

    # ----------------------------------------------------------------- Credentials

    async def headers(self, server: str) -> dict[str, str]:
        """Stored headers of ``server``."""
        values = await anyio.to_thread.run_sync(self.vault.values, "header", server)
        return {name: value.decode() for name, value in values.items()}

    async def env(self, server: str) -> dict[str, str]:
        """Stored environment variables of ``server``."""
        values = await anyio.to_thread.run_sync(self.vault.values, "env", server)
        return {name: value.decode() for name, value in values.items()}

    def auth(self, server: str, subject: str | None) -> httpx2.Auth | None:
        """The OAuth flow of ``server`` for ``subject``, if it uses OAuth."""
        return self.oauth.auth(server, subject)

    # ----------------------------------------------------------------- per-user sessions

    def uses_oauth(self, upstream: Upstream) -> bool:
        """Whether calls to ``upstream`` need the caller's own grant."""
        return self.oauth.uses_oauth(upstream.name)

    async def run(self) -> None:
        """Hold the per-user sessions open until cancelled."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            try:
                while True:
                    await anyio.sleep(min(60.0, self.idle_timeout))
                    self._close_idle()
            finally:
                for held in self._held.values():
                    held.close.set()
                self._task_group = None

    async def user_session(self, upstream: Upstream, subject: str) -> ClientSession:
        """``subject``'s own session to ``upstream``, opened on first use.

        Raises:
            GrantRequiredError: ``subject`` has no usable grant (checked before anything connects).
            UpstreamUnavailableError: The session cannot be opened.
        """
        await self.oauth.access_token(upstream.name, subject)
        key = (upstream.name, subject)
        async with self._lock:
            self._close_idle()
            held = self._held.get(key)
            if held is not None and not held.close.is_set():
                held.used = time.monotonic()
                return held.session
            if self._task_group is None:
                raise UpstreamUnavailableError("the portal is not running its upstream sessions")
            holder: list[_Held] = []

            async def hold(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                try:
                    async with upstream.user_session(subject) as session:
                        holder.append(_Held(session))
                        task_status.started()
                        await holder[0].close.wait()
                finally:
                    if self._held.get(key) is (holder[0] if holder else None):
                        self._held.pop(key, None)

            await self._task_group.start(hold)
            self._held[key] = holder[0]
            return holder[0].session

    def _close_idle(self) -> None:
        idle = time.monotonic() - self.idle_timeout
        for key, held in list(self._held.items()):
            if held.used < idle:
                self.drop(*key)

    def drop(self, server: str, subject: str) -> None:
        """Close ``subject``'s session to ``server`` (after an error); the next call opens a new one."""
        held = self._held.pop((server, subject), None)
        if held is not None:
            held.close.set()

    async def dead_grant(self, upstream: Upstream, subject: str) -> GrantRequiredError | None:
        """After a failed call: the error to report if ``subject``'s grant died; the session is dropped."""
        self.drop(upstream.name, subject)
        return await self.oauth.dead_grant(upstream.name, subject)

    @staticmethod
    def grant_required_result(error: GrantRequiredError, channel: ClientChannel) -> types.CallToolResult:
        """Tell the caller where to grant access: a URL-mode elicitation when the client supports it.

        Raises:
            UrlElicitationRequiredError: The client declared URL-mode elicitation (error -32042 carrying the link).
        """
        message = _consent_message(error)
        if _takes_urls(channel):
            raise _url_elicitation(error, message)
        text = f"{message}: {error.link}"
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)

    @staticmethod
    def grant_required_error(error: GrantRequiredError, channel: ClientChannel) -> MCPError:
        """The same for a request without tool results (prompts, resources): a protocol error with the link."""
        message = _consent_message(error)
        if _takes_urls(channel):
            return _url_elicitation(error, message)
        return MCPError(code=types.INVALID_REQUEST, message=f"{message}: {error.link}")


def _consent_message(error: GrantRequiredError) -> str:
    verb = "was revoked or expired" if error.dead else "has not been granted yet"
    return f"Your access to {error.server!r} {verb}. Open this link to grant Dockyard access, then retry"


def _takes_urls(channel: ClientChannel) -> bool:
    caps = channel.capabilities
    return caps is not None and caps.elicitation is not None and caps.elicitation.url is not None


def _url_elicitation(error: GrantRequiredError, message: str) -> UrlElicitationRequiredError:
    return UrlElicitationRequiredError(
        [types.ElicitRequestURLParams(message=message, url=error.link, elicitation_id=uuid.uuid4().hex)],
        message=f"authorization required for {error.server!r}",
    )


def upstream_credentials(
    settings: Settings, engine: Engine, sealer: Sealer, *, environ: Mapping[str, str]
) -> UpstreamCredentials:
    """The vault (its key from ``environ`` or the data directory) and the upstream OAuth client of a portal.

    Raises:
        VaultKeyError: The vault key is malformed or its file is open to others.
    """
    vault = Vault(engine, load_vault_key(Path(settings.portal.data_dir), environ))
    policy = FetchPolicy(insecure_hosts=frozenset(h.lower() for h in settings.portal.insecure_fetch_hosts))
    oauth = UpstreamOAuth(
        vault, settings.servers, public_url=settings.portal.public_url, sealer=sealer, fetch_policy=policy
    )
    return UpstreamCredentials(vault, oauth)
