"""The conformance suite's client auth scenarios against the portal's upstream OAuth client (U1, U2).

``tests/auth/conformance_client.py`` is the harness the suite runs: the portal's ``UpstreamOAuth`` configured for
the suite's server, a consent round followed as a browser would, then calls with the user's token. Every
scenario of ``client --suite auth`` runs, and the 2026-07-28 auth scenarios the suite has outside that suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance.runner import NODE22, NODE_MODULES

ROOT = Path(__file__).resolve().parents[2]
SUITE = NODE_MODULES / "conformance-2026" / "dist" / "index.js"

SCENARIOS = [
    # client --suite auth
    "metadata-default",
    "metadata-var1",
    "metadata-var2",
    "metadata-var3",
    "basic-cimd",
    "scope-from-www-authenticate",
    "scope-from-scopes-supported",
    "scope-omitted-when-undefined",
    "scope-step-up",
    "scope-retry-limit",
    "token-endpoint-auth-basic",
    "token-endpoint-auth-post",
    "token-endpoint-auth-none",
    "pre-registration",
    # the other auth scenarios of 2025-03-26 and 2026-07-28
    "2025-03-26-oauth-metadata-backcompat",
    "2025-03-26-oauth-endpoint-fallback",
    "resource-mismatch",
    "offline-access-scope",
    "offline-access-not-supported",
    "authorization-server-migration",
    "iss-supported",
    "iss-not-advertised",
    "iss-supported-missing",
    "iss-wrong-issuer",
    "iss-unexpected",
    "iss-normalized",
    "metadata-issuer-mismatch",
]


LIMITS = ("--timeout", "60000")


@pytest.mark.npm
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_upstream_oauth_client_passes_the_conformance_scenario(scenario: str, tmp_path: Path) -> None:
    if not NODE22.exists() or not SUITE.exists():
        pytest.fail(f"{SUITE} or {NODE22} is missing; run `make setup` to install the npm test packages")
    command = f"cd {ROOT} && {sys.executable} -m tests.auth.conformance_client"
    done = subprocess.run(
        [
            str(NODE22),
            str(SUITE),
            "client",
            "--command",
            command,
            "--scenario",
            f"auth/{scenario}",
            *LIMITS,
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    [checks_file] = tmp_path.glob("auth/*/checks.json")
    checks = json.loads(checks_file.read_text())
    problems = [
        f"{c['id']}: {c['status']}: {c.get('description')}" for c in checks if c["status"] in ("FAILURE", "WARNING")
    ]
    assert not problems, "\n".join(problems) + "\n" + done.stdout[-2000:]
    assert done.returncode == 0, done.stdout[-2000:]
    assert any(c["status"] == "SUCCESS" for c in checks)
