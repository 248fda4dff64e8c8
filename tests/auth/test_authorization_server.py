"""The portal as authorization server and protected resource, attacked where SECURITY.md says it must hold.

Each test names the requirement it checks (A*, R*, T1). A real portal on a real socket; the "browser"
and the clients are httpx.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from portal.auth import AuthService
from portal.auth._tokens import Owner
from tests.auth.login import (
    INITIALIZE,
    PASSWORD,
    REDIRECT,
    Browser,
    Flow,
    add_user,
    form_action,
    hidden_fields,
    mcp_post,
    oauth_settings,
)
from tests.support import RunningPortal, running_portal

pytestmark = pytest.mark.anyio


@dataclass
class World:
    portal: RunningPortal
    http: httpx.AsyncClient
    flow: Flow
    browser: Browser

    @property
    def base(self) -> str:
        return self.portal.url

    @property
    def auth(self) -> AuthService:
        assert self.portal.portal.auth is not None
        return self.portal.portal.auth

    async def tokens(self, **overrides: str | None) -> dict[str, Any]:
        """Register, log in, consent and exchange: the token response."""
        if not self.flow.client_id:
            await self.flow.register()
        code = await self.flow.code(self.browser, **overrides)
        response = await self.flow.exchange(code)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = oauth_settings(
        tmp_path,
        auth={
            "clients": {
                "ci-bot": {"secret": "ci-secret-value-123", "grant_types": ["client_credentials"], "groups": ["bots"]}
            }
        },
    )
    add_user(settings)
    add_user(settings, "root", groups=("staff", "admins"))
    async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
        yield World(portal, http, Flow(http, portal.url), Browser(http))


def _query(response: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers.get("location", "")).query).items()}


# -- metadata -----------------------------------------------------------------------------------------------
async def test_a1_metadata_names_the_configured_issuer_exactly_and_s256_only(world: World) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = (await world.http.get(world.base + path)).json()
        assert meta["issuer"] == world.portal.settings.portal.public_url == world.base
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["response_types_supported"] == ["code"]
        assert "implicit" not in meta["grant_types_supported"] and "password" not in meta["grant_types_supported"]
        assert meta["authorization_response_iss_parameter_supported"] is True


async def test_r1_protected_resource_metadata_at_the_root_and_path_inserted(world: World) -> None:
    for path, resource in (("", world.base), ("/mcp", f"{world.base}/mcp"), ("/mcp/code", f"{world.base}/mcp/code")):
        meta = (await world.http.get(f"{world.base}/.well-known/oauth-protected-resource{path}")).json()
        assert meta["resource"] == resource
        assert meta["authorization_servers"] == [world.base]
        assert set(meta["scopes_supported"]) == {"tools:read", "tools:call", "code", "admin"}


async def test_r1_a_request_without_a_token_gets_401_naming_the_resource_metadata(world: World) -> None:
    response = await mcp_post(world.http, world.portal.mcp_url, None, "initialize", INITIALIZE)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{world.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    code = await mcp_post(world.http, f"{world.base}/mcp/code", None, "initialize", INITIALIZE)
    assert (
        f'resource_metadata="{world.base}/.well-known/oauth-protected-resource/mcp/code"'
        in code.headers["www-authenticate"]
    )


# -- A2: PKCE ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
    ],
    ids=["no challenge", "plain", "no method"],
)
async def test_a2_an_authorization_request_without_s256_pkce_is_refused(
    world: World, overrides: dict[str, Any]
) -> None:
    await world.flow.register()
    response = await world.flow.authorize(world.browser, **overrides)
    query = _query(response)
    assert query["error"] == "invalid_request", query
    assert "code" not in query
    assert query["iss"] == world.base  # RFC 9207 on errors too (A7)


async def test_a2_a_wrong_or_missing_code_verifier_is_refused(world: World) -> None:
    await world.flow.register()
    code = await world.flow.code(world.browser)
    assert (await world.flow.exchange(code, code_verifier="x" * 50)).json()["error"] == "invalid_grant"
    code = await world.flow.code(world.browser)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    assert (await world.flow.token(**form)).json()["error"] == "invalid_request"


async def test_a2_a_code_is_single_use_and_its_reuse_revokes_what_it_issued(world: World) -> None:
    await world.flow.register()
    code = await world.flow.code(world.browser)
    first = await world.flow.exchange(code)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert (await mcp_post(world.http, world.portal.mcp_url, access, "initialize", INITIALIZE)).status_code == 200
    again = await world.flow.exchange(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    refused = await mcp_post(world.http, world.portal.mcp_url, access, "initialize", INITIALIZE)
    assert refused.status_code == 401 and "revoked" in refused.headers["www-authenticate"]


# -- A3: redirect URIs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "redirect",
    ["https://evil.example/callback", "http://127.0.0.1:4567/callback/../evil", "http://127.0.0.1:4567/callbackX"],
)
async def test_a3_an_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(world: World, redirect: str) -> None:
    await world.flow.register()
    response = await world.flow.authorize(world.browser, redirect_uri=redirect)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "evil" not in response.headers.get("location", "")


async def test_a3_a_loopback_redirect_may_change_port_but_the_token_request_must_repeat_it(world: World) -> None:
    await world.flow.register()
    other_port = "http://127.0.0.1:5999/callback"
    response = await world.flow.authorize(world.browser, redirect_uri=other_port)
    assert response.status_code == 303 and response.headers["location"].startswith(other_port + "?code=")
    code = _query(response)["code"]
    tampered = await world.flow.exchange(code, redirect_uri=REDIRECT)
    assert tampered.json()["error"] == "invalid_grant"


async def test_a3_registration_refuses_plain_http_redirects_off_loopback(world: World) -> None:
    body = {"client_name": "x", "redirect_uris": ["http://evil.example/cb"]}
    response = await world.http.post(f"{world.base}/oauth/register", json=body)
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri"
    body = {"client_name": "x", "redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}
    refused = await world.http.post(f"{world.base}/oauth/register", json=body)
    assert refused.status_code == 400  # a self-registered client can never be a service principal


# -- R2: audience, expiry, revocation, transport -------------------------------------------------------------
async def test_r2_a_resource_that_is_not_the_portals_is_invalid_target(world: World) -> None:
    await world.flow.register()
    response = await world.flow.authorize(world.browser, resource="https://elsewhere.example/mcp")
    assert _query(response)["error"] == "invalid_target"


async def test_r2_a_token_for_another_audience_is_refused(world: World) -> None:
    tokens = await world.tokens(resource=f"{world.base}/mcp/code")  # another of the portal's resources
    assert (
        await mcp_post(world.http, world.portal.mcp_url, tokens["access_token"], "initialize", INITIALIZE)
    ).status_code == 401
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert claims["aud"] == f"{world.base}/mcp/code"
    foreign = world.auth.tokens.sign(
        Owner("alice", "user", "g", "https://elsewhere.example/mcp", frozenset({"staff"})),
        client_id="x",
        scope="tools:read tools:call",
    )
    response = await mcp_post(world.http, world.portal.mcp_url, foreign, "initialize", INITIALIZE)
    assert response.status_code == 401 and "another resource" in response.headers["www-authenticate"]


async def test_r2_expired_malformed_and_unknown_tokens_are_refused(world: World) -> None:
    token, grant = world.auth.mint("alice", scopes=["tools:read"], ttl=3600, kind="user", groups=["staff"])
    expired = world.auth.tokens.sign(
        Owner("alice", "user", grant.id, world.base, frozenset()), client_id="x", scope="tools:read", expires_in=-120
    )
    unrecorded = world.auth.tokens.sign(
        Owner("alice", "user", "nope", world.base, frozenset()), client_id="x", scope="tools:read"
    )
    header, payload, signature = token.split(".")
    forged_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_claims["scope"] = "tools:read tools:call admin"
    forged = ".".join(
        [header, base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode(), signature]
    )
    for bad, reason in (
        (expired, "expired"),
        (unrecorded, "not known"),
        (forged, "signature"),
        ("not-a-jwt", "not a JWT"),
    ):
        response = await mcp_post(world.http, world.portal.mcp_url, bad, "initialize", INITIALIZE)
        assert response.status_code == 401, reason
        assert (
            'error="invalid_token"' in response.headers["www-authenticate"]
            and reason in response.headers["www-authenticate"]
        )
    assert (await mcp_post(world.http, world.portal.mcp_url, token, "initialize", INITIALIZE)).status_code == 200


async def test_r2_a_token_in_the_query_string_is_ignored(world: World) -> None:
    token, _ = world.auth.mint("alice", scopes=["tools:read", "tools:call"], ttl=3600, kind="user", groups=["staff"])
    url = f"{world.portal.mcp_url}?{urlencode({'access_token': token})}"
    assert (await mcp_post(world.http, url, None, "initialize", INITIALIZE)).status_code == 401


async def test_r2_a_revoked_token_is_refused_on_the_next_request(world: World) -> None:
    tokens = await world.tokens()
    access = tokens["access_token"]
    assert (await mcp_post(world.http, world.portal.mcp_url, access, "initialize", INITIALIZE)).status_code == 200
    revoked = await world.flow.endpoint("revoke", token=access, token_type_hint="access_token")
    assert revoked.status_code == 200 and revoked.headers["cache-control"] == "no-store"
    assert (await mcp_post(world.http, world.portal.mcp_url, access, "initialize", INITIALIZE)).status_code == 401
    # Revoking the refresh token revokes the grant: refreshing no longer works (RFC 7009 2.1).
    await world.flow.endpoint("revoke", token=tokens["refresh_token"])
    assert (await world.flow.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"


# -- A6: refresh rotation and reuse --------------------------------------------------------------------------
async def test_a6_refresh_tokens_rotate_and_reusing_one_revokes_the_whole_grant(world: World) -> None:
    first = await world.tokens()
    second = (await world.flow.refresh(first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    third = (await world.flow.refresh(second["refresh_token"])).json()
    live = third["access_token"]
    assert (await mcp_post(world.http, world.portal.mcp_url, live, "initialize", INITIALIZE)).status_code == 200
    # An attacker replays the first (rotated) refresh token:
    replay = await world.flow.refresh(first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # ...and everything descended from the grant is dead, the legitimate client's tokens included.
    assert (await world.flow.refresh(third["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await mcp_post(world.http, world.portal.mcp_url, live, "initialize", INITIALIZE)).status_code == 401


# -- A5: consent --------------------------------------------------------------------------------------------
async def _consent_page(world: World) -> tuple[str, list[tuple[str, str]]]:
    await world.flow.register()
    params = world.flow.params()
    response = await world.http.get(f"{world.base}/oauth/authorize?{urlencode(params)}", follow_redirects=True)
    login = [*hidden_fields(response.text), ("username", "alice"), ("password", PASSWORD)]
    response = await world.browser.post(str(response.url.copy_with(path=form_action(response.text), query=None)), login)
    page = await world.http.get(world.base + response.headers["location"])
    assert 'name="decision"' in page.text
    return page.text, hidden_fields(page.text)


async def test_a5_consent_shows_the_client_its_redirect_host_and_the_scopes(world: World) -> None:
    page, _ = await _consent_page(world)
    assert "Test Assistant" in page and "127.0.0.1" in page and "tools:read" in page and "tools:call" in page


async def test_a5_a_consent_without_its_csrf_token_or_with_another_sessions_is_refused(world: World) -> None:
    _, fields = await _consent_page(world)
    without = [(k, v) for k, v in fields if k != "csrf"] + [("decision", "approve")]
    response = await world.browser.post(f"{world.base}/oauth/authorize", without)
    assert response.status_code == 403 and "location" not in response.headers
    # A token minted for another browser's session does not fit this one.
    async with httpx.AsyncClient(timeout=10) as other:
        other_world = World(world.portal, other, Flow(other, world.base, world.flow.client_id), Browser(other))
        _, theirs = await _consent_page(other_world)
    stolen = dict(theirs)["csrf"]
    forged = [(k, stolen if k == "csrf" else v) for k, v in fields] + [("decision", "approve")]
    response = await world.browser.post(f"{world.base}/oauth/authorize", forged)
    assert response.status_code == 403 and "location" not in response.headers


async def test_a5_an_approval_is_remembered_per_user_and_client(world: World) -> None:
    await world.tokens()
    pages = len(world.browser.pages)
    await world.flow.code(world.browser)  # same client, same scopes: straight back with a code
    assert len(world.browser.pages) == pages
    await world.flow.code(world.browser, scope="tools:read tools:call code")  # more scopes: asked again
    assert len(world.browser.pages) == pages + 1


async def test_a5_pages_cannot_be_framed_and_cookies_are_httponly_lax(world: World) -> None:
    login = await world.http.get(f"{world.base}/oauth/login")
    for response in (login, world.browser.final or login):
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain-http loopback only; on https the cookie is __Host- and Secure


# -- T1 ------------------------------------------------------------------------------------------------------
async def test_t1_a_foreign_origin_or_host_is_refused(world: World) -> None:
    token, _ = world.auth.mint("alice", scopes=["tools:read", "tools:call"], ttl=3600, kind="user", groups=["staff"])
    headers = {
        "Authorization": f"Bearer {token}",
        "Origin": "https://evil.example",
        "Accept": "application/json, text/event-stream",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}
    assert (await world.http.post(world.portal.mcp_url, json=body, headers=headers)).status_code == 403
    login = await world.http.post(
        f"{world.base}/oauth/login", data={"username": "alice"}, headers={"Origin": "https://evil.example"}
    )
    assert login.status_code == 403
    token_endpoint = await world.http.post(f"{world.base}/oauth/token", data={}, headers={"Host": "evil.example"})
    assert token_endpoint.status_code == 421


# -- A9 ------------------------------------------------------------------------------------------------------
async def _login(http: httpx.AsyncClient, base: str, user: str, password: str) -> httpx.Response:
    page = await http.get(f"{base}/oauth/login")
    form = [*hidden_fields(page.text), ("username", user), ("password", password)]
    return await http.post(
        f"{base}/oauth/login",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def test_a9_a_wrong_password_and_an_unknown_user_look_the_same(world: World) -> None:
    wrong = await _login(world.http, world.base, "alice", "not the password")
    unknown = await _login(world.http, world.base, "nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    text = "Wrong user name or password."
    assert text in wrong.text and text in unknown.text
    assert "nobody" not in unknown.text.replace('value="nobody"', "")  # only echoed back into the field


async def test_a9_logins_are_rate_limited_per_user_name(world: World) -> None:
    for _ in range(5):
        assert (await _login(world.http, world.base, "alice", "guess")).status_code == 401
    throttled = await _login(world.http, world.base, "alice", PASSWORD)
    assert throttled.status_code == 429 and "Too many failed attempts" in throttled.text
    also = await _login(world.http, world.base, "nobody-at-all", PASSWORD)  # same address: throttled too
    assert also.status_code == 429


# -- R3: scopes ----------------------------------------------------------------------------------------------
async def test_r3_tools_list_reflects_the_scopes_and_a_missing_scope_is_403_naming_every_scope_needed(
    world: World,
) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    token, _ = world.auth.mint("alice", scopes=["tools:read"], ttl=3600, kind="user", groups=["staff"])
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
        Client(streamable_http_client(world.portal.mcp_url, http_client=http), mode="legacy") as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
        assert "notes__read_note" in names and "notes__write_note" not in names
        assert not (await client.call_tool("notes__read_note", {"name": "welcome"})).is_error
    call = {"name": "notes__write_note", "arguments": {"name": "a", "text": "b"}}
    response = await mcp_post(world.http, world.portal.mcp_url, token, "tools/call", call)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="tools:call"' in challenge
    code = await mcp_post(
        world.http, f"{world.base}/mcp/code", token, "tools/call", {"name": "execute", "arguments": {}}
    )
    assert code.status_code == 403 and 'scope="tools:call code"' in code.headers["www-authenticate"]


async def test_r3_the_admin_api_needs_the_admin_scope_which_only_admins_can_grant(world: World) -> None:
    user, _ = world.auth.mint("alice", scopes=["tools:read", "tools:call"], ttl=3600, kind="user")
    response = await world.http.get(f"{world.base}/admin/approvals", headers={"Authorization": f"Bearer {user}"})
    assert response.status_code == 403 and 'scope="admin"' in response.headers["www-authenticate"]
    assert (await world.http.get(f"{world.base}/admin/approvals")).status_code == 401
    admin, _ = world.auth.mint("root", scopes=["admin"], ttl=3600, kind="user")
    assert (
        await world.http.get(f"{world.base}/admin/approvals", headers={"Authorization": f"Bearer {admin}"})
    ).status_code == 200
    # Through OAuth, a user outside the admins group never gets the admin scope...
    granted = await world.tokens(scope="tools:read admin")
    assert granted["scope"] == "tools:read"
    # ...and asking for nothing but admin is refused.
    response = await world.flow.authorize(world.browser, scope="admin")
    assert _query(response)["error"] == "invalid_scope"


# -- A7, A8, service principals, OIDC ------------------------------------------------------------------------
async def test_a7_token_responses_are_not_cached_and_introspection_reports_state(world: World) -> None:
    await world.flow.register()
    code = await world.flow.code(world.browser)
    response = await world.flow.exchange(code)
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    access = response.json()["access_token"]
    info = (await world.flow.endpoint("introspect", token=access)).json()
    assert info["active"] is True and info["sub"] == "alice" and info["aud"] == f"{world.base}/mcp"
    await world.flow.endpoint("revoke", token=access)
    assert (await world.flow.endpoint("introspect", token=access)).json() == {"active": False}


async def test_a8_rotation_keeps_the_previous_key_valid_and_publishes_both(world: World) -> None:
    old, _ = world.auth.mint("alice", scopes=["tools:read"], ttl=3600, kind="user", groups=["staff"])
    before = (await world.http.get(f"{world.base}/oauth/jwks")).json()["keys"]
    world.auth.keys.rotate()
    after = (await world.http.get(f"{world.base}/oauth/jwks")).json()["keys"]
    assert len(after) == len(before) + 1 and {k["kid"] for k in before} < {k["kid"] for k in after}
    new, _ = world.auth.mint("alice", scopes=["tools:read"], ttl=3600, kind="user", groups=["staff"])
    assert (
        json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"]
        != json.loads(base64.urlsafe_b64decode(old.split(".")[0] + "=="))["kid"]
    )
    for token in (old, new):
        assert (await mcp_post(world.http, world.portal.mcp_url, token, "initialize", INITIALIZE)).status_code == 200
        jwt.decode(token, KeySet.import_key_set({"keys": after}))  # verifiable from the published set


async def test_a_service_principal_gets_a_token_with_client_credentials(world: World) -> None:
    response = await world.http.post(
        f"{world.base}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "tools:read tools:call"},
        auth=("ci-bot", "ci-secret-value-123"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    claims = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "=="))
    assert (claims["sub"], claims["dockyard_kind"], claims["groups"]) == ("ci-bot", "service", ["bots"])
    wrong = await world.http.post(
        f"{world.base}/oauth/token", data={"grant_type": "client_credentials"}, auth=("ci-bot", "nope")
    )
    assert wrong.status_code == 401


async def test_openid_scope_returns_an_id_token_signed_by_the_published_keys(world: World) -> None:
    tokens = await world.tokens(scope="openid profile tools:read", nonce="n-123")
    keys = KeySet.import_key_set((await world.http.get(f"{world.base}/oauth/jwks")).json())
    claims = jwt.decode(tokens["id_token"], keys).claims
    assert claims["iss"] == world.base and claims["aud"] == [world.flow.client_id]
    assert (claims["sub"], claims["nonce"], claims["groups"]) == ("alice", "n-123", ["staff"])


async def test_t3_a_session_belongs_to_the_principal_that_opened_it(world: World) -> None:
    alice, _ = world.auth.mint("alice", scopes=["tools:read", "tools:call"], ttl=3600, kind="user", groups=["staff"])
    bob, _ = world.auth.mint("bob", scopes=["tools:read", "tools:call"], ttl=3600, kind="user", groups=["staff"])
    opened = await mcp_post(world.http, world.portal.mcp_url, alice, "initialize", INITIALIZE)
    session = opened.headers["mcp-session-id"]
    headers = {
        "Accept": "application/json, text/event-stream",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-06-18",
    }
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    stolen = await world.http.post(
        world.portal.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {bob}"}
    )
    assert stolen.status_code == 404  # as if the session did not exist: a session id is never authentication
    again, _ = world.auth.mint("alice", scopes=["tools:read", "tools:call"], ttl=3600, kind="user", groups=["staff"])
    own = await world.http.post(
        world.portal.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {again}"}
    )
    assert own.status_code == 200


async def test_an_admin_decision_over_http_names_the_admin_who_made_it(world: World) -> None:
    from portal.principal import Principal

    held = await world.portal.gateway.approvals.hold(
        Principal("alice", groups=frozenset({"staff"})),
        method="tools/call",
        target="notes__wipe_notes",
        server="notes",
        arguments={},
        rule="wiping-needs-approval",
        reason="test",
        policy_version="v",
    )
    admin, _ = world.auth.mint("root", scopes=["admin"], ttl=3600, kind="user", groups=["admins"])
    response = await world.http.post(
        f"{world.base}/admin/approvals/{held.id}/approve",
        json={"note": "ok"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["decided_by"] == "http:user:root"


async def test_scopes_the_portal_does_not_know_are_ignored_not_refused(world: World) -> None:
    info = await world.flow.register(scope="claudeai offline_access tools:read tools:call")
    assert info.get("scope") == "tools:read tools:call"
    granted = await world.tokens(scope="tools:read tools:call offline_access")
    assert granted["scope"] == "tools:read tools:call"
    response = await world.flow.authorize(world.browser, scope="offline_access")
    assert _query(response)["error"] == "invalid_scope"  # nothing of the portal's left to grant


async def test_r2_the_resource_may_be_named_with_a_trailing_slash(world: World) -> None:
    tokens = await world.tokens(resource=f"{world.base}/mcp/")
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert claims["aud"] == f"{world.base}/mcp"


async def test_a5_the_consent_page_lets_another_user_log_in_instead(world: World) -> None:
    page, _ = await _consent_page(world)
    logout = hidden_fields(page, form=1)
    response = await world.browser.post(f"{world.base}/oauth/logout", logout)
    assert response.status_code == 303 and response.headers["location"].startswith("/oauth/login?return_to=")
    assert "dockyard_session=" in response.headers["set-cookie"]  # cleared
    again = await world.http.get(world.base + response.headers["location"])
    assert 'name="password"' in again.text  # logged out: the login form, to go on as someone else
    forged = [(k, "forged" if k == "csrf" else v) for k, v in logout]
    await _login(world.http, world.base, "alice", PASSWORD)
    assert (await world.browser.post(f"{world.base}/oauth/logout", forged)).status_code == 403
