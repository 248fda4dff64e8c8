"""End to end with the official ``mcp`` client's OAuth provider: discovery, registration, login, consent,
token, refresh and calls through a real portal on a real socket (SECURITY.md R1, A1, A4, A5, A6, A7)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from sqlmodel import Session, select

from portal.store import AuditRecord
from tests.auth.login import Browser, MemoryStorage, add_user, client_metadata, oauth_settings
from tests.support import running_portal

pytestmark = pytest.mark.anyio


async def test_the_official_client_discovers_registers_logs_in_consents_calls_and_refreshes(tmp_path: Path) -> None:
    settings = oauth_settings(tmp_path)
    add_user(settings)
    async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
        browser = Browser(http)
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
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"notes__read_note", "notes__write_note"} <= tools
            result = await client.call_tool("notes__read_note", {"name": "welcome"})
            assert not result.is_error
        assert len(browser.pages) == 2  # the login page, then the consent page
        assert "Test Assistant" in browser.pages[1] and "127.0.0.1" in browser.pages[1]
        assert storage.tokens is not None and storage.tokens.refresh_token
        first = storage.tokens

        # The access token runs out: the provider refreshes (rotating the refresh token) and goes on.
        provider.context.token_expiry_time = 1.0
        async with (
            httpx2.AsyncClient(auth=provider, timeout=10) as transport,
            Client(streamable_http_client(portal.mcp_url, http_client=transport), mode="legacy") as client,
        ):
            assert not (await client.call_tool("notes__read_note", {"name": "welcome"})).is_error
        assert storage.tokens.refresh_token != first.refresh_token
        assert storage.tokens.access_token != first.access_token
        assert len(browser.pages) == 2  # no new login

    with Session(portal.portal.engine) as session:
        records = session.exec(select(AuditRecord).where(AuditRecord.target == "notes__read_note")).all()
    assert records and all(r.principal == "alice" for r in records)
    assert {r.client for r in records} == {storage.client_info.client_id if storage.client_info else None}
    await anyio.sleep(0)
