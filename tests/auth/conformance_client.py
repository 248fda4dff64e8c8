"""Conformance harness: the portal's upstream OAuth client driven by the suite's ``client --suite auth`` scenarios.

Usage: ``conformance_client.py SERVER_URL`` (the suite appends the URL and sets ``MCP_CONFORMANCE_SCENARIO`` and,
for pre-registration, ``MCP_CONFORMANCE_CONTEXT``). The suite's server is configured as an ``auth = "oauth"``
upstream; the portal's own machinery discovers, registers, sends the "user" through the consent round (the
suite's authorization endpoint answers at once with a redirect to the portal's callback, which is handed to
``UpstreamOAuth.complete`` as the callback route would) and then calls the server with the user's token.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from portal.auth._fetch import FetchPolicy
from portal.auth._upstream_oauth import UpstreamOAuth
from portal.auth._vault import Vault
from portal.config import settings_from_mapping
from portal.sealing import Sealer
from portal.store import open_engine

SUBJECT = "user:conformance"


async def run(url: str, data_dir: Path) -> None:
    context: dict[str, Any] = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    host = urlsplit(url).hostname or "localhost"
    server: dict[str, Any] = {"url": url, "auth": "oauth"}
    if context.get("client_id"):
        server["oauth_client_id"] = context["client_id"]
        if context.get("client_secret"):
            server["oauth_client_secret"] = context["client_secret"]
    allowed = [host, "localhost", "127.0.0.1"]
    raw = {"portal": {"data_dir": str(data_dir), "insecure_fetch_hosts": allowed}, "servers": {"upstream": server}}
    settings = settings_from_mapping(raw, source="<conformance>", base_dir=data_dir, environ={})
    engine = open_engine(f"sqlite:///{data_dir / 'db.sqlite'}")
    oauth = UpstreamOAuth(
        Vault(engine, os.urandom(32)),
        settings.servers,
        public_url="http://127.0.0.1:3333",
        sealer=Sealer(os.urandom(32)),
        fetch_policy=FetchPolicy(insecure_hosts=frozenset(allowed)),
        # The document the suite's authorization server pretends to fetch (it is never served from here).
        client_metadata_url="https://conformance-test.local/client-metadata.json",
    )
    try:
        await consent(oauth)
        for _attempt in range(2):  # a second round only after a step-up (403 insufficient_scope)
            if await call(oauth, url):
                return
            needed = await oauth.dead_grant("upstream", SUBJECT)
            if needed is None:
                raise SystemExit("the call failed and the grant is fine: a new consent cannot help")
            await consent(oauth)  # what the user does with the new link a failed call gives them
        raise SystemExit("the call still fails after a new consent")
    finally:
        engine.dispose()


async def call(oauth: UpstreamOAuth, url: str) -> bool:
    """List the tools and call the first one with the user's token; whether it worked."""
    async with (
        httpx2.AsyncClient(auth=oauth.auth("upstream", SUBJECT), timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        try:
            tools = await client.list_tools()
            for tool in tools.tools[:1]:
                result = await client.call_tool(tool.name, {})
                if result.is_error:
                    return False
        except MCPError:
            return False
    return True


async def consent(oauth: UpstreamOAuth) -> None:
    """The consent round a user's browser would make, ending at the portal's callback."""
    link = oauth.consent_link("upstream", SUBJECT)
    token = parse_qs(urlsplit(link).query)["t"][0]
    authorize = await oauth.begin("upstream", token)
    async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as browser:
        answer = await browser.get(authorize)
    location = answer.headers.get("location")
    if location is None:
        raise SystemExit(f"the authorization endpoint answered {answer.status_code} without a redirect")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    await oauth.complete(
        state=params.get("state", ""), code=params.get("code"), iss=params.get("iss"), error=params.get("error")
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(run, sys.argv[1], Path(tmp))


if __name__ == "__main__":
    main()
