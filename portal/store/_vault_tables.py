"""The table of the encrypted vault (``portal/auth/_vault.py``).

Every value is AES-256-GCM ciphertext bound to its row's identity (kind, server, subject, name), so a
ciphertext copied into another row does not decrypt. Only the columns a listing needs are in clear:
names, expiry and the status of an upstream OAuth grant, never a value.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from portal.store._models import utcnow

__all__ = ["VaultSecret"]


class VaultSecret(SQLModel, table=True):
    """One encrypted value.

    ``kind`` is ``header`` or ``env`` (a static secret of an upstream), ``oauth-client`` (the portal's
    registration at an upstream's authorization server), ``oauth-grant`` (one user's tokens for an
    upstream) or ``oauth-pending`` (an authorization in progress, ``name`` the digest of its ``state``).
    ``status`` is ``ok`` or ``dead`` (a grant the upstream no longer honours; ``detail`` says why).
    """

    __tablename__ = "vault_secrets"  # pyright: ignore[reportAssignmentType]
    __table_args__ = (UniqueConstraint("kind", "server", "subject", "name", name="uq_vault_secret"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)
    server: str = Field(max_length=64, index=True)
    subject: str = Field(default="", max_length=256)
    name: str = Field(max_length=256)
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    key_id: str = Field(max_length=16)
    expires_at: datetime | None = None
    status: str = Field(default="ok", max_length=16)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
