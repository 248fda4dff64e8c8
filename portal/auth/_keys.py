"""The keys that sign access and ID tokens, published as a JWKS (SECURITY.md A8).

Keys live in the database, so every portal process sharing it signs and verifies with the same ones. The
``auth_signing_keys`` row holds the public key; the private key is encrypted in the vault (AES-GCM under
the portal's vault key, SECURITY.md U3), so reading the database is not enough to mint tokens.
The newest unretired key signs. :meth:`KeyRing.rotate` makes a new key and retires the others; a
retired key stays in the JWKS, and keeps verifying, until every token it signed has expired.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from portal.auth._vault import SecretRef, Vault, VaultError
from portal.store import utcnow
from portal.store._auth_tables import SigningKey

__all__ = ["KeyRing"]

ALGORITHM = "RS256"
_VAULT_KIND = "signing-key"


class KeyRing:
    """Signing keys shared through the database.

    Args:
        engine: The portal's database.
        retention: Seconds a retired key keeps verifying (the longest token lifetime).
        vault: Where private keys are kept, encrypted.
    """

    def __init__(self, engine: Engine, *, retention: float, vault: Vault) -> None:
        self._engine = engine
        self._vault = vault
        self._retention = retention
        self._lock = threading.Lock()
        self._signing: RSAKey | None = None
        self._public: dict[str, RSAKey] = {}
        self._last_reload = 0.0
        self._missing: dict[str, float] = {}

    def load(self) -> None:
        """Read the keys, creating the first one on a fresh database."""
        with Session(self._engine, expire_on_commit=False) as session:
            if session.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None))).first() is None:
                session.add(self._new_key())
                session.commit()
        self._reload()

    def _reload(self) -> None:
        horizon = utcnow() - timedelta(seconds=self._retention)
        with Session(self._engine, expire_on_commit=False) as session:
            rows = session.exec(select(SigningKey).order_by(col(SigningKey.created_at).desc())).all()
        current = next((r for r in rows if r.retired_at is None), None)
        keys = {r.kid: self._private(r) for r in rows if r.retired_at is None or _aware(r.retired_at) > horizon}
        with self._lock:
            self._public = keys
            self._signing = keys[current.kid] if current is not None else None
            self._last_reload = time.monotonic()

    def _new_key(self) -> SigningKey:
        key = RSAKey.generate_key(2048, private=True, auto_kid=True)
        assert key.kid is not None
        self._vault.put(SecretRef(_VAULT_KIND, "", key.kid), json.dumps(dict(key.as_dict(private=True))))
        return SigningKey(kid=key.kid, alg=ALGORITHM, private_jwk=dict(key.as_dict(private=False)))

    def _private(self, row: SigningKey) -> RSAKey:
        """The key of a row: the private half from the vault (a row written before the vault: in the row)."""
        if "d" in row.private_jwk:
            return RSAKey.import_key(row.private_jwk)  # pyright: ignore[reportArgumentType]
        secret = self._vault.get(SecretRef(_VAULT_KIND, "", row.kid))
        if secret is None:
            raise VaultError(f"the private half of signing key {row.kid!r} is missing from the vault")
        return RSAKey.import_key(json.loads(secret.value))

    def signing_key(self) -> RSAKey:
        """The key that signs new tokens (its ``kid`` is set)."""
        with self._lock:
            key = self._signing
        if key is None:
            self.load()
            with self._lock:
                key = self._signing
        assert key is not None
        return key

    def verification_key(self, kid: str) -> RSAKey | None:
        """The key with ``kid``, reading the database again if it is not known here (another process rotated).

        A ``kid`` found missing is not looked up again for 5 seconds, and past 1,000 such key ids the
        database is read at most once a second: made-up key ids cannot turn into a query per request.
        """
        now = time.monotonic()
        with self._lock:
            key = self._public.get(kid)
            if key is not None:
                return key
            self._missing = {k: t for k, t in self._missing.items() if now - t < 5.0}
            fresh = kid not in self._missing and len(self._missing) < 1000
            reload = fresh or now - self._last_reload > 1.0
            self._missing[kid] = now
        if reload:
            self._reload()
            with self._lock:
                key = self._public.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        """The public keys, as a JSON Web Key Set."""
        with self._lock:
            keys = list(self._public.values())
        public = KeySet([RSAKey.import_key(k.as_dict(private=False)) for k in keys])
        entries = [{**dict(entry), "use": "sig", "alg": ALGORITHM} for entry in public.as_dict(private=False)["keys"]]
        return {"keys": entries}

    def rotate(self) -> str:
        """Make a new signing key and retire the others; returns the new ``kid``."""
        key = self._new_key()
        with Session(self._engine, expire_on_commit=False) as session:
            session.exec(
                update(SigningKey).where(col(SigningKey.retired_at).is_(None)).values(retired_at=utcnow())  # pyright: ignore[reportArgumentType]
            )
            session.add(key)
            session.commit()
        self._reload()
        return key.kid


def _aware(moment: Any) -> Any:
    """SQLite returns naive datetimes; they are UTC."""
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
