"""Client ID Metadata Documents (SECURITY.md A4): the client id is a URL, the portal fetches it safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import portal.auth
from tests.auth.login import REDIRECT, Browser, Flow, add_user, oauth_settings
from tests.auth.serving import serving
from tests.support import running_portal

pytestmark = pytest.mark.anyio


def _document_server(documents: dict[str, Any]) -> Starlette:
    async def document(request: Request) -> JSONResponse:
        return JSONResponse(documents[request.path_params["name"]])

    return Starlette(routes=[Route("/clients/{name}", document)])


async def test_a4_a_metadata_document_client_logs_in_with_the_redirects_its_document_names(tmp_path: Path) -> None:
    documents: dict[str, Any] = {}
    async with serving(_document_server(documents)) as host:
        url = f"{host}/clients/assistant.json"
        documents["assistant.json"] = {
            "client_id": url,
            "client_name": "Document Assistant",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }
        documents["liar.json"] = {**documents["assistant.json"], "client_id": "https://someone-else.example/c.json"}
        settings = oauth_settings(tmp_path, insecure_fetch_hosts=["127.0.0.1"])
        add_user(settings)
        async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
            meta = (await http.get(f"{portal.url}/.well-known/oauth-authorization-server")).json()
            assert meta["client_id_metadata_document_supported"] is True
            flow = Flow(http, portal.url, client_id=url)
            browser = Browser(http)
            code = await flow.code(browser)
            assert "Document Assistant" in browser.pages[-1]
            tokens = await flow.exchange(code)
            assert tokens.status_code == 200 and tokens.json()["refresh_token"]
            # Another redirect URI than the document's is refused, and so is a document naming another id.
            assert (await flow.authorize(browser, redirect_uri="http://127.0.0.1:4567/other")).status_code == 400
            liar = Flow(http, portal.url, client_id=f"{host}/clients/liar.json")
            assert (await liar.authorize(browser)).status_code == 400


async def test_a4_a_metadata_document_on_a_private_address_is_never_fetched(tmp_path: Path) -> None:
    fetched: list[str] = []

    async def document(request: Request) -> JSONResponse:
        fetched.append(str(request.url))
        return JSONResponse({})

    async with serving(Starlette(routes=[Route("/c.json", document)])) as host:
        settings = oauth_settings(tmp_path)  # no insecure_fetch_hosts: loopback is off limits
        add_user(settings)
        async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
            port = host.rsplit(":", 1)[1]
            for client_id in (f"https://127.0.0.1:{port}/c.json", f"{host}/c.json", "https://169.254.169.254/c.json"):
                response = await Flow(http, portal.url, client_id=client_id).authorize(Browser(http))
                assert response.status_code == 400 and "location" not in response.headers
    assert fetched == []


def test_the_auth_package_exports_exactly_its_public_surface() -> None:
    assert set(portal.auth.__all__) >= {
        "AuthService",
        "AuthError",
        "InvalidTokenError",
        "PRINCIPAL_SCOPE_KEY",
        "ResourceGuard",
        "SCOPES",
        "TokenService",
        "UserStore",
        "scopes_needed",
    }
    assert all(hasattr(portal.auth, name) for name in portal.auth.__all__)
    from portal.endpoint import PRINCIPAL_SCOPE_KEY

    assert portal.auth.PRINCIPAL_SCOPE_KEY == PRINCIPAL_SCOPE_KEY  # the guard writes where the endpoint reads
