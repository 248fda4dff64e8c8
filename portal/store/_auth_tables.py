"""The tables of the portal's authorization server (``portal/auth/``).

No secret is stored in a form that can be used: passwords are argon2 hashes, client secrets, codes and
refresh tokens SHA-256 digests, access tokens only their ``jti``. A token's whole line of descent is its
grant: revoking the grant (refresh-token reuse, a user's "log out everywhere", ``dockyard token
revoke``) revokes every access and refresh token issued under it, in every process sharing the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from portal.store._models import utcnow

__all__ = [
    "AccessTokenRecord",
    "AuthCode",
    "ClientRecord",
    "ConsentRecord",
    "GrantRecord",
    "RefreshTokenRecord",
    "SigningKey",
    "UserRecord",
]


class UserRecord(SQLModel, table=True):
    """A person who can log in: a local account (argon2 hash) or one first seen through the upstream IdP."""

    __tablename__ = "auth_users"  # pyright: ignore[reportAssignmentType]

    name: str = Field(primary_key=True, max_length=128)
    password_hash: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    groups: list[str] = Field(default_factory=list[str], sa_column=Column(JSON, nullable=False))
    disabled: bool = False
    source: str = Field(default="local", max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None


class ClientRecord(SQLModel, table=True):
    """An OAuth client: registered dynamically (RFC 7591), from the config, or a fetched metadata document.

    ``metadata_`` holds the client metadata as RFC 7591 names it (redirect_uris, grant_types, scope, ...);
    ``expires_at`` is when a cached Client ID Metadata Document must be fetched again.
    """

    __tablename__ = "auth_clients"  # pyright: ignore[reportAssignmentType]

    client_id: str = Field(primary_key=True, max_length=512)
    secret_hash: str | None = Field(default=None, max_length=64)
    name: str = Field(default="", max_length=256)
    kind: str = Field(max_length=16)
    metadata_: dict[str, object] = Field(sa_column=Column("metadata", JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None


class AuthCode(SQLModel, table=True):
    """An authorization code (its digest): single-use, short-lived, bound to client, redirect and PKCE."""

    __tablename__ = "auth_codes"  # pyright: ignore[reportAssignmentType]

    code_hash: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=512)
    subject: str = Field(max_length=128)
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    scope: str = Field(default="", sa_column=Column(Text, nullable=False))
    resource: str = Field(sa_column=Column(Text, nullable=False))
    code_challenge: str = Field(max_length=128)
    nonce: str | None = Field(default=None, max_length=256)
    auth_time: int = 0
    expires_at: datetime
    used_at: datetime | None = None
    grant_id: str | None = Field(default=None, max_length=32)


class GrantRecord(SQLModel, table=True):
    """One authorization: what a client may do for a subject. Tokens descend from it."""

    __tablename__ = "auth_grants"  # pyright: ignore[reportAssignmentType]

    id: str = Field(primary_key=True, max_length=32)
    client_id: str = Field(max_length=512, index=True)
    subject: str = Field(max_length=128, index=True)
    kind: str = Field(max_length=16)
    groups: list[str] = Field(default_factory=list[str], sa_column=Column(JSON, nullable=False))
    scope: str = Field(default="", sa_column=Column(Text, nullable=False))
    resource: str = Field(sa_column=Column(Text, nullable=False))
    label: str = Field(default="", max_length=256)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = Field(default=None, max_length=256)


class RefreshTokenRecord(SQLModel, table=True):
    """A refresh token (its digest). ``used_at`` is set when it is rotated; presenting it again revokes the grant."""

    __tablename__ = "auth_refresh_tokens"  # pyright: ignore[reportAssignmentType]

    token_hash: str = Field(primary_key=True, max_length=64)
    grant_id: str = Field(max_length=32, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None


class AccessTokenRecord(SQLModel, table=True):
    """An issued access token, by ``jti``: the resource server looks it up on every request (revocation)."""

    __tablename__ = "auth_access_tokens"  # pyright: ignore[reportAssignmentType]

    jti: str = Field(primary_key=True, max_length=64)
    grant_id: str = Field(max_length=32, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None


class ConsentRecord(SQLModel, table=True):
    """Scopes a user approved for a client; a later request within them skips the consent page."""

    __tablename__ = "auth_consents"  # pyright: ignore[reportAssignmentType]

    subject: str = Field(primary_key=True, max_length=128)
    client_id: str = Field(primary_key=True, max_length=512)
    scope: str = Field(default="", sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class SigningKey(SQLModel, table=True):
    """A token signing key. The newest unretired key signs; retired keys verify until ``retired_at`` + max TTL.

    ``private_jwk`` holds the public JWK: the private half is encrypted in the vault (``portal/auth/_keys.py``).
    """

    __tablename__ = "auth_signing_keys"  # pyright: ignore[reportAssignmentType]

    kid: str = Field(primary_key=True, max_length=64)
    alg: str = Field(max_length=16)
    private_jwk: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    retired_at: datetime | None = None
