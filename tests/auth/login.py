"""Helpers for the authorization-server tests: a portal with OAuth on, and a headless "browser".

The browser answers the portal's login and consent pages the way a person would (reading the forms'
hidden fields, posting them back) with httpx, follows the redirects, and hands the authorization
response to the official ``mcp`` client's OAuth provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
from mcp.client.auth import AuthorizationCodeResult
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from portal.auth import UserStore
from portal.config import Settings
from portal.store import open_engine
from tests.policy.conftest import write_files
from tests.support import make_settings

POLICY = """
    version: 1
    roles: {member: {}}
    principals:
      groups:
        staff: {roles: [member]}
      services:
        ci-bot: {roles: [member]}
    rules:
      - {name: members-use-notes, effect: allow, roles: [member]}
"""

NOTES = {"notes": {"module": "tests.policy.notes_server:server"}}
REDIRECT = "http://127.0.0.1:4567/callback"
PASSWORD = "correct horse battery staple"


def oauth_settings(
    tmp_path: Path, *, database: str | None = None, auth: dict[str, Any] | None = None, **portal: Any
) -> Settings:
    """A portal with OAuth on, the notes server, and a policy letting group ``staff`` use it."""
    policy_dir = write_files(tmp_path / "policies", main=POLICY)
    if database is not None:
        portal["database"] = database
    settings = make_settings(tmp_path, NOTES, auth={"mode": "oauth", **(auth or {})}, **portal)
    return settings.model_copy(update={"policy": settings.policy.model_copy(update={"dir": policy_dir})})


def add_user(settings: Settings, name: str = "alice", *, groups: tuple[str, ...] = ("staff",)) -> None:
    """Create a local user in the portal's database (as ``dockyard users add`` does)."""
    engine = open_engine(settings.database_url)
    try:
        UserStore(engine).add(name, PASSWORD, groups=groups)
    finally:
        engine.dispose()


def hidden_fields(html: str, form: int = 0) -> list[tuple[str, str]]:
    """The hidden inputs of the page's first form (or its ``form``-th), in order."""
    section = html.split("<form ")[1 + form].split("</form>")[0]
    found = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', section)
    return [(unescape(k), unescape(v)) for k, v in found]


def form_action(html: str) -> str:
    match = re.search(r'<form method="post" action="([^"]*)"', html)
    assert match, html
    return unescape(match.group(1))


@dataclass
class Browser:
    """A person at a browser: logs in with ``user``/``password`` and answers the consent page."""

    http: httpx.AsyncClient
    user: str = "alice"
    password: str = PASSWORD
    approve: bool = True
    pages: list[str] = field(default_factory=list[str])
    result: AuthorizationCodeResult | None = None
    final: httpx.Response | None = None

    async def _follow(self, response: httpx.Response) -> httpx.Response:
        """Follow same-portal redirects (303 after a form, 302 to the login page) until a page or the client."""
        while response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if urlsplit(location).netloc != urlsplit(str(response.url)).netloc:
                break  # back to the client: its redirect URI
            response = await self.http.get(location)
        return response

    async def visit(self, url: str) -> None:
        """The OAuth provider's redirect handler: do what a person would, up to the client's redirect URI."""
        response = await self._follow(await self.http.get(url))
        if response.status_code == 200 and 'name="password"' in response.text:
            self.pages.append(response.text)
            fields = dict(hidden_fields(response.text))
            form = {**fields, "username": self.user, "password": self.password}
            response = await self._follow(await self.http.post(urljoin(url, form_action(response.text)), data=form))
        if response.status_code == 200 and 'name="decision"' in response.text:
            self.pages.append(response.text)
            form = [*hidden_fields(response.text), ("decision", "approve" if self.approve else "deny")]
            response = await self.post(urljoin(url, form_action(response.text)), form)
        self.final = response
        location = response.headers.get("location", "")
        query = parse_qs(urlsplit(location).query)
        code = query.get("code", [""])[0]
        self.result = AuthorizationCodeResult(
            code=code, state=query.get("state", [None])[0], iss=query.get("iss", [None])[0]
        )

    async def post(self, url: str, form: list[tuple[str, str]]) -> httpx.Response:
        """Submit a form as a browser does (url-encoded, fields in order)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return await self.http.post(url, content=urlencode(form), headers=headers)

    async def callback(self) -> AuthorizationCodeResult:
        """The OAuth provider's callback handler."""
        assert self.result is not None, "the authorization did not reach the client's redirect URI"
        return self.result


class MemoryStorage:
    """Token storage of the OAuth client, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def client_metadata(**extra: Any) -> OAuthClientMetadata:
    """What the test's MCP client registers."""
    return OAuthClientMetadata.model_validate(
        {
            "client_name": "Test Assistant",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            **extra,
        }
    )


def pkce() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    import base64
    import hashlib
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Flow:
    """One OAuth client of a running portal, driven by hand (for the adversarial tests)."""

    http: httpx.AsyncClient
    base: str
    client_id: str = ""
    client_secret: str | None = None
    verifier: str = ""

    async def register(self, **metadata: Any) -> dict[str, Any]:
        body = {
            "client_name": "Test Assistant",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            **metadata,
        }
        response = await self.http.post(f"{self.base}/oauth/register", json=body)
        assert response.status_code == 201, response.text
        info: dict[str, Any] = response.json()
        self.client_id, self.client_secret = info["client_id"], info.get("client_secret")
        return info

    def params(self, **overrides: str | None) -> dict[str, str]:
        self.verifier, challenge = pkce()
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": REDIRECT,
            "state": "state-1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": f"{self.base}/mcp",
            "scope": "tools:read tools:call",
            **overrides,
        }
        return {k: v for k, v in params.items() if v is not None}

    async def authorize(self, browser: Browser, **overrides: str | None) -> httpx.Response:
        """Run the authorization request through login and consent; returns the last response."""
        from urllib.parse import urlencode as encode

        await browser.visit(f"{self.base}/oauth/authorize?{encode(self.params(**overrides))}")
        assert browser.final is not None
        return browser.final

    async def code(self, browser: Browser, **overrides: str | None) -> str:
        response = await self.authorize(browser, **overrides)
        query = parse_qs(urlsplit(response.headers.get("location", "")).query)
        assert "code" in query, (response.status_code, response.headers.get("location"), response.text[-300:])
        return query["code"][0]

    def _auth(self) -> httpx.BasicAuth | None:
        return httpx.BasicAuth(self.client_id, self.client_secret) if self.client_secret else None

    async def token(self, **form: str) -> httpx.Response:
        data = {"client_id": self.client_id, **form}
        return await self.http.post(
            f"{self.base}/oauth/token", data=data, auth=self._auth() or httpx.USE_CLIENT_DEFAULT
        )

    async def exchange(self, code: str, **overrides: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": self.verifier,
        }
        return await self.token(**{**form, **overrides})

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.token(grant_type="refresh_token", refresh_token=refresh_token)

    async def endpoint(self, name: str, **form: str) -> httpx.Response:
        data = {"client_id": self.client_id, **form}
        return await self.http.post(
            f"{self.base}/oauth/{name}", data=data, auth=self._auth() or httpx.USE_CLIENT_DEFAULT
        )


async def mcp_post(
    http: httpx.AsyncClient, url: str, token: str | None, method: str, params: dict[str, Any] | None = None
) -> httpx.Response:
    """One JSON-RPC request to the portal's MCP endpoint (the guard answers before any session exists)."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return await http.post(url, json=body, headers=headers)


INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
