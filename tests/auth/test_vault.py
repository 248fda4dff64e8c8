"""The encrypted vault and its CLI (SECURITY.md U3): keys, row binding, static secrets injected upstream."""

from __future__ import annotations

import base64
import io
import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from sqlalchemy import Engine, text

from portal.auth._vault import (
    KEY_ENV,
    SecretCorruptError,
    SecretRef,
    Vault,
    VaultKeyError,
    load_vault_key,
)
from portal.channel import NULL_CHANNEL
from portal.cli import main
from portal.config import settings_from_mapping
from portal.principal import LOCAL_PRINCIPAL
from tests.auth.serving import serving
from tests.portal.conftest import database_url, engine, postgres_database, postgres_url  # noqa: F401 - fixtures: SQLite, then the local PostgreSQL server
from tests.support import running_portal, wait_for

KEY = b"\x01" * 32


# --- the key ---------------------------------------------------------------------------------------------


def test_the_key_file_is_created_0600_on_first_run_and_reused(tmp_path: Path) -> None:
    first = load_vault_key(tmp_path / "data", {})
    path = tmp_path / "data" / "vault.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_vault_key(tmp_path / "data", {}) == first


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_vault_key(tmp_path, {})
    (tmp_path / "vault.key").chmod(0o644)
    with pytest.raises(VaultKeyError, match="chmod 600"):
        load_vault_key(tmp_path, {})


def test_the_key_comes_from_the_environment_in_base64_or_hex(tmp_path: Path) -> None:
    raw = os.urandom(32)
    assert load_vault_key(tmp_path, {KEY_ENV: base64.urlsafe_b64encode(raw).decode().rstrip("=")}) == raw
    assert load_vault_key(tmp_path, {KEY_ENV: raw.hex()}) == raw
    assert not (tmp_path / "vault.key").exists()  # no file when the environment provides the key


def test_a_malformed_environment_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VaultKeyError, match="32 random bytes"):
        load_vault_key(tmp_path, {KEY_ENV: "hunter2"})


# --- sealing ---------------------------------------------------------------------------------------------


def test_a_secret_round_trips_and_is_not_stored_in_clear(engine: Engine) -> None:  # noqa: F811
    vault = Vault(engine, KEY)
    ref = SecretRef("header", "docs", "Authorization")
    vault.put(ref, "Bearer sk-live-123")
    found = vault.get(ref)
    assert found is not None and found.value == b"Bearer sk-live-123"
    assert "sk-live" not in repr(found) and "sk-live" not in repr(vault)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT ciphertext FROM vault_secrets")).scalar_one()
    assert b"sk-live" not in bytes(stored)


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(engine: Engine) -> None:  # noqa: F811
    vault = Vault(engine, KEY)
    mine, theirs = (
        SecretRef("oauth-grant", "notes", "grant", "user:alice"),
        SecretRef("oauth-grant", "notes", "grant", "user:mallory"),
    )
    vault.put(mine, "alice's tokens")
    vault.put(theirs, "mallory's tokens")
    with engine.begin() as conn:  # mallory copies alice's ciphertext into her own row
        conn.execute(
            text(
                "UPDATE vault_secrets SET ciphertext = "
                "(SELECT ciphertext FROM vault_secrets WHERE subject = 'user:alice') WHERE subject = 'user:mallory'"
            )
        )
    with pytest.raises(SecretCorruptError, match="does not decrypt under its own row"):
        vault.get(theirs)
    assert vault.get(mine) is not None


def test_a_tampered_ciphertext_does_not_decrypt(engine: Engine) -> None:  # noqa: F811
    vault = Vault(engine, KEY)
    ref = SecretRef("env", "db", "PGPASSWORD")
    vault.put(ref, "s3cret")
    with engine.begin() as conn:
        blob = bytearray(conn.execute(text("SELECT ciphertext FROM vault_secrets")).scalar_one())
        blob[-1] ^= 1
        conn.execute(text("UPDATE vault_secrets SET ciphertext = :b"), {"b": bytes(blob)})
    with pytest.raises(SecretCorruptError):
        vault.get(ref)


def test_another_key_is_named_as_the_problem(engine: Engine) -> None:  # noqa: F811
    Vault(engine, KEY).put(SecretRef("env", "db", "PGPASSWORD"), "s3cret")
    with pytest.raises(VaultKeyError, match="another vault key"):
        Vault(engine, b"\x02" * 32).get(SecretRef("env", "db", "PGPASSWORD"))


def test_take_hands_a_single_use_value_out_once(engine: Engine) -> None:  # noqa: F811
    vault = Vault(engine, KEY)
    ref = SecretRef("oauth-pending", "", "state-digest")
    vault.put(ref, "verifier")
    first, second = vault.take(ref), vault.take(ref)
    assert first is not None and first.value == b"verifier"
    assert second is None


# --- the CLI and injection -------------------------------------------------------------------------------


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "dockyard.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [portal]
            data_dir = "data"
            [auth]
            mode = "none"
            [servers.api]
            url = "{url}"
            [servers.tool]
            command = "true"
            """
        )
    )
    return path


def test_secrets_set_reads_the_value_from_stdin_and_list_shows_names_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/mcp")
    monkeypatch.setattr("sys.stdin", io.StringIO("Bearer sk-from-stdin\n"))
    assert main(["-c", str(config), "secrets", "set", "api", "--header", "Authorization"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("pg-pass"))
    assert main(["-c", str(config), "secrets", "set", "tool", "--env", "PGPASSWORD"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "secrets", "list"]) == 0
    listing = capsys.readouterr().out
    assert "Authorization" in listing and "PGPASSWORD" in listing
    assert "sk-from-stdin" not in listing and "pg-pass" not in listing
    # a header for a command server (or env for a url server) is refused
    monkeypatch.setattr("sys.stdin", io.StringIO("x"))
    assert main(["-c", str(config), "secrets", "set", "tool", "--header", "X"]) == 2
    assert main(["-c", str(config), "secrets", "delete", "api", "--header", "Authorization"]) == 0
    assert main(["-c", str(config), "secrets", "delete", "api", "--header", "Authorization"]) == 1
    key = tmp_path / "data" / "vault.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_the_value_is_never_an_argument() -> None:
    with pytest.raises(SystemExit):
        main(["secrets", "set", "api", "--header", "Authorization", "Bearer sk-on-argv"])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stored_header_is_sent_when_the_portal_connects_and_never_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MCPServer("echo")

    @server.tool()
    def api_key(ctx: Context[Any]) -> str:
        """The X-Api-Key header this request carried."""
        headers = ctx.headers or {}
        return "key is " + ("right" if headers.get("x-api-key") == "sk-upstream-42" else "missing")

    async with serving(server.streamable_http_app()) as base:
        config = _config(tmp_path, f"{base}/mcp")
        monkeypatch.setattr("sys.stdin", io.StringIO("sk-upstream-42"))
        assert main(["-c", str(config), "secrets", "set", "api", "--header", "X-Api-Key"]) == 0
        raw = {
            "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 1.0},
            "auth": {"mode": "none"},
            "servers": {"api": {"url": f"{base}/mcp"}},
        }
        settings = settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)
        async with running_portal(settings) as portal:
            await wait_for(lambda: "api__api_key" in portal.gateway.catalog.tools)
            result = await portal.gateway.call_tool(LOCAL_PRINCIPAL, "api__api_key", {}, channel=NULL_CHANNEL)
            assert isinstance(result, types.CallToolResult)
            assert [c.text for c in result.content if isinstance(c, types.TextContent)] == ["key is right"]

            def audit() -> str:
                with portal.gateway.engine.connect() as conn:
                    return " ".join(str(r) for r in conn.execute(text("SELECT * FROM audit_records")))

            await wait_for(lambda: "api__api_key" in audit())  # the audit log is written in the background
            assert "sk-upstream-42" not in audit()
        await anyio.lowlevel.checkpoint()


def test_the_auth_package_exports_the_vault_and_the_upstream_oauth_client() -> None:
    import portal.auth

    assert set(portal.auth.__all__) >= {
        "CATALOG_SUBJECT",
        "DiscoveryError",
        "AuthorizationError",
        "SecretRef",
        "UpstreamAuthError",
        "UpstreamCredentials",
        "UpstreamOAuth",
        "Vault",
        "VaultError",
        "VaultKeyError",
        "SecretCorruptError",
        "load_vault_key",
        "upstream_credentials",
        "upstream_oauth_routes",
    }


def test_expired_values_of_a_kind_are_purged(engine: Engine) -> None:  # noqa: F811
    from datetime import UTC, datetime, timedelta

    vault = Vault(engine, KEY)
    now = datetime.now(UTC)
    vault.put(SecretRef("oauth-pending", "", "old"), "v", expires_at=now - timedelta(minutes=1))
    vault.put(SecretRef("oauth-pending", "", "new"), "v", expires_at=now + timedelta(minutes=10))
    vault.put(SecretRef("header", "api", "X-Key"), "v")
    assert vault.purge_expired("oauth-pending") == 1
    assert vault.get(SecretRef("oauth-pending", "", "new")) is not None
    assert vault.get(SecretRef("header", "api", "X-Key")) is not None
