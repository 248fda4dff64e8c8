"""The authorization server, assembled from authlib's RFC building blocks with the portal's rules.

- Authorization code grant with PKCE S256 required of every client; ``plain`` and a missing challenge are
  refused (SECURITY.md A2); codes are single-use (a second use revokes what the first produced) and live
  ``CODE_TTL`` seconds.
- RFC 8707 ``resource``: one of the portal's resource URLs, or absent (the ``/mcp`` resource); anything
  else is ``invalid_target``. The access token's ``aud`` is that resource.
- Refresh tokens rotate on every use; presenting a rotated one revokes the whole grant (A6).
- Client credentials for pre-registered confidential clients: service principals.
- Revocation (RFC 7009), introspection (RFC 7662), dynamic registration (RFC 7591), OpenID Connect ID
  tokens (so a portal can be another's identity provider).
"""

# authlib ships no type information: its base classes' signatures are inferred (often as Unknown), so
# overriding and calling them cannot satisfy strict checking. The portal's own types stay checked.
# pyright: reportIncompatibleMethodOverride=false, reportUnknownMemberType=false, reportUnknownArgumentType=false
# pyright: reportUnknownVariableType=false, reportUnknownLambdaType=false, reportOptionalMemberAccess=false
# pyright: reportDeprecated=false, reportAttributeAccessIssue=false, reportReturnType=false

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError, InvalidRedirectURIError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import OpenIDCode, UserInfo

from portal.auth._adapter import Reply
from portal.auth._clients import Client, ClientStore, check_redirect_uris
from portal.auth._errors import InvalidTokenError
from portal.auth._ledger import new_id
from portal.auth._scopes import OIDC_SCOPES, SCOPES, format_scope, parse_scope
from portal.auth._tokens import Owner, TokenService, covers
from portal.auth._users import UserStore
from portal.store import utcnow
from portal.store._auth_tables import AuthCode, GrantRecord

__all__ = ["CODE_TTL", "ConsentRequest", "InvalidTargetError", "PortalAuthorizationServer"]

CODE_TTL = 300
"""Seconds an authorization code is valid."""

_CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "none"]


class InvalidTargetError(OAuth2Error):
    """RFC 8707: the ``resource`` is not one this server issues tokens for."""

    error = "invalid_target"


class _S256Only(CodeChallenge):
    """PKCE with S256, required of every client, public or confidential (SECURITY.md A2)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib's class attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                f"code_challenge_method must be S256, got {data.get('code_challenge_method')!r} ('plain' is refused)"
            )
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier' (PKCE is required)")
        super().validate_code_verifier(grant, result)


@dataclass(frozen=True)
class _Code:
    """An authorization code as authlib and its OIDC extension read it."""

    record: AuthCode

    @property
    def code_challenge(self) -> str:
        return self.record.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return "S256"

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope

    def get_nonce(self) -> str | None:
        return self.record.nonce

    def get_auth_time(self) -> int:
        return self.record.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


@dataclass(frozen=True)
class _Issued:
    """A token presented to the revocation or introspection endpoint."""

    kind: str  # access_token | refresh_token
    client_id: str
    subject: str
    scope: str
    expires_at: int
    issued_at: int
    revoked: bool
    grant_id: str
    jti: str | None = None
    audience: str | None = None
    owner_kind: str = "user"

    def check_client(self, client: ClientMixin) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return self.revoked


def _server(grant: Any) -> PortalAuthorizationServer:
    return cast(PortalAuthorizationServer, grant.server)


def _check_resource(server: PortalAuthorizationServer, request: OAuth2Request, *, within: str | None = None) -> str:
    """The RFC 8707 resource of a request: one of the portal's, inside ``within`` when given."""
    values = request.payload.datalist.get("resource", [])
    if len(values) > 1:
        raise InvalidTargetError("Only one 'resource' is supported per request")
    resource = values[0].rstrip("/") if values else (within or server.default_resource)  # ".../mcp/" is ".../mcp"
    if resource not in server.resources or (within is not None and not covers(within, resource)):
        raise InvalidTargetError(f"Tokens are only issued for {', '.join(server.resources)}; not {resource!r}")
    return resource


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        server = _server(self)
        try:
            _check_resource(server, self.request)
        except InvalidTargetError as error:
            error.redirect_uri = redirect_uri
            raise
        user = self.request.user
        if isinstance(user, Owner) and server.admin_group not in user.groups:
            # The admin scope is only for admins, whatever the client asks for.
            narrowed = parse_scope(self.request.scope) - {"admin"}
            if not narrowed:
                raise InvalidScopeError("Only administrators can grant the 'admin' scope", redirect_uri=redirect_uri)
            self.request.scope = format_scope(narrowed)
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        server = _server(self)
        data = request.payload.data
        user = cast(Owner, request.user)
        record = AuthCode(
            code_hash="",
            client_id=cast(Client, request.client).client_id,
            subject=user.subject,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope or "",
            resource=_check_resource(server, request),
            code_challenge=data["code_challenge"],
            nonce=data.get("nonce"),
            auth_time=user.auth_time,
            expires_at=utcnow() + timedelta(seconds=CODE_TTL),
        )
        server.ledger.save_code(code, record)

    def query_authorization_code(self, code: str, client: Client) -> _Code | None:
        record = _server(self).ledger.find_code(code, client.client_id)
        return _Code(record) if record is not None else None

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        """Nothing to do: :meth:`authenticate_user` marked the code used, atomically."""

    def authenticate_user(self, authorization_code: _Code) -> Owner | None:
        server = _server(self)
        record = authorization_code.record
        _check_resource(server, self.request, within=record.resource)
        user = server.users.get(record.subject)
        if user is None or user.disabled:
            return None
        grant_id = new_id()
        if not server.ledger.use_code(record.code_hash, grant_id):
            return None  # another request used it first
        client = cast(Client, self.request.client)
        server.ledger.save_grant(
            GrantRecord(
                id=grant_id,
                client_id=client.client_id,
                subject=user.name,
                kind="user",
                groups=sorted(user.groups),
                scope=record.scope,
                resource=record.resource,
                label=f"oauth: {client.name}",
                expires_at=utcnow() + timedelta(seconds=server.refresh_ttl),
            )
        )
        return Owner(user.name, "user", grant_id, record.resource, user.groups, record.auth_time, new_grant=True)


class _RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> _Issued | None:
        outcome = _server(self).ledger.claim_refresh(refresh_token)
        grant = outcome.grant
        if grant is None:
            return None
        expires = int(grant.expires_at.timestamp())
        return _Issued("refresh_token", grant.client_id, grant.subject, grant.scope, expires, 0, False, grant.id)

    def authenticate_user(self, refresh_token: _Issued) -> Owner | None:
        server = _server(self)
        grant = server.ledger.grant(refresh_token.grant_id)
        if grant is None:
            return None
        resource = _check_resource(server, self.request, within=grant.resource)
        if grant.kind == "user":
            user = server.users.get(grant.subject)
            if user is None or user.disabled:
                server.ledger.revoke_grant(grant.id, "the user is disabled")
                return None
            return Owner(user.name, "user", grant.id, resource, user.groups)
        return Owner(grant.subject, "service", grant.id, resource, frozenset(grant.groups))

    def revoke_old_credential(self, refresh_token: _Issued) -> None:
        """Nothing to do: :meth:`authenticate_refresh_token` used the token up, atomically."""


class _ServiceGrant(ClientCredentialsGrant):
    """Client credentials: the client itself is the principal, a ``service`` with the groups the config gives it."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # noqa: RUF012

    def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
        server = _server(self)
        client = cast(Client, self.request.client)
        resource = _check_resource(server, self.request)
        scope = client.get_allowed_scope(self.request.payload.scope)
        if scope is None:
            raise InvalidScopeError()
        scope = format_scope(parse_scope(scope) - frozenset(OIDC_SCOPES))
        grant_id = new_id()
        server.ledger.save_grant(
            GrantRecord(
                id=grant_id,
                client_id=client.client_id,
                subject=client.client_id,
                kind="service",
                groups=sorted(client.groups),
                scope=scope,
                resource=resource,
                label="client_credentials",
                expires_at=utcnow() + timedelta(seconds=server.tokens.access_ttl),
            )
        )
        owner = Owner(client.client_id, "service", grant_id, resource, client.groups, new_grant=True)
        self.request.user = owner
        token = self.generate_token(user=owner, scope=scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _OpenID(OpenIDCode):
    """ID tokens for the ``openid`` scope, signed with the portal's keys."""

    def __init__(self, server: PortalAuthorizationServer) -> None:
        super().__init__(require_nonce=False)
        self.portal = server

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False

    def resolve_client_private_key(self, client: Client) -> Any:
        return self.portal.tokens.keys.signing_key()

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": str(self.portal.tokens.keys.signing_key().kid)}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": self.portal.issuer, "aud": [client.client_id]}

    def generate_user_info(self, user: Owner, scope: str) -> UserInfo:
        info = UserInfo(sub=user.subject)
        if "profile" in parse_scope(scope):
            info.update(preferred_username=user.subject, groups=sorted(user.groups))
        return info


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Issued | None:
        return _server(self).find_issued(token_string)

    def revoke_token(self, token: _Issued, request: OAuth2Request) -> None:
        ledger = _server(self).ledger
        if token.kind == "access_token" and token.jti is not None:
            ledger.revoke_access(token.jti)
        else:  # RFC 7009 2.1: revoking a refresh token revokes its grant's access tokens too
            ledger.revoke_grant(token.grant_id, "revoked by the client")


class _Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]  # noqa: RUF012

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Issued | None:
        return _server(self).find_issued(token_string)

    def check_permission(self, token: _Issued, client: Client, request: OAuth2Request) -> bool:
        return token.client_id == client.client_id

    def introspect_token(self, token: _Issued) -> dict[str, Any]:
        body: dict[str, Any] = {
            "active": True,
            "client_id": token.client_id,
            "sub": token.subject,
            "username": token.subject,
            "scope": token.scope,
            "exp": token.expires_at,
            "iss": _server(self).issuer,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
        }
        if token.issued_at:
            body["iat"] = token.issued_at
        if token.audience:
            body["aud"] = token.audience
        return body


class _Registration(ClientRegistrationEndpoint):
    """Open dynamic registration of public or confidential clients, for the authorization code grant only."""

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration: MCP clients register themselves (turned off by config)

    def get_server_metadata(self) -> dict[str, Any]:
        # Scopes are not checked at registration: clients send their own (Claude sends "claudeai"); only the
        # portal's are kept (save_client) and granted later.
        return {k: v for k, v in _server(self).metadata.items() if k != "scopes_supported"}

    def resolve_public_key(self, request: Any) -> None:
        return None

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        method = request.payload.data.get("token_endpoint_auth_method") or "client_secret_basic"
        info: dict[str, Any] = {"client_id": generate_token(32), "client_id_issued_at": int(time.time())}
        if method != "none":
            info.update(client_secret=generate_token(48), client_secret_expires_at=0)
        return info

    def generate_client_registration_info(self, client: Client, request: Any) -> dict[str, Any]:
        return {"scope": format_scope(client.allowed_scopes)}  # what it registered, less what the portal lacks

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> Client:
        uris = cast(Sequence[str], client_metadata.get("redirect_uris") or [])
        if not uris:
            raise InvalidRedirectURIError("redirect_uris is required")
        if problem := check_redirect_uris(uris):
            raise InvalidRedirectURIError(problem)
        grants = set(client_metadata.get("grant_types") or ["authorization_code"])
        if not grants <= {"authorization_code", "refresh_token"}:
            raise InvalidClientMetadataError("only the authorization_code and refresh_token grants can be registered")
        if set(client_metadata.get("response_types") or ["code"]) != {"code"}:
            raise InvalidClientMetadataError("only the 'code' response type is supported")
        known = parse_scope(client_metadata.get("scope")) & frozenset([*SCOPES, *OIDC_SCOPES])
        if known:
            client_metadata["scope"] = format_scope(known)
        else:
            client_metadata.pop("scope", None)
        method = client_metadata.setdefault("token_endpoint_auth_method", "client_secret_basic")
        client_metadata.setdefault("grant_types", sorted(grants))
        secret = client_info.get("client_secret") if method != "none" else None
        return _server(self).clients.register(client_info["client_id"], secret=secret, metadata=client_metadata)


@dataclass(frozen=True)
class ConsentRequest:
    """A validated authorization request, waiting for the user's decision."""

    grant: Any
    client: Client
    scope: str
    redirect_uri: str


class PortalAuthorizationServer(AuthorizationServer):
    """authlib's authorization server with the portal's grants, endpoints, clients and token ledger.

    Args:
        issuer: The issuer identifier: the portal's public URL, exactly (SECURITY.md A1).
        resources: The resource URLs tokens may be issued for; the first is the default.
        clients: Where clients are found.
        users: The user accounts.
        tokens: Signs access tokens.
        refresh_ttl: Seconds a grant lives without a refresh.
        registration: Whether dynamic client registration is open.
        admin_group: Users in this group may grant the ``admin`` scope.
    """

    def __init__(
        self,
        *,
        issuer: str,
        resources: Sequence[str],
        clients: ClientStore,
        users: UserStore,
        tokens: TokenService,
        refresh_ttl: int,
        registration: bool,
        admin_group: str,
    ) -> None:
        super().__init__(scopes_supported=[*SCOPES, *OIDC_SCOPES])
        self.admin_group = admin_group
        self.issuer = issuer
        self.resources = tuple(resources)
        self.default_resource = self.resources[0]
        self.clients = clients
        self.users = users
        self.tokens = tokens
        self.ledger = tokens.ledger
        self.refresh_ttl = refresh_ttl
        self.metadata: dict[str, Any] = {}
        generator = BearerTokenGenerator(
            access_token_generator=self._access_token,
            refresh_token_generator=lambda **_: generate_token(48),
            expires_generator=lambda client, grant_type: tokens.access_ttl,
        )
        self.register_token_generator("default", generator)
        self.register_grant(_CodeGrant, [_S256Only(required=True), _OpenID(self)])
        self.register_grant(_RefreshGrant)
        self.register_grant(_ServiceGrant)
        self.register_endpoint(_Revocation)
        self.register_endpoint(_Introspection)
        if registration:
            self.register_endpoint(_Registration(self))

    def validate_requested_scope(self, scope: str | None) -> None:
        """Ignore unknown scopes rather than refuse them: RFC 6749 3.3 lets a server grant less than asked.

        Clients ask for ``offline_access`` and the like. The client's allowed scopes decide what is granted,
        and a request left with none of the portal's scopes is ``invalid_scope``.
        """

    def _access_token(self, *, client: Any, grant_type: str, user: Any, scope: str) -> str:
        return self.tokens.sign(user, client_id=client.client_id, scope=scope)

    def query_client(self, client_id: str) -> Client | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        return self.clients.query(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.tokens.record(cast(Owner, request.user), token, refresh_ttl=self.refresh_ttl)

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Reply:
        return Reply(status, body, [(str(k), str(v)) for k, v in (headers or [])])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: the portal records what it needs in the ledger."""

    def find_issued(self, token: str) -> _Issued | None:
        """An access token (by signature and ``jti``) or refresh token this server issued, for RFC 7009/7662."""
        try:
            claims = self.tokens.decode(token)
        except InvalidTokenError:
            found = self.ledger.find_refresh(token)
            if found is None:
                return None
            record, grant = found
            revoked = record.used_at is not None or grant.revoked_at is not None
            expires = int(record.expires_at.timestamp())
            return _Issued("refresh_token", grant.client_id, grant.subject, grant.scope, expires, 0, revoked, grant.id)
        status = self.ledger.access_status(str(claims["jti"]))
        if status is None:
            return None
        record, grant = status
        return _Issued(
            "access_token",
            str(claims.get("client_id")),
            str(claims["sub"]),
            str(claims.get("scope") or ""),
            int(claims["exp"]),
            int(claims.get("iat") or 0),
            record.revoked_at is not None or grant.revoked_at is not None,
            grant.id,
            jti=str(claims["jti"]),
            audience=str(claims.get("aud")),
            owner_kind=grant.kind,
        )

    # -- typed entry points for the routes ------------------------------------------------------------------
    def consent_request(self, request: OAuth2Request, owner: Owner | None) -> ConsentRequest:
        """Validate an authorization request for ``owner`` (None: not logged in yet).

        Raises:
            OAuth2Error: The request is not valid; ``redirect_uri`` is set when the client may hear it.
        """
        grant = self.get_consent_grant(request, end_user=owner)
        return ConsentRequest(grant, grant.client, grant.request.scope or "", grant.redirect_uri or "")

    def authorization_response(self, request: OAuth2Request, consent: ConsentRequest, owner: Owner | None) -> Reply:
        """The redirect carrying a code for ``owner``, or ``access_denied`` when None."""
        return self.create_authorization_response(request, grant_user=owner, grant=consent.grant)

    def error_reply(self, request: OAuth2Request, error: OAuth2Error) -> Reply:
        """The response for an error: a redirect to the client's verified redirect URI, or JSON."""
        return self.handle_error_response(request, error)

    def token_reply(self, request: OAuth2Request) -> Reply:
        """The token endpoint's response."""
        return self.create_token_response(request)

    def endpoint_reply(self, name: str, request: Any) -> Reply:
        """The response of the revocation, introspection or registration endpoint."""
        return self.create_endpoint_response(name, request)
