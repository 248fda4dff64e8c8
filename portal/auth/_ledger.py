"""The grant ledger: authorization codes, grants, refresh and access tokens, consents, in the database.

Every token descends from a grant. Writes are single statements or short transactions that hold on
SQLite and PostgreSQL alike; the one race that matters (two requests presenting the same refresh token
or code) is settled by a conditional ``UPDATE ... WHERE used_at IS NULL``: exactly one wins.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Select, Table, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, select, update

from portal.auth._scopes import parse_scope
from portal.store import utcnow
from portal.store._auth_tables import (
    AccessTokenRecord,
    AuthCode,
    ConsentRecord,
    GrantRecord,
    RefreshTokenRecord,
)

__all__ = ["Ledger", "RefreshOutcome", "digest", "new_id"]

_ACCESS: Table = SQLModel.metadata.tables["auth_access_tokens"]
_GRANTS: Table = SQLModel.metadata.tables["auth_grants"]
_REVOKED: Select[datetime | None, datetime | None] = (
    sa_select(_ACCESS.c.revoked_at, _GRANTS.c.revoked_at)
    .select_from(_ACCESS.join(_GRANTS, _GRANTS.c.id == _ACCESS.c.grant_id))
    .where(_ACCESS.c.jti == bindparam("jti"))
)


def digest(secret: str) -> str:
    """How a code, refresh token or client secret is stored: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_id() -> str:
    """A random identifier for a grant or a token (128 bits)."""
    return secrets.token_hex(16)


def aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What presenting a refresh token found: its grant when valid, else whether it was a reuse."""

    grant: GrantRecord | None
    reused: bool = False


class Ledger:
    """Database operations of the authorization server (synchronous: call them from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- codes ------------------------------------------------------------------------------------------
    def save_code(self, code: str, record: AuthCode) -> None:
        """Store an authorization code (its digest) with what it is bound to."""
        record.code_hash = digest(code)
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(record)
            session.commit()

    def find_code(self, code: str, client_id: str) -> AuthCode | None:
        """An unexpired code of ``client_id``. A code presented twice revokes what its first use produced."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(AuthCode, digest(code))
            if record is None or record.client_id != client_id or aware(record.expires_at) <= utcnow():
                return None
            if record.used_at is not None:
                if record.grant_id is not None:  # RFC 6749 4.1.2: revoke the tokens issued from it
                    self._revoke_grant(session, record.grant_id, "authorization code used twice")
                    session.commit()
                return None
            session.expunge(record)
            return record

    def use_code(self, code_hash: str, grant_id: str) -> bool:
        """Mark a code used by ``grant_id``; False if another request used it first."""
        with Session(self.engine, expire_on_commit=False) as session:
            done = session.exec(
                update(AuthCode)
                .where(col(AuthCode.code_hash) == code_hash, col(AuthCode.used_at).is_(None))
                .values(used_at=utcnow(), grant_id=grant_id)  # pyright: ignore[reportArgumentType]
            )
            session.commit()
            return done.rowcount == 1

    # -- grants and tokens ------------------------------------------------------------------------------
    def save_grant(self, grant: GrantRecord) -> None:
        """Store a new grant."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(grant)
            session.commit()

    def grant(self, grant_id: str) -> GrantRecord | None:
        """The grant with this id."""
        with Session(self.engine, expire_on_commit=False) as session:
            found = session.get(GrantRecord, grant_id)
            if found is not None:
                session.expunge(found)
            return found

    def record_tokens(
        self,
        grant_id: str,
        *,
        jti: str,
        access_expires: datetime,
        refresh_token: str | None,
        refresh_ttl: float,
    ) -> None:
        """Record an issued access token (and refresh token); a refresh extends the grant's life."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(AccessTokenRecord(jti=jti, grant_id=grant_id, expires_at=access_expires))
            if refresh_token is not None:
                expires = now + timedelta(seconds=refresh_ttl)
                session.add(RefreshTokenRecord(token_hash=digest(refresh_token), grant_id=grant_id, expires_at=expires))
                session.exec(update(GrantRecord).where(col(GrantRecord.id) == grant_id).values(expires_at=expires))  # pyright: ignore[reportArgumentType]
            session.commit()

    def claim_refresh(self, token: str) -> RefreshOutcome:
        """Use a refresh token once (rotation). Presenting a used one revokes its whole grant (SECURITY.md A6)."""
        token_hash = digest(token)
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(RefreshTokenRecord, token_hash)
            if record is None:
                return RefreshOutcome(None)
            grant = session.get(GrantRecord, record.grant_id)
            claimed = session.exec(
                update(RefreshTokenRecord)
                .where(col(RefreshTokenRecord.token_hash) == token_hash, col(RefreshTokenRecord.used_at).is_(None))
                .values(used_at=now)  # pyright: ignore[reportArgumentType]
            )
            if claimed.rowcount != 1:
                self._revoke_grant(session, record.grant_id, "refresh token reused")
                session.commit()
                return RefreshOutcome(None, reused=True)
            session.commit()
            if grant is None or grant.revoked_at is not None or aware(record.expires_at) <= now:
                return RefreshOutcome(None)
            session.expunge(grant)
            return RefreshOutcome(grant)

    def find_refresh(self, token: str) -> tuple[RefreshTokenRecord, GrantRecord] | None:
        """A refresh token and its grant, without using it (introspection, revocation)."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(RefreshTokenRecord, digest(token))
            grant = session.get(GrantRecord, record.grant_id) if record is not None else None
            if record is None or grant is None:
                return None
            session.expunge(record)
            session.expunge(grant)
            return record, grant

    def access_status(self, jti: str) -> tuple[AccessTokenRecord, GrantRecord] | None:
        """An access token's record and grant (introspection)."""
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.exec(
                select(AccessTokenRecord, GrantRecord)
                .join(GrantRecord, col(GrantRecord.id) == col(AccessTokenRecord.grant_id))
                .where(col(AccessTokenRecord.jti) == jti)
            ).first()
            if row is None:
                return None
            session.expunge_all()
            return row[0], row[1]

    def is_revoked(self, jti: str) -> bool | None:
        """Whether an access token or its grant was revoked; None if no such token was issued.

        The per-request check of the protected resource: one indexed join in SQLAlchemy Core, no ORM.
        """
        with self.engine.connect() as conn:
            row = conn.execute(_REVOKED, {"jti": jti}).first()
        if row is None:
            return None
        return row[0] is not None or row[1] is not None

    def revoke_access(self, jti: str) -> None:
        """Revoke one access token."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.exec(update(AccessTokenRecord).where(col(AccessTokenRecord.jti) == jti).values(revoked_at=utcnow()))  # pyright: ignore[reportArgumentType]
            session.commit()

    def revoke_grant(self, grant_id: str, reason: str) -> bool:
        """Revoke a grant and so every token issued under it; False if there is no such live grant."""
        with Session(self.engine, expire_on_commit=False) as session:
            done = self._revoke_grant(session, grant_id, reason)
            session.commit()
            return done

    def revoke_subject(self, subject: str, reason: str) -> int:
        """Revoke every live grant of a user; returns how many."""
        with Session(self.engine, expire_on_commit=False) as session:
            done = session.exec(
                update(GrantRecord)
                .where(col(GrantRecord.subject) == subject, col(GrantRecord.kind) == "user")
                .where(col(GrantRecord.revoked_at).is_(None))
                .values(revoked_at=utcnow(), revoked_reason=reason)  # pyright: ignore[reportArgumentType]
            )
            session.commit()
            return done.rowcount

    @staticmethod
    def _revoke_grant(session: Session, grant_id: str, reason: str) -> bool:
        done = session.exec(
            update(GrantRecord)
            .where(col(GrantRecord.id) == grant_id, col(GrantRecord.revoked_at).is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)  # pyright: ignore[reportArgumentType]
        )
        return done.rowcount == 1

    def grants(self, *, label_prefix: str | None = None, live_only: bool = True) -> list[GrantRecord]:
        """Grants, newest first (``dockyard token list``)."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(GrantRecord).order_by(col(GrantRecord.created_at).desc())
            if live_only:
                query = query.where(col(GrantRecord.revoked_at).is_(None)).where(col(GrantRecord.expires_at) > utcnow())
            if label_prefix is not None:
                query = query.where(col(GrantRecord.label).startswith(label_prefix))
            rows = list(session.exec(query).all())
            session.expunge_all()
            return rows

    # -- consents ---------------------------------------------------------------------------------------
    def consented(self, subject: str, client_id: str, scope: str) -> bool:
        """Whether ``subject`` already approved every scope of ``scope`` for ``client_id`` (SECURITY.md A5)."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(ConsentRecord, (subject, client_id))
            return record is not None and parse_scope(scope) <= parse_scope(record.scope)

    def remember_consent(self, subject: str, client_id: str, scope: str) -> None:
        """Record an approval, adding ``scope`` to what was approved before."""
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(ConsentRecord, (subject, client_id))
            if record is None:
                session.add(ConsentRecord(subject=subject, client_id=client_id, scope=scope))
            else:
                record.scope = " ".join(sorted(parse_scope(record.scope) | parse_scope(scope)))
                record.updated_at = utcnow()
                session.add(record)
            session.commit()
