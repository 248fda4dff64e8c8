"""The encrypted vault: upstream credentials at rest (SECURITY.md U3).

Values are sealed with AES-256-GCM under the vault key, with the row's identity (kind, server, subject,
name) as associated data: a ciphertext copied into another row, or a row renamed, fails to decrypt.
The key comes from ``DOCKYARD_SECRET_KEY`` (32 bytes, URL-safe base64 or hex) or from the key file
``vault.key`` in the data directory, created with mode 0600 on first use and refused when group or
others can read it. Nothing here logs a value; :class:`Secret` hides its value from ``repr``.

Errors::

    VaultError                  the vault cannot be used
    ├── VaultKeyError           the key is malformed, open to others, or not the key the vault was written with
    └── SecretCorruptError      a stored value does not decrypt under its row (tampered or moved)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, Engine, delete
from sqlmodel import Session, col, select

from portal import keyfile
from portal.errors import DockyardError
from portal.store._models import utcnow
from portal.store._vault_tables import VaultSecret

__all__ = [
    "KEY_ENV",
    "KEY_FILE",
    "SecretCorruptError",
    "SecretKind",
    "SecretRef",
    "Vault",
    "VaultError",
    "VaultKeyError",
    "load_vault_key",
]

KEY_ENV = "DOCKYARD_SECRET_KEY"
"""The environment variable that holds the vault key, when it is not in the key file."""
KEY_FILE = "vault.key"
"""The key file's name in the data directory."""
_KEY_SIZE = 32
_NONCE_SIZE = 12
_AAD_PREFIX = b"dockyard-vault/1"

SecretKind = str
"""``header``, ``env``, ``oauth-client``, ``oauth-grant`` or ``oauth-pending``."""


class VaultError(DockyardError):
    """The vault cannot be used."""


class VaultKeyError(VaultError):
    """The vault key is malformed, open to others, or not the key the stored values were written with."""


class SecretCorruptError(VaultError):
    """A stored value does not decrypt under its own row: it was tampered with or moved."""


def _decode_key(text: str) -> bytes:
    text = text.strip()
    candidates: list[bytes] = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for key in candidates:
        if len(key) == _KEY_SIZE:
            return key
    raise VaultKeyError(
        f"{KEY_ENV} must be {_KEY_SIZE} random bytes as URL-safe base64 or hex (got {len(text)} characters); "
        "create one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )


def load_vault_key(data_dir: Path, environ: Mapping[str, str]) -> bytes:
    """The vault key: ``DOCKYARD_SECRET_KEY`` when set, else ``DATA_DIR/vault.key`` (created 0600 if missing).

    Raises:
        VaultKeyError: The variable is malformed; the file is open to group or others, too short, or
            cannot be read or created.
    """
    if environ.get(KEY_ENV):
        return _decode_key(environ[KEY_ENV])
    return keyfile.load_or_create(
        data_dir / KEY_FILE,
        what="vault key",
        size=_KEY_SIZE,
        error=VaultKeyError,
        wrong_size=lambda _: f", not {_KEY_SIZE}",
        exact=True,
    )


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Which secret: its kind, the upstream server, the subject it belongs to ('' for all) and its name."""

    kind: SecretKind
    server: str
    name: str
    subject: str = ""

    def associated_data(self) -> bytes:
        """What the ciphertext is bound to."""
        parts = (self.kind, self.server, self.subject, self.name)
        return b"\0".join([_AAD_PREFIX, *(p.encode("utf-8", "surrogatepass") for p in parts)])


@dataclass(frozen=True, slots=True)
class Secret:
    """A decrypted value with its row's clear metadata. ``repr`` never shows the value."""

    ref: SecretRef
    value: bytes = field(repr=False)
    expires_at: datetime | None = None
    status: str = "ok"
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What a listing shows: never the value."""

    ref: SecretRef
    expires_at: datetime | None
    status: str
    detail: str | None
    updated_at: datetime


class Vault:
    """Encrypted values in the ``vault_secrets`` table. Synchronous: call it from a worker thread.

    Args:
        engine: The portal's database.
        key: 32 bytes (see :func:`load_vault_key`).
    """

    def __init__(self, engine: Engine, key: bytes) -> None:
        if len(key) != _KEY_SIZE:
            raise VaultKeyError(f"a vault key is {_KEY_SIZE} bytes, got {len(key)}")
        self.engine = engine
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"dockyard-vault-key-id\0" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Vault(key_id={self.key_id!r})"

    def _seal(self, ref: SecretRef, value: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, value, ref.associated_data())

    def _open(self, row: VaultSecret) -> bytes:
        ref = SecretRef(row.kind, row.server, row.name, row.subject)
        if row.key_id != self.key_id:
            raise VaultKeyError(
                f"the {ref.kind} secret {ref.name!r} of {ref.server!r} was written with another vault key "
                f"({row.key_id}, this key is {self.key_id}); restore the key ({KEY_ENV} or {KEY_FILE}) or set it again"
            )
        data = bytes(row.ciphertext)
        try:
            return self._aead.decrypt(data[:_NONCE_SIZE], data[_NONCE_SIZE:], ref.associated_data())
        except InvalidTag:
            raise SecretCorruptError(
                f"the {ref.kind} secret {ref.name!r} of {ref.server!r} does not decrypt under its own row "
                "(tampered with or copied from another row); set it again"
            ) from None

    def put(
        self, ref: SecretRef, value: bytes | str, *, expires_at: datetime | None = None, status: str = "ok"
    ) -> None:
        """Store (or replace) the value of ``ref``; a replaced value's status and detail start afresh."""
        data = value.encode() if isinstance(value, str) else value
        with Session(self.engine) as session:
            row = session.exec(select(VaultSecret).where(*_match(ref))).first()
            if row is None:
                row = VaultSecret(
                    kind=ref.kind, server=ref.server, subject=ref.subject, name=ref.name, ciphertext=b"", key_id=""
                )
            row.ciphertext = self._seal(ref, data)
            row.key_id = self.key_id
            row.expires_at = expires_at
            row.status = status
            row.detail = None
            row.updated_at = utcnow()
            session.add(row)
            session.commit()

    def get(self, ref: SecretRef) -> Secret | None:
        """The decrypted value of ``ref``, or None.

        Raises:
            VaultKeyError: It was written with another key.
            SecretCorruptError: It does not decrypt under its row.
        """
        with Session(self.engine) as session:
            row = session.exec(select(VaultSecret).where(*_match(ref))).first()
            if row is None:
                return None
            return Secret(ref, self._open(row), row.expires_at, row.status, row.detail)

    def take(self, ref: SecretRef) -> Secret | None:
        """Get and delete ``ref`` in one transaction: a single-use value is used once, across processes."""
        with Session(self.engine) as session:
            row = session.exec(select(VaultSecret).where(*_match(ref))).first()
            if row is None:
                return None
        with self.engine.begin() as conn:
            # Deleting by id and ciphertext: only the one process whose delete hits the row may use it.
            statement = delete(VaultSecret).where(
                col(VaultSecret.id) == row.id, col(VaultSecret.ciphertext) == row.ciphertext
            )
            if conn.execute(statement).rowcount != 1:
                return None
        return Secret(ref, self._open(row), row.expires_at, row.status, row.detail)

    def mark(self, ref: SecretRef, *, status: str, detail: str | None) -> None:
        """Set the clear status of ``ref`` (e.g. a dead grant and why); a no-op when it does not exist."""
        with Session(self.engine) as session:
            row = session.exec(select(VaultSecret).where(*_match(ref))).first()
            if row is not None:
                row.status, row.detail, row.updated_at = status, detail, utcnow()
                session.add(row)
                session.commit()

    def delete(self, ref: SecretRef) -> bool:
        """Delete ``ref``; whether it existed."""
        with self.engine.begin() as conn:
            return conn.execute(delete(VaultSecret).where(*_match(ref))).rowcount > 0

    def purge_expired(self, kind: SecretKind) -> int:
        """Delete the values of ``kind`` whose ``expires_at`` has passed (abandoned consent rounds); how many."""
        with self.engine.begin() as conn:
            statement = delete(VaultSecret).where(col(VaultSecret.kind) == kind, col(VaultSecret.expires_at) < utcnow())
            return conn.execute(statement).rowcount

    def values(self, kind: SecretKind, server: str, *, subject: str = "") -> dict[str, bytes]:
        """Every value of ``kind`` for ``server`` and ``subject``, by name (e.g. the headers to send).

        Raises:
            VaultKeyError: A value was written with another key.
            SecretCorruptError: A value does not decrypt under its row.
        """
        with Session(self.engine) as session:
            rows = session.exec(
                select(VaultSecret).where(
                    VaultSecret.kind == kind, VaultSecret.server == server, VaultSecret.subject == subject
                )
            ).all()
            return {row.name: self._open(row) for row in rows}

    def list(self, *, kinds: Sequence[SecretKind], server: str | None = None) -> list[SecretInfo]:
        """Names and clear metadata of the stored values of ``kinds`` (never a value)."""
        with Session(self.engine) as session:
            query = select(VaultSecret).where(col(VaultSecret.kind).in_(list(kinds)))
            if server is not None:
                query = query.where(VaultSecret.server == server)
            rows = session.exec(query.order_by(col(VaultSecret.server), col(VaultSecret.kind), col(VaultSecret.name)))
            return [
                SecretInfo(
                    SecretRef(r.kind, r.server, r.name, r.subject), r.expires_at, r.status, r.detail, r.updated_at
                )
                for r in rows.all()
            ]


def _match(ref: SecretRef) -> tuple[ColumnElement[bool], ...]:
    return (
        col(VaultSecret.kind) == ref.kind,
        col(VaultSecret.server) == ref.server,
        col(VaultSecret.subject) == ref.subject,
        col(VaultSecret.name) == ref.name,
    )
