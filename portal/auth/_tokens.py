"""Access tokens: RFC 9068 JWTs bound to the portal's resource URL (RFC 8707), checked on every request.

A token is accepted at a path when it is signed by one of the portal's keys, is an ``at+jwt`` from this
issuer, has not expired, its audience is the resource the path belongs to (or a parent of it: the
portal's origin covers everything), and the database says neither the token nor its grant was revoked
(SECURITY.md R2) -- so ``dockyard token revoke`` or a refresh-token reuse in one process is seen by all.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from joserfc import jwt
from joserfc.errors import JoseError

from portal.auth._errors import InvalidTokenError
from portal.auth._keys import ALGORITHM, KeyRing
from portal.auth._ledger import Ledger, new_id
from portal.auth._scopes import parse_scope
from portal.principal import Principal

__all__ = ["Owner", "TokenService", "VerifiedToken", "covers", "unverified_claims"]

_LEEWAY = 30


@dataclass(frozen=True)
class Owner:
    """On whose behalf a token is issued: authlib's "user" object, carrying the grant it belongs to."""

    subject: str
    kind: Literal["user", "service"]
    grant_id: str
    resource: str
    groups: frozenset[str] = field(default_factory=frozenset[str])
    auth_time: int = 0
    new_grant: bool = False

    def get_user_id(self) -> str:
        return self.subject


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """An access token accepted at a resource: whose it is, and what identifies it (never the token itself)."""

    principal: Principal
    jti: str
    expires_at: int
    audience: str


def covers(audience: str, resource: str) -> bool:
    """Whether a token for ``audience`` may be used at ``resource``: the same URL or a parent path of it."""
    if audience == resource:
        return True
    parent = audience.rstrip("/") + "/"
    return resource.startswith(parent)


def _segment(text: str) -> dict[str, Any]:
    value: object = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return cast(dict[str, Any], value)


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three segments")
        return _segment(parts[0])
    except (ValueError, UnicodeDecodeError):
        raise InvalidTokenError("the access token is not a JWT") from None


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT this process just signed (no verification: never use on input)."""
    return _segment(token.split(".")[1])


class TokenService:
    """Signs and verifies access tokens.

    Args:
        issuer: The authorization server's issuer (the public URL, exactly).
        keys: The signing keys.
        ledger: Where issued tokens are recorded and revocation is looked up.
        access_ttl: Seconds an access token is valid.
    """

    def __init__(self, *, issuer: str, keys: KeyRing, ledger: Ledger, access_ttl: int) -> None:
        self.issuer = issuer
        self.keys = keys
        self.ledger = ledger
        self.access_ttl = access_ttl

    def sign(self, owner: Owner, *, client_id: str, scope: str, expires_in: int | None = None) -> str:
        """A signed access token for ``owner`` through ``client_id`` (not yet recorded)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": owner.subject,
            "aud": owner.resource,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + (expires_in or self.access_ttl),
            "jti": new_id(),
            "dockyard_kind": owner.kind,
            "groups": sorted(owner.groups),
        }
        if owner.auth_time:
            claims["auth_time"] = owner.auth_time
        key = self.keys.signing_key()
        return jwt.encode({"alg": ALGORITHM, "typ": "at+jwt", "kid": key.kid}, claims, key, algorithms=[ALGORITHM])

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by this portal and unexpired; the database is not consulted.

        Raises:
            InvalidTokenError: Malformed, unknown key, bad signature, wrong type or issuer, expired.
        """
        header = _header(token)
        kid = header.get("kid")
        if header.get("typ") != "at+jwt" or header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidTokenError("the access token is not an at+jwt access token of this portal")
        key = self.keys.verification_key(kid)
        if key is None:
            raise InvalidTokenError("the access token was not signed by this portal (unknown key)")
        try:
            claims = dict(jwt.decode(token, key, algorithms=[ALGORITHM]).claims)
        except (JoseError, ValueError, TypeError):
            raise InvalidTokenError("the access token's signature does not verify") from None
        if claims.get("iss") != self.issuer:
            raise InvalidTokenError("the access token was issued by another authorization server")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp + _LEEWAY < time.time():
            raise InvalidTokenError("the access token has expired")
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("sub"), str):
            raise InvalidTokenError("the access token lacks jti or sub")
        return claims

    def verify(self, token: str, *, resource: str) -> VerifiedToken:
        """The principal of a token presented at ``resource`` (synchronous: it reads the database).

        Raises:
            InvalidTokenError: The token must not be accepted here; the message says why.
        """
        claims = self.decode(token)
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else cast(list[object], audience or [])
        matching = [a for a in audiences if isinstance(a, str) and covers(a, resource)]
        if not matching:
            raise InvalidTokenError(f"the access token is for another resource, not {resource}")
        revoked = self.ledger.is_revoked(str(claims["jti"]))
        if revoked is None:
            raise InvalidTokenError("the access token is not known to this portal")
        if revoked:
            raise InvalidTokenError("the access token has been revoked")
        kind = claims.get("dockyard_kind")
        groups = claims.get("groups")
        principal = Principal(
            subject=str(claims["sub"]),
            kind="service" if kind == "service" else "user",
            groups=frozenset(str(g) for g in cast(list[object], groups)) if isinstance(groups, list) else frozenset(),
            client_id=str(claims.get("client_id") or "") or None,
            scopes=parse_scope(str(claims.get("scope") or "")),
        )
        return VerifiedToken(principal, str(claims["jti"]), int(claims["exp"]), matching[0])

    def record(self, owner: Owner, token: dict[str, Any], *, refresh_ttl: float) -> None:
        """Record what the token endpoint issued: the access token's ``jti`` and the refresh token."""
        claims = unverified_claims(str(token["access_token"]))
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        self.ledger.record_tokens(
            owner.grant_id,
            jti=str(claims["jti"]),
            access_expires=expires,
            refresh_token=cast(str | None, token.get("refresh_token")),
            refresh_ttl=refresh_ttl,
        )
