"""A small real OAuth-protected MCP server for tests: the SDK's authorization server and resource server in one app.

Its authorization endpoint consents at once, as whichever upstream user ``provider.user`` names (a headless
stand-in for a login page), and every token and authorization request is recorded, so tests can check what
the portal sent (``resource``, PKCE). Tokens are opaque random strings with a configurable lifetime;
``revoke_all(subject)`` withdraws a user's grant the way an upstream's admin would.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


@dataclass
class Provider:
    """An in-memory OAuth authorization server (the SDK's provider protocol)."""

    issuer: str
    user: str = "nobody"
    access_ttl: int = 3600
    clients: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refreshes: int = 0

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(16)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id or "",
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=self.user,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def _issue(self, client_id: str, scopes: list[str], subject: str | None, resource: str | None) -> OAuthToken:
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time() + self.access_ttl),
            resource=resource,
            subject=subject,
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.access_ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        del self.codes[authorization_code.code]
        return self._issue(
            client.client_id or "", authorization_code.scopes, authorization_code.subject, authorization_code.resource
        )

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        del self.refresh[refresh_token.token]  # rotation
        self.refreshes += 1
        return self._issue(client.client_id or "", scopes, refresh_token.subject, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def exchange_identity_assertion(self, client: OAuthClientInformationFull, params: Any) -> OAuthToken:
        raise NotImplementedError

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    def revoke_all(self, subject: str) -> None:
        """Withdraw every token of ``subject`` (the upstream's admin revokes the grant)."""
        for store in (self.access, self.refresh):
            for key in [k for k, v in store.items() if v.subject == subject]:
                del store[key]


@dataclass
class Upstream:
    provider: Provider
    requests: list[tuple[str, dict[str, str]]]
    app: Any


class _Recorder:
    """Records the parameters of every /authorize and /token request (query and form)."""

    def __init__(self, app: Any, log: list[tuple[str, dict[str, str]]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ("/authorize", "/token", "/register"):
            await self.app(scope, receive, send)
            return
        messages: list[Any] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        params = dict(parse_qsl(scope["query_string"].decode()))
        if scope["path"] == "/token":
            params.update(parse_qsl(body.decode()))
        self.log.append((scope["path"], params))
        pending = iter(messages)

        async def replay() -> Any:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


def oauth_upstream(base: str, *, access_ttl: int = 3600) -> Upstream:
    """The app to serve at ``base``: MCP at ``base/mcp``, its authorization server at ``base``."""
    provider = Provider(issuer=base, access_ttl=access_ttl)
    server = MCPServer(
        "notes",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=base,  # type: ignore[arg-type]
            resource_server_url=f"{base}/mcp",  # type: ignore[arg-type]
            client_registration_options=ClientRegistrationOptions(enabled=True),
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """Who the upstream thinks is calling."""
        token = get_access_token()
        return f"{token.subject if token else None}"

    @server.resource("notes://me")
    def me() -> str:
        """The calling user, as a resource."""
        token = get_access_token()
        return f"{token.subject if token else None}"

    requests: list[tuple[str, dict[str, str]]] = []
    app = _Recorder(server.streamable_http_app(), requests)
    return Upstream(provider, requests, app)


Build = Callable[[str], Any]
