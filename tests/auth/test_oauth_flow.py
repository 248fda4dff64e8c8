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
from tests.auth.login import PASSWORD, Browser, MemoryStorage, add_user, client_metadata, oauth_settings
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
    assert records and all(r.principal == "user:alice" for r in records)
    assert {r.client for r in records} == {storage.client_info.client_id if storage.client_info else None}
    await anyio.sleep(0)


async def test_secrets_never_reach_the_logs_or_the_audit_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SECURITY.md G6/U3: passwords, codes, client secrets, access and refresh tokens stay out of both."""
    import logging

    from sqlalchemy import text

    caplog.set_level(logging.DEBUG)
    settings = oauth_settings(tmp_path)
    add_user(settings)
    async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
        browser = Browser(http)
        storage = MemoryStorage()
        provider = OAuthClientProvider(
            server_url=portal.mcp_url,
            client_metadata=client_metadata(token_endpoint_auth_method="client_secret_post"),
            storage=storage,
            redirect_handler=browser.visit,
            callback_handler=browser.callback,
        )
        async with (
            httpx2.AsyncClient(auth=provider, timeout=10) as transport,
            Client(streamable_http_client(portal.mcp_url, http_client=transport), mode="legacy") as client,
        ):
            assert not (await client.call_tool("notes__read_note", {"name": "welcome"})).is_error
            provider.context.token_expiry_time = 1.0
            assert not (await client.call_tool("notes__write_note", {"name": "n", "text": "t"})).is_error
        assert storage.tokens is not None and storage.client_info is not None and browser.result is not None
        secrets = {
            "password": PASSWORD,
            "code": browser.result.code,
            "client secret": storage.client_info.client_secret or "",
            "access token": storage.tokens.access_token,
            "refresh token": storage.tokens.refresh_token or "",
        }
        assert all(secrets.values())
        with portal.portal.engine.connect() as conn:
            stored = [
                repr(row)
                for table in ("audit_records", "auth_grants", "auth_refresh_tokens", "auth_codes", "auth_clients")
                for row in conn.execute(text(f"SELECT * FROM {table}")).all()
            ]
    # The test's own HTTP clients log URLs with codes in them; the portal's loggers are what must stay clean.
    client_side = ("httpx", "httpcore", "mcp.client", "mcp.shared")
    logs = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records if not r.name.startswith(client_side)
    )
    assert "portal.auth" in logs  # the portal did log (logins, consents)
    for what, value in secrets.items():
        assert value not in logs, f"the {what} is in the log"
        assert not any(value in row for row in stored), f"the {what} is in the database"
