"""The conformance suite's authorization-server scenarios (0.2.0 pre-release) against the portal.

``conformance authorization`` reads the portal's RFC 8414 metadata (``authorization-server-metadata-
endpoint``), then runs an authorization code grant with PKCE and ``resource`` (``authorization-code-
grant``): it prints the authorization URL and waits for the browser to reach its callback. The test is
the browser: it logs in and consents on the portal's pages and follows the redirect to the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from tests.auth.login import Browser, add_user, oauth_settings
from tests.conformance.runner import NODE22, NODE_MODULES
from tests.support import free_port, running_portal

pytestmark = pytest.mark.anyio

SUITE = NODE_MODULES / "conformance-2026" / "dist" / "index.js"


async def test_the_portal_passes_the_authorization_server_scenarios(tmp_path: Path) -> None:
    if not NODE22.exists() or not SUITE.exists():
        pytest.fail(f"{SUITE} or Node.js 22 is missing; run `make setup`")
    settings = oauth_settings(
        tmp_path, auth={"clients": {"conformance": {"redirect_uris": ["http://127.0.0.1/callback"]}}}
    )
    add_user(settings)
    out = tmp_path / "results"
    port = free_port()
    async with running_portal(settings) as portal, httpx.AsyncClient(timeout=10) as http:
        command = [
            str(NODE22),
            str(SUITE),
            "authorization",
            "--url",
            portal.url,
            "--client-id",
            "conformance",
            "--resource",
            portal.mcp_url,
            "--port",
            str(port),
            "--output-dir",
            str(out),
        ]
        async with await anyio.open_process(command) as process:
            assert process.stdout is not None
            printed = ""
            with anyio.fail_after(60):
                async for chunk in process.stdout:
                    printed += chunk.decode(errors="replace")
                    if "Waiting up to 5 minutes" in printed:
                        break
            url = next(line for line in printed.splitlines() if line.startswith(f"{portal.url}/oauth/authorize?"))
            browser = Browser(http)
            await browser.visit(url)
            assert browser.final is not None
            callback = browser.final.headers["location"]
            assert callback.startswith(f"http://127.0.0.1:{port}/callback?")
            await http.get(callback)  # the browser lands on the suite's callback server
            with anyio.fail_after(60):
                async for chunk in process.stdout:
                    printed += chunk.decode(errors="replace")
                await process.wait()
    checks = [check for path in sorted(out.glob("**/checks.json")) for check in json.loads(path.read_text())]
    by_id = {check["id"]: check["status"] for check in checks}
    failed = {c["id"]: c.get("errorMessage") or c.get("details") for c in checks if c["status"] == "FAILURE"}
    assert not failed, f"{failed}\n{printed[-2000:]}"
    assert by_id.get("authorization-code-grant") == "SUCCESS", printed[-2000:]
    assert any(status == "SUCCESS" for cid, status in by_id.items() if cid != "authorization-code-grant")
