"""The portal as OAuth client of an upstream MCP server that requires it (SECURITY.md U1, U2, U3, R4).

A real OAuth-protected MCP server (the SDK's authorization and resource server, tests/auth/oauth_upstream.py)
runs on loopback, admitted by the fetcher's development allow-list; a real portal serves it as
``auth = "oauth"``. Consent links are followed headlessly with an HTTP client, as a browser would.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from sqlalchemy import text

from portal.auth._secrets_cli import grant_problems
from portal.auth._upstream_oauth import CATALOG_SUBJECT, DiscoveryError
from portal.channel import NULL_CHANNEL, NullChannel
from portal.config import settings_from_mapping
from portal.principal import Principal
from tests.auth.oauth_upstream import Upstream, oauth_upstream
from tests.auth.serving import serving
from tests.support import RunningPortal, running_portal, wait_for

pytestmark = pytest.mark.anyio

ALICE, BOB = Principal("alice"), Principal("bob")
POLICY = """
version: 1
principals:
  users:
    alice: {roles: [member]}
    bob: {roles: [member]}
  local:
    roles: [member]
roles:
  member: {}
rules:
  - name: members-use-notes
    effect: allow
    roles: [member]
    servers: [notes]
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    upstream: Upstream
    portal: RunningPortal

    @property
    def oauth(self) -> Any:
        assert self.portal.gateway.credentials is not None
        return self.portal.gateway.credentials.oauth

    async def consent(self, link: str, *, as_user: str) -> httpx.Response:
        """Follow a consent link as a browser would: portal → upstream authorize → portal callback."""
        self.upstream.provider.user = as_user
        async with httpx.AsyncClient(follow_redirects=True, timeout=10) as browser:
            return await browser.get(link)

    async def call(self, principal: Principal, channel: Any = NULL_CHANNEL) -> types.CallToolResult:
        result = await self.portal.gateway.call_tool(principal, "notes__whoami", {}, channel=channel)
        assert isinstance(result, types.CallToolResult)
        return result


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _link(result: types.CallToolResult) -> str:
    assert result.is_error, _text(result)
    body = _text(result)
    assert "/oauth/upstream/notes/start?t=" in body, body
    return body[body.index("http") :].split()[0]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with make_world(tmp_path) as world:
        yield world


@asynccontextmanager
async def make_world(tmp_path: Path, *, declared: bool = True) -> AsyncIterator[World]:
    holder: list[Upstream] = []

    def build(base: str) -> Any:
        holder.append(oauth_upstream(base, access_ttl=3600))
        return holder[0].app

    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "test.yaml").write_text(textwrap.dedent(POLICY))
    async with serving(build=build) as base:
        raw: dict[str, Any] = {
            "portal": {
                "data_dir": str(tmp_path / "data"),
                "health_interval": 1.0,
                "retry_max_backoff": 0.5,
                "insecure_fetch_hosts": ["127.0.0.1"],
            },
            "auth": {"mode": "none"},
            "policy": {"dir": str(policies)},
            "servers": {"notes": {"url": f"{base}/mcp", **({"auth": "oauth"} if declared else {})}},
        }
        settings = settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
        async with running_portal(settings) as portal:
            world = World(holder[0], portal)
            # The admin grants the catalog session, so the portal can list the upstream's tools.
            page = await world.consent(world.oauth.consent_link("notes", CATALOG_SUBJECT), as_user="admin@up")
            assert page.status_code == 200, page.text
            await wait_for(lambda: "notes__whoami" in portal.gateway.catalog.tools, timeout=30)
            yield world


async def test_a_user_without_a_grant_gets_a_consent_link_and_after_consent_calls_with_their_own_token(
    world: World,
) -> None:
    """U2: the consent link; R4 and U2: each user's own upstream identity, never another's."""
    first = await world.call(ALICE)
    link = _link(first)
    assert "has not been granted" in _text(first)

    page = await world.consent(link, as_user="alice@up")
    assert page.status_code == 200 and "Access granted" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    second = await world.call(ALICE)
    assert not second.is_error, _text(second)
    assert _text(second) == "alice@up"

    # Bob is a different user: alice's grant is not his.
    assert "/oauth/upstream/notes/start" in _text(await world.call(BOB))
    await world.consent(_link(await world.call(BOB)), as_user="bob@up")
    assert _text(await world.call(BOB)) == "bob@up"
    assert _text(await world.call(ALICE)) == "alice@up"


async def test_every_authorization_and_token_request_uses_pkce_s256_and_resource(world: World) -> None:
    """U1: PKCE S256 and ``resource`` on authorization and token requests (refresh: see below)."""
    await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
    base = world.upstream.provider.issuer
    authorize = [p for path, p in world.upstream.requests if path == "/authorize"]
    tokens = [p for path, p in world.upstream.requests if path == "/token"]
    assert authorize and tokens
    for params in authorize:
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43
        assert params["resource"] == f"{base}/mcp"
        assert params["redirect_uri"] == f"{world.portal.url}/oauth/upstream/callback"
    for params in tokens:
        assert params["resource"] == f"{base}/mcp"
        assert params["grant_type"] == "authorization_code"
        assert len(params["code_verifier"]) >= 43


async def test_a_grant_is_refreshed_before_it_expires_with_resource(world: World) -> None:
    """U2: proactive refresh (a token expiring within the margin is refreshed before use); U1: ``resource``."""
    world.upstream.provider.access_ttl = 30  # inside the portal's 60 s refresh margin
    await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
    issued = set(world.upstream.provider.access)
    before = world.upstream.provider.refreshes
    assert _text(await world.call(ALICE)) == "alice@up"
    assert world.upstream.provider.refreshes > before
    refreshes = [p for path, p in world.upstream.requests if path == "/token" and p["grant_type"] == "refresh_token"]
    assert refreshes and all(p["resource"] == f"{world.upstream.provider.issuer}/mcp" for p in refreshes)
    # The token the consent produced was still valid when it was replaced: refreshed before expiry.
    assert any(token in issued for token in world.upstream.provider.access) or refreshes


async def test_a_revoked_grant_is_reported_to_the_user_and_the_admin(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """U2: a dead grant is reported (tool error with a new link; a warning; the vault marks it), not retried."""
    await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
    assert _text(await world.call(ALICE)) == "alice@up"
    world.upstream.provider.revoke_all("alice@up")
    with caplog.at_level(logging.WARNING, logger="dockyard.upstream_oauth"):
        result = await world.call(ALICE)
    assert result.is_error
    assert "was revoked or expired" in _text(result)
    assert "/oauth/upstream/notes/start?t=" in _text(result)
    assert any("is dead" in r.getMessage() and "user:alice" in r.getMessage() for r in caplog.records)
    grants = world.oauth.vault.list(kinds=("oauth-grant",), server="notes")
    assert [(g.ref.subject, g.status) for g in grants if g.ref.subject == "user:alice"] == [("user:alice", "dead")]
    # `dockyard servers` shows the admin every dead grant.
    problems = await anyio.to_thread.run_sync(grant_problems, world.portal.settings)
    assert any("user:alice" in p and "is dead" in p for p in problems)
    refreshes_after_death = world.upstream.provider.refreshes
    again = await world.call(ALICE)  # not silently retried: the dead grant is reported again at once
    assert "was revoked or expired" in _text(again)
    assert world.upstream.provider.refreshes == refreshes_after_death
    # Granting again brings the user back.
    await world.consent(_link(again), as_user="alice@up")
    assert _text(await world.call(ALICE)) == "alice@up"


class _UrlElicitingChannel(NullChannel):
    capabilities = types.ClientCapabilities(
        elicitation=types.ElicitationCapability(url=types.UrlElicitationCapability())
    )


async def test_a_client_that_supports_url_elicitation_gets_the_link_as_a_url_elicitation(world: World) -> None:
    """U2: URL-mode elicitation where the client supports it (error -32042 carrying the link)."""
    with pytest.raises(MCPError) as caught:
        await world.portal.gateway.call_tool(ALICE, "notes__whoami", {}, channel=_UrlElicitingChannel())
    assert caught.value.error.code == types.URL_ELICITATION_REQUIRED
    data = caught.value.error.data
    assert isinstance(data, dict)
    [elicitation] = data["elicitations"]
    assert elicitation["mode"] == "url"
    assert "/oauth/upstream/notes/start?t=" in elicitation["url"]


async def test_consent_state_is_single_use_and_bound_to_its_user(world: World) -> None:
    """U2: a replayed callback is refused; a consent link cannot be re-targeted at another server."""
    link = _link(await world.call(ALICE))
    world.upstream.provider.user = "alice@up"
    async with httpx.AsyncClient(timeout=10) as browser:
        to_upstream = await browser.get(link)
        assert to_upstream.status_code == 302
        callback = (await browser.get(to_upstream.headers["location"])).headers["location"]
        assert (await browser.get(callback)).status_code == 200
        replay = await browser.get(callback)
        assert replay.status_code == 400 and "already used" in replay.text
        tampered = await browser.get(link.replace("/notes/", "/other/"))
        assert tampered.status_code == 400
        forged = await browser.get(link[:-4] + "AAAA")
        assert forged.status_code == 400


async def test_no_upstream_token_reaches_the_audit_log_the_logs_or_the_vault_in_clear(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """U3: tokens are encrypted at rest and never in audit records or logs."""
    with caplog.at_level(logging.DEBUG):
        await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
        await world.call(ALICE)
    provider = world.upstream.provider
    secrets_seen = {*provider.access, *provider.refresh}
    assert secrets_seen

    def read_audit() -> str:
        with world.portal.gateway.engine.connect() as conn:
            return " ".join(str(row) for row in conn.execute(text("SELECT * FROM audit_records")))

    await wait_for(lambda: read_audit().count("notes__whoami") >= 2)  # written in the background
    audit = read_audit()
    assert "needs your authorization" in audit
    with world.portal.gateway.engine.connect() as conn:
        vault = b"".join(bytes(row[0]) for row in conn.execute(text("SELECT ciphertext FROM vault_secrets")))
    logs = caplog.text
    for secret in secrets_seen:
        assert secret not in audit
        assert secret not in logs
        assert secret.encode() not in vault
    assert "oauth/upstream/notes/start?t=" not in audit  # the link is the caller's alone


async def test_the_clients_own_token_never_goes_upstream(world: World) -> None:
    """R4: what the portal sends upstream carries the user's upstream token, never the caller's header."""
    seen: list[str] = []
    inner = world.upstream.app.app

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            seen.extend(v.decode() for k, v in scope["headers"] if k == b"authorization")
        await inner(scope, receive, send)

    world.upstream.app.app = spy
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    local = Principal("local", kind="local")
    await world.consent(_link(await world.call(local)), as_user="local@up")
    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer CLIENT-TOKEN-xyz"}) as http,
        Client(streamable_http_client(world.portal.mcp_url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("notes__whoami", {})
    assert not result.is_error and _text(result) == "local@up"
    assert seen
    assert all("CLIENT-TOKEN" not in header for header in seen)
    assert seen[-1].removeprefix("Bearer ") in world.upstream.provider.access


async def test_discovery_refuses_metadata_whose_issuer_is_not_the_authorization_server(tmp_path: Path) -> None:
    """U1: the issuer in RFC 8414 metadata must be the authorization server discovery was asked about."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from portal.auth._fetch import FetchPolicy
    from portal.auth._upstream_oauth import UpstreamOAuth
    from portal.auth._vault import Vault
    from portal.sealing import Sealer
    from portal.store import open_engine

    async def prm(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"resource": f"{base}/mcp", "authorization_servers": [base]})

    async def asm(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": "https://evil.example",
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    app = Starlette(
        routes=[
            Route("/.well-known/oauth-protected-resource/mcp", prm),
            Route("/.well-known/oauth-authorization-server", asm),
        ]
    )
    async with serving(app) as base:
        settings = settings_from_mapping(
            {"servers": {"x": {"url": f"{base}/mcp", "auth": "oauth"}}},
            source="<test>",
            base_dir=tmp_path,
            environ={},
        )
        engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        oauth = UpstreamOAuth(
            Vault(engine, b"k" * 32),
            settings.servers,
            public_url="http://127.0.0.1:1",
            sealer=Sealer(b"s" * 32),
            fetch_policy=FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"})),
        )
        with pytest.raises(DiscoveryError, match="issuer"):
            await oauth.discover("x")
        # The same upstream without the allow-list: its metadata is on loopback, so it is not fetched at all.
        strict = UpstreamOAuth(
            Vault(engine, b"k" * 32),
            settings.servers,
            public_url="http://127.0.0.1:1",
            sealer=Sealer(b"s" * 32),
            fetch_policy=FetchPolicy(),
        )
        with pytest.raises(DiscoveryError, match="refusing to fetch"):
            await strict.discover("x")
        engine.dispose()
    await anyio.lowlevel.checkpoint()


async def test_a_consent_link_works_only_in_the_browser_of_the_user_it_was_made_for(world: World) -> None:
    """U2: a link bound to alice cannot attach another person's upstream account to alice (or the reverse)."""
    from starlette.applications import Starlette
    from starlette.requests import Request

    from portal.auth._upstream_routes import upstream_oauth_routes

    def browser_user(request: Request) -> str | None:  # stands in for the portal's login cookie
        return request.cookies.get("who")

    app = Starlette(routes=upstream_oauth_routes(world.oauth, browser_user=browser_user))
    link = _link(await world.call(ALICE))
    async with serving(app) as other:
        path = link[link.index("/oauth/upstream/") :]
        async with httpx.AsyncClient(base_url=other, timeout=10) as browser:
            anonymous = await browser.get(path)
            assert anonymous.status_code == 303
            assert anonymous.headers["location"].startswith("/oauth/login?return_to=%2Foauth%2Fupstream%2Fnotes")
            browser.cookies.set("who", "user:bob")
            assert (await browser.get(path)).status_code == 403
            browser.cookies.set("who", "user:alice")
            upstream = await browser.get(path)
            assert upstream.status_code == 302
            assert upstream.headers["location"].startswith(f"{world.upstream.provider.issuer}/authorize?")


async def test_an_upstream_not_declared_oauth_is_detected_from_its_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """U1/U2: a url server answering 401 with resource_metadata becomes an OAuth upstream; the admin is told."""
    with caplog.at_level(logging.WARNING, logger="dockyard.upstream_oauth"):
        async with make_world(tmp_path, declared=False) as world:
            messages = [r.getMessage() for r in caplog.records]
            assert any("upstream notes requires OAuth (its 401 names" in m for m in messages)
            assert any("dockyard servers authorize notes" in m for m in messages)
            await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
            assert _text(await world.call(ALICE)) == "alice@up"


async def test_a_users_own_session_is_reused_and_closed_when_idle(world: World) -> None:
    await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
    credentials = world.portal.gateway.credentials
    assert credentials is not None
    upstream = world.portal.gateway.upstreams["notes"]
    first = await credentials.user_session(upstream, ALICE.label)
    assert await credentials.user_session(upstream, ALICE.label) is first
    credentials.idle_timeout = 0.0
    assert await credentials.user_session(upstream, ALICE.label) is not first
    credentials.idle_timeout = 1800.0
    assert _text(await world.call(ALICE)) == "alice@up"


async def test_resources_of_an_oauth_upstream_are_read_with_the_callers_own_grant(world: World) -> None:
    """U2/R4 beyond tools: a resource is read with the caller's grant, never the admin's catalog grant."""
    uri = next(u for u in (str(r.uri) for r in world.portal.gateway.list_resources(ALICE)) if u.endswith("://me"))
    with pytest.raises(MCPError) as caught:
        await world.portal.gateway.read_resource(ALICE, uri, channel=NULL_CHANNEL)
    assert "/oauth/upstream/notes/start?t=" in caught.value.error.message
    link = caught.value.error.message[caught.value.error.message.index("http") :]
    await world.consent(link, as_user="alice@up")
    result = await world.portal.gateway.read_resource(ALICE, uri, channel=NULL_CHANNEL)
    assert isinstance(result, types.ReadResourceResult)
    assert [getattr(c, "text", None) for c in result.contents] == ["alice@up"]


async def test_a_refresh_lost_to_another_portal_process_does_not_kill_the_grant(world: World) -> None:
    """Scale-out: two portals share the vault; the one whose rotated refresh token is refused uses the other's."""
    import json

    from portal.auth._fetch import FetchPolicy
    from portal.auth._upstream_oauth import UpstreamOAuth
    from portal.auth._vault import SecretRef
    from portal.sealing import Sealer

    await world.consent(_link(await world.call(ALICE)), as_user="alice@up")
    a = world.oauth
    b = UpstreamOAuth(
        a.vault,
        world.portal.settings.servers,
        public_url=world.portal.url,
        sealer=Sealer(b"s" * 32),
        fetch_policy=FetchPolicy(insecure_hosts=frozenset({"127.0.0.1"})),
    )
    ref = SecretRef("oauth-grant", "notes", "grant", ALICE.label)
    stored = await anyio.to_thread.run_sync(a.vault.get, ref)
    assert stored is not None
    seen_by_b = json.loads(stored.value)  # b read the grant, then a refreshed it first
    fresh = await a.access_token("notes", ALICE.label, force_refresh=True)
    assert await b._refresh("notes", ALICE.label, seen_by_b) == fresh  # pyright: ignore[reportPrivateUsage]
    after = await anyio.to_thread.run_sync(a.vault.get, ref)
    assert after is not None and after.status == "ok"
    assert _text(await world.call(ALICE)) == "alice@up"
