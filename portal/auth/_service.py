"""The portal's authentication, assembled from the settings: what ``create_app`` and the CLI use."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from sqlalchemy import Engine
from starlette.routing import Route
from starlette.types import ASGIApp

from portal.auth._cimd import DocumentFetcher, document_fetcher
from portal.auth._clients import ClientStore
from portal.auth._errors import AuthError
from portal.auth._fetch import FetchPolicy
from portal.auth._guard import ResourceGuard
from portal.auth._keys import KeyRing
from portal.auth._ledger import Ledger, new_id
from portal.auth._routes import OAuthEndpoints
from portal.auth._scopes import OIDC_SCOPES, SCOPES, format_scope, parse_scope
from portal.auth._server import PortalAuthorizationServer
from portal.auth._sessions import SessionCookies
from portal.auth._tokens import Owner, TokenService
from portal.auth._upstream_login import UpstreamLogin
from portal.auth._users import LoginThrottle, UserStore
from portal.auth._vault import Vault
from portal.config import Settings
from portal.sealing import Sealer
from portal.store import utcnow
from portal.store._auth_tables import GrantRecord

__all__ = ["CLI_CLIENT_ID", "MAX_TOKEN_TTL", "AuthService"]

logger = logging.getLogger("portal.auth")
# authlib logs issued tokens and codes at DEBUG ("Issue token %r to %r"): never let them reach a log.
logging.getLogger("authlib").setLevel(logging.INFO)

CLI_CLIENT_ID = "dockyard-cli"
"""The client id of tokens minted by ``dockyard token create``."""

MAX_TOKEN_TTL = 365 * 86400
"""Longest lifetime of a minted token; a retired signing key stays published this long."""


def _metadata(issuer: str, *, registration: bool, documents: bool) -> dict[str, Any]:
    """RFC 8414 metadata, also served as OpenID Connect discovery."""
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/oauth/jwks",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "scopes_supported": [*SCOPES, *OIDC_SCOPES],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": documents,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "groups"],
    }
    if registration:
        document["registration_endpoint"] = f"{issuer}/oauth/register"
    return document


class AuthService:
    """Authorization server, protected-resource guard, users and tokens of one portal.

    Args:
        settings: The portal's settings (``[auth]`` and ``[portal] public_url``).
        engine: The portal's database.
        sealer: Seals session cookies and CSRF tokens.
        vault: Keeps the private signing keys, encrypted.
        fetcher: Fetches Client ID Metadata Documents; by default the SSRF-safe fetcher, which reaches
            ``[portal] insecure_fetch_hosts`` over plain http. None turns metadata documents off.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sealer: Sealer,
        *,
        vault: Vault,
        fetcher: DocumentFetcher | Literal["default"] | None = "default",
    ) -> None:
        auth = settings.auth
        insecure = frozenset(h.lower() for h in settings.portal.insecure_fetch_hosts)
        if fetcher == "default":
            fetcher = document_fetcher(insecure)
        self.issuer = issuer = settings.portal.public_url
        self.resources = (f"{issuer}/mcp", f"{issuer}/mcp/code", f"{issuer}/admin", issuer)
        self.ledger = Ledger(engine)
        self.keys = KeyRing(engine, retention=MAX_TOKEN_TTL, vault=vault)
        self.tokens = TokenService(issuer=issuer, keys=self.keys, ledger=self.ledger, access_ttl=auth.access_token_ttl)
        self.users = UserStore(engine)
        documents = auth.client_metadata_documents and fetcher is not None
        self.clients = ClientStore(
            engine, configured=auth.clients, fetcher=fetcher if documents else None, insecure_hosts=insecure
        )
        self.server = PortalAuthorizationServer(
            issuer=issuer,
            resources=self.resources,
            clients=self.clients,
            users=self.users,
            tokens=self.tokens,
            refresh_ttl=auth.refresh_token_ttl,
            registration=auth.dynamic_registration,
            admin_group=auth.admin_group,
        )
        self.server.metadata = _metadata(issuer, registration=auth.dynamic_registration, documents=documents)
        self.cookies = SessionCookies(sealer, secure=urlsplit(issuer).scheme == "https")
        self.throttle = LoginThrottle()
        self.upstream = (
            UpstreamLogin(
                auth.oidc,
                public_url=issuer,
                cookies=self.cookies,
                users=self.users,
                policy=FetchPolicy(insecure_hosts=insecure),
            )
            if auth.oidc is not None
            else None
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 metadata document."""
        return self.server.metadata

    def start(self) -> None:
        """Load the signing keys (creating the first) and tell the admin when no one can log in yet."""
        self.keys.load()
        if self.users.count() == 0 and self.upstream is None:
            logger.warning(
                "no user can log in yet: create the first one with `dockyard users add NAME` "
                "(add `--group admins` to allow the admin scope)"
            )

    def routes(self, security: TransportSecuritySettings) -> list[Route]:
        """The authorization server's routes and the protected-resource metadata."""
        endpoints = OAuthEndpoints(
            server=self.server,
            cookies=self.cookies,
            users=self.users,
            throttle=self.throttle,
            security=TransportSecurityMiddleware(security),
            metadata=self.metadata,
            jwks=self.keys.jwks,
            upstream=self.upstream,
        )
        return endpoints.routes()

    def guard(self, app: ASGIApp, *, read_only_tools: Callable[[str], bool]) -> ResourceGuard:
        """``app`` behind the protected-resource checks."""
        return ResourceGuard(app, tokens=self.tokens, public_url=self.issuer, read_only_tools=read_only_tools)

    def mint(
        self,
        subject: str,
        *,
        scopes: Iterable[str],
        ttl: int,
        kind: Literal["user", "service"] = "service",
        groups: Iterable[str] = (),
        label: str = "",
    ) -> tuple[str, GrantRecord]:
        """A recorded, revocable access token for a script (``dockyard token create``), valid at every resource.

        Raises:
            AuthError: Unknown scopes, or a lifetime out of range.
        """
        wanted = parse_scope(" ".join(scopes))
        if unknown := wanted - set(SCOPES):
            raise AuthError(f"unknown scope(s) {format_scope(unknown)!r}; the scopes are {', '.join(SCOPES)}")
        if not wanted:
            raise AuthError(f"give at least one --scope ({', '.join(SCOPES)})")
        if not 60 <= ttl <= MAX_TOKEN_TTL:
            raise AuthError(f"the lifetime must be between 60 seconds and 365 days, got {ttl} seconds")
        self.keys.load()
        grant = GrantRecord(
            id=new_id(),
            client_id=CLI_CLIENT_ID,
            subject=subject,
            kind=kind,
            groups=sorted(set(groups)),
            scope=format_scope(wanted),
            resource=self.issuer,
            label=label,
            expires_at=utcnow() + timedelta(seconds=ttl),
        )
        self.ledger.save_grant(grant)
        owner = Owner(subject, kind, grant.id, self.issuer, frozenset(grant.groups))
        token = self.tokens.sign(owner, client_id=CLI_CLIENT_ID, scope=grant.scope, expires_in=ttl)
        self.tokens.record(owner, {"access_token": token}, refresh_ttl=0)
        return token, grant
