"""Storage of the authorization server on SQLite and PostgreSQL: what one process does, every other sees.

Two :class:`AuthService` instances on separate engines stand for two portal processes sharing a database.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from portal.auth import AuthService, InvalidTokenError, UserStore
from portal.auth._ledger import Ledger
from portal.auth._vault import Vault
from portal.cli import main
from portal.config import Settings
from portal.sealing import Sealer
from portal.store import open_engine, utcnow
from portal.store._auth_tables import GrantRecord
from tests.auth.login import oauth_settings
from tests.portal.conftest import database_url, postgres_database, postgres_url  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:  # noqa: F811
    return oauth_settings(tmp_path, database=database_url)


@pytest.fixture
def engines(settings: Settings) -> Iterator[tuple[Engine, Engine]]:
    first, second = open_engine(settings.database_url), open_engine(settings.database_url)
    try:
        yield first, second
    finally:
        first.dispose()
        second.dispose()


VAULT_KEY = b"v" * 32  # every portal process sharing a database shares its vault key


def _service(settings: Settings, engine: Engine) -> AuthService:
    service = AuthService(settings, engine, Sealer(b"k" * 32), vault=Vault(engine, VAULT_KEY), fetcher=None)
    service.keys.load()
    return service


def test_r2_a_revocation_in_one_process_is_seen_by_every_other(
    settings: Settings, engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    one, two = (_service(settings, e) for e in engines)
    token, grant = one.mint("ci-bot", scopes=["tools:read"], ttl=600)
    resource = f"{settings.portal.public_url}/mcp"
    assert two.tokens.verify(token, resource=resource).principal.subject == "ci-bot"
    config = tmp_path / "dockyard.toml"
    config.write_text(f'[portal]\ndata_dir = "{tmp_path / "data"}"\ndatabase = "{settings.database_url}"\n')
    assert main(["-c", str(config), "token", "revoke", grant.id]) == 0  # a third process, in effect
    for service in (one, two):
        with pytest.raises(InvalidTokenError, match="revoked"):
            service.tokens.verify(token, resource=resource)


def test_a8_a_key_rotated_by_one_process_verifies_in_another(
    settings: Settings, engines: tuple[Engine, Engine]
) -> None:
    one, two = (_service(settings, e) for e in engines)
    old, _ = one.mint("ci-bot", scopes=["tools:read"], ttl=600)
    one.keys.rotate()
    new, _ = one.mint("ci-bot", scopes=["tools:read"], ttl=600)
    resource = settings.portal.public_url + "/mcp"
    assert two.tokens.verify(new, resource=resource).principal.subject == "ci-bot"  # reloads the unknown key
    assert two.tokens.verify(old, resource=resource).principal.subject == "ci-bot"
    assert len(two.keys.jwks()["keys"]) == 2


def _grant(ledger: Ledger) -> GrantRecord:
    grant = GrantRecord(
        id="g" * 32,
        client_id="c",
        subject="alice",
        kind="user",
        scope="tools:read",
        resource="http://127.0.0.1:8000/mcp",
        expires_at=utcnow() + timedelta(hours=1),
    )
    ledger.save_grant(grant)
    return grant


def test_a6_of_two_racing_uses_of_one_refresh_token_exactly_one_wins_and_the_grant_dies(
    engines: tuple[Engine, Engine],
) -> None:
    ledgers = [Ledger(e) for e in engines]
    grant = _grant(ledgers[0])
    ledgers[0].record_tokens(grant.id, jti="j1", access_expires=utcnow(), refresh_token="r1", refresh_ttl=600)
    outcomes = []
    barrier = threading.Barrier(2)

    def use(ledger: Ledger) -> None:
        barrier.wait()
        outcomes.append(ledger.claim_refresh("r1"))

    threads = [threading.Thread(target=use, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.grant is not None for o in outcomes) == [False, True]
    assert [o.reused for o in outcomes if o.grant is None] == [True]
    assert ledgers[1].grant(grant.id).revoked_at is not None  # type: ignore[union-attr]


def test_a2_a_code_is_used_once_even_when_two_processes_race(engines: tuple[Engine, Engine]) -> None:
    from portal.store._auth_tables import AuthCode

    ledgers = [Ledger(e) for e in engines]
    record = AuthCode(
        code_hash="",
        client_id="c",
        subject="alice",
        redirect_uri="http://127.0.0.1/cb",
        resource="r",
        code_challenge="x" * 43,
        expires_at=utcnow() + timedelta(minutes=5),
    )
    ledgers[0].save_code("the-code", record)
    found = ledgers[1].find_code("the-code", "c")
    assert found is not None
    assert [ledgers[0].use_code(found.code_hash, "g1"), ledgers[1].use_code(found.code_hash, "g2")] == [True, False]
    assert ledgers[0].find_code("the-code", "c") is None
    assert ledgers[0].find_code("the-code", "another-client") is None


def test_a5_consent_is_remembered_per_user_and_client_and_grows(engines: tuple[Engine, Engine]) -> None:
    one, two = (Ledger(e) for e in engines)
    one.remember_consent("alice", "c", "tools:read")
    assert two.consented("alice", "c", "tools:read")
    assert not two.consented("alice", "c", "tools:read tools:call")
    assert not two.consented("bob", "c", "tools:read")
    two.remember_consent("alice", "c", "tools:call")
    assert one.consented("alice", "c", "tools:call tools:read")


def test_a9_passwords_are_argon2_hashes_and_disabled_users_cannot_log_in(engines: tuple[Engine, Engine]) -> None:
    from sqlmodel import Session

    from portal.store._auth_tables import UserRecord

    users = UserStore(engines[0])
    users.add("alice", "s3cret-pass", groups=["staff"])
    with Session(engines[1]) as session:
        record = session.get(UserRecord, "alice")
        assert record is not None and record.password_hash is not None
        assert record.password_hash.startswith("$argon2id$") and "s3cret-pass" not in record.password_hash
    other = UserStore(engines[1])
    assert other.authenticate("alice", "s3cret-pass") is not None
    assert other.authenticate("alice", "wrong") is None
    assert other.authenticate("nobody", "s3cret-pass") is None
    users.set_disabled("alice", True)
    assert other.authenticate("alice", "s3cret-pass") is None


def test_users_add_reads_the_password_from_stdin_never_argv(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(f'[portal]\ndata_dir = "{tmp_path / "data"}"\ndatabase = "{settings.database_url}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-from-stdin\n"))
    assert main(["-c", str(config), "users", "add", "carol", "--group", "staff"]) == 0
    engine = open_engine(settings.database_url)
    try:
        assert UserStore(engine).authenticate("carol", "pw-from-stdin") is not None
    finally:
        engine.dispose()
    with pytest.raises(SystemExit):
        main(["-c", str(config), "users", "add", "dave", "--password", "x"])  # no such option, by design
    assert main(["-c", str(config), "users", "disable", "carol"]) == 0
    assert main(["-c", str(config), "users", "list"]) == 0
    assert "carol" in capsys.readouterr().out


def test_token_create_prints_only_the_token_on_stdout_and_it_is_revocable(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text(f'[portal]\ndata_dir = "{tmp_path / "data"}"\ndatabase = "{settings.database_url}"\n')
    command = ["-c", str(config), "token", "create", "--subject", "nightly", "--scope", "tools:read,tools:call"]
    assert main([*command, "--ttl", "2h", "--group", "bots"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.count(".") == 2 and "grant " in err
    engine = open_engine(settings.database_url)
    try:
        import os

        from portal.auth._vault import load_vault_key

        key = load_vault_key(Path(settings.portal.data_dir), os.environ)  # the CLI's vault key
        service = AuthService(settings, engine, Sealer(b"k" * 32), vault=Vault(engine, key), fetcher=None)
        principal = service.tokens.verify(token, resource=settings.portal.public_url + "/mcp").principal
        assert (principal.label, principal.groups, principal.scopes) == (
            "service:nightly",
            frozenset({"bots"}),
            frozenset({"tools:read", "tools:call"}),
        )
    finally:
        engine.dispose()
    assert main(["-c", str(config), "token", "create", "--subject", "x", "--scope", "root"]) == 2
    assert main(["-c", str(config), "token", "create", "--subject", "x", "--scope", "admin", "--ttl", "400d"]) == 2
