"""A second portal as the OpenID Connect identity provider of the first (``[auth.oidc]``).

Portal B has the user and a pre-registered client for portal A; portal A has no local users. A person
logging in to A goes to B, logs in and consents there, comes back to A with a code, and A — having
verified B's ID token — knows them by B's user name and groups, which A's policy uses.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

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
from tests.support import running_portal

pytestmark = pytest.mark.anyio

SECRET = "portal-a-secret-at-b-0123456789"


async def _sso(http: httpx.AsyncClient, portal_a: str, params: dict[str, str]) -> httpx.Response:
    """Follow A's login page's single sign-on link through B's login and consent, back to A."""
    page = await http.get(f"{portal_a}/oauth/authorize?{urlencode(params)}", follow_redirects=True)
    link = page.text.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    response = await http.get(portal_a + link, follow_redirects=True)  # B's login page
    assert 'name="password"' in response.text
    form = [*hidden_fields(response.text), ("username", "alice"), ("password", PASSWORD)]
    base_b = f"{response.url.scheme}://{response.url.host}:{response.url.port}"
    response = await http.post(base_b + form_action(response.text), data=dict(form), follow_redirects=True)
    assert 'name="decision"' in response.text and "profile" in response.text  # B's consent for portal A
    consent = [*hidden_fields(response.text), ("decision", "approve")]
    response = await http.post(base_b + form_action(response.text), data=dict(consent))
    # B -> A's callback -> A's authorization request -> A's consent page
    while response.status_code in (302, 303) and not response.headers["location"].startswith(REDIRECT):
        response = await http.get(httpx.URL(str(response.url)).join(response.headers["location"]))
    return response


async def test_a_portal_logs_users_in_through_another_portal_as_its_identity_provider(tmp_path: Path) -> None:
    idp_settings = oauth_settings(
        tmp_path / "b",
        auth={
            "clients": {
                "portal-a": {
                    "name": "Portal A",
                    "secret": SECRET,
                    "redirect_uris": ["http://127.0.0.1/oauth/oidc/callback"],  # loopback: any port
                    "scopes": ["tools:read"],
                }
            }
        },
    )
    add_user(idp_settings, "alice", groups=("staff", "b-only"))
    async with running_portal(idp_settings) as idp:
        settings = oauth_settings(
            tmp_path / "a",
            insecure_fetch_hosts=["127.0.0.1"],
            auth={"oidc": {"issuer": idp.url, "client_id": "portal-a", "client_secret": SECRET, "name": "Portal B"}},
        )
        async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
            login = await http.get(f"{portal.url}/oauth/login")
            assert "Log in with Portal B" in login.text and "No user exists yet" not in login.text
            flow = Flow(http, portal.url)
            await flow.register()
            params = flow.params()
            response = await _sso(http, portal.url, params)
            assert 'name="decision"' in response.text and "Test Assistant" in response.text  # A's consent
            consent = [*hidden_fields(response.text), ("decision", "approve")]
            response = await Browser(http).post(f"{portal.url}/oauth/authorize", consent)
            code = httpx.URL(response.headers["location"]).params["code"]
            tokens = (await flow.exchange(code)).json()
            principal_check = await mcp_post(http, portal.mcp_url, tokens["access_token"], "initialize", INITIALIZE)
            assert principal_check.status_code == 200
            info = (await flow.endpoint("introspect", token=tokens["access_token"])).json()
            assert info["sub"] == "alice"
            assert portal.portal.auth is not None
            user = portal.portal.auth.users.get("alice")
            assert user is not None and user.source == "oidc" and user.groups == frozenset({"staff", "b-only"})

            # The state is single-use: replaying B's answer to A's callback is refused.
            replay = await http.get(f"{portal.url}/oauth/oidc/callback?state=x&code=y")
            assert replay.status_code == 400


async def test_an_identity_provider_cannot_take_over_a_local_account(tmp_path: Path) -> None:
    idp_settings = oauth_settings(
        tmp_path / "b",
        auth={"clients": {"portal-a": {"secret": SECRET, "redirect_uris": ["http://127.0.0.1/oauth/oidc/callback"]}}},
    )
    add_user(idp_settings, "alice")
    async with running_portal(idp_settings) as idp:
        settings = oauth_settings(
            tmp_path / "a",
            insecure_fetch_hosts=["127.0.0.1"],
            auth={"oidc": {"issuer": idp.url, "client_id": "portal-a", "client_secret": SECRET}},
        )
        add_user(settings, "alice")  # a local alice on A
        async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
            flow = Flow(http, portal.url)
            await flow.register()
            response = await _sso(http, portal.url, flow.params())
            assert response.status_code == 403 and "local account" in response.text
