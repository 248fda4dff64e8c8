"""With OAuth on: a user logged in through the official ``mcp`` client grants an upstream in their browser, and
their calls carry their upstream token, never the portal token their client holds (SECURITY.md U2, R4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client

from portal.auth._upstream_oauth import CATALOG_SUBJECT
from tests.auth.login import Browser, MemoryStorage, add_user, client_metadata
from tests.auth.oauth_upstream import Upstream, oauth_upstream
from tests.auth.serving import serving
from tests.policy.conftest import write_files
from tests.support import make_settings, running_portal, wait_for

pytestmark = pytest.mark.anyio

POLICY = """
    version: 1
    roles: {member: {}}
    principals:
      groups:
        staff: {roles: [member]}
    rules:
      - {name: members-use-notes, effect: allow, roles: [member], servers: [notes]}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_a_logged_in_user_grants_the_upstream_in_their_browser_and_their_client_token_stays_home(
    tmp_path: Path,
) -> None:
    holder: list[Upstream] = []
    seen: list[str] = []

    def build(base: str) -> Any:
        holder.append(oauth_upstream(base))
        inner = holder[0].app

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/mcp"):
                seen.extend(v.decode() for k, v in scope["headers"] if k == b"authorization")
            await inner(scope, receive, send)

        return spy

    async with serving(build=build) as base:
        upstream = holder[0]
        settings = make_settings(
            tmp_path,
            {"notes": {"url": f"{base}/mcp", "auth": "oauth"}},
            auth={"mode": "oauth"},
            insecure_fetch_hosts=["127.0.0.1"],
        )
        policy = write_files(tmp_path / "policies", main=POLICY)
        settings = settings.model_copy(update={"policy": settings.policy.model_copy(update={"dir": policy})})
        add_user(settings)
        async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
            credentials = portal.gateway.credentials
            assert credentials is not None
            upstream.provider.user = "admin@up"
            async with httpx.AsyncClient(follow_redirects=True, timeout=10) as admin:
                granted = await admin.get(credentials.oauth.consent_link("notes", CATALOG_SUBJECT))
                assert granted.status_code == 200, granted.text
            await wait_for(lambda: "notes__whoami" in portal.gateway.catalog.tools)

            browser = Browser(http)  # alice's browser: logs in to the portal for her MCP client
            storage = MemoryStorage()
            provider = OAuthClientProvider(
                server_url=portal.mcp_url,
                client_metadata=client_metadata(),
                storage=storage,
                redirect_handler=browser.visit,
                callback_handler=browser.callback,
            )
            async with (
                httpx2.AsyncClient(auth=provider, timeout=10) as transport,
                Client(streamable_http_client(portal.mcp_url, http_client=transport), mode="legacy") as client,
            ):
                first = await client.call_tool("notes__whoami", {})
                assert first.is_error, _text(first)
                link = _text(first)[_text(first).index("http") :].split()[0]

                # Someone else's browser (not logged in) cannot use alice's link: it must log in as alice first.
                async with httpx.AsyncClient(timeout=10) as stranger:
                    refused = await stranger.get(link)
                    assert refused.status_code == 303 and refused.headers["location"].startswith("/oauth/login")

                # Alice's own browser, logged in to the portal, follows it: upstream consent, callback, done.
                upstream.provider.user = "alice@up"
                page = await http.get(link, follow_redirects=True)
                assert page.status_code == 200 and "Access granted" in page.text, page.text

                second = await client.call_tool("notes__whoami", {})
                assert not second.is_error, _text(second)
                assert _text(second) == "alice@up"

            assert storage.tokens is not None
            portal_token = storage.tokens.access_token
            assert seen
            assert all(portal_token not in header for header in seen)  # R4
            assert seen[-1].removeprefix("Bearer ") in upstream.provider.access
    await anyio.sleep(0)
