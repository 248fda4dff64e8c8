"""The portal as OAuth client of upstream servers that require it (SECURITY.md U1, U2, R4).

For a ``[servers.X] url = ... auth = "oauth"`` upstream the portal:

- discovers the upstream's authorization server through RFC 9728 protected-resource metadata and
  RFC 8414 (or OIDC) metadata, every document fetched with the SSRF-safe fetcher, and refuses metadata
  whose ``issuer`` is not the authorization server it was asked about, or that lacks PKCE S256 (U1);
- registers itself (RFC 7591), or uses ``oauth_client_id``/``oauth_client_secret`` from the config;
- sends each user to a consent link, ``/oauth/upstream/X/start?t=...`` (a sealed, expiring token naming
  the server and the user), which redirects to the upstream's authorization endpoint with PKCE S256 and
  ``resource``; ``/oauth/upstream/callback`` checks ``state`` (single-use, expiring, kept server-side with
  the PKCE verifier and the user it belongs to) and ``iss`` (RFC 9207), and exchanges the code (U2);
- keeps each user's grant in the encrypted vault and refreshes it before it expires, always with
  ``resource``; a grant the upstream refuses is marked dead, logged for the admin, shown by
  ``dockyard servers``, and reported to its user with a new link, never silently retried (U2).

The shared session that lists the upstream's tools uses the grant of :data:`CATALOG_SUBJECT`, which an
admin obtains with ``dockyard servers authorize X``; every call uses the caller's own grant, and the
caller's own portal token never leaves the portal (R4).

Errors::

    UpstreamAuthError        (portal.errors.DockyardError; defined in _upstream_discovery with DiscoveryError)
    ├── DiscoveryError       the upstream's OAuth metadata is missing, unreachable, unsafe or inconsistent
    └── AuthorizationError   a consent round failed (unknown or expired state, iss mismatch, code refused)

:class:`portal.errors.GrantRequiredError` is raised when a user has no usable grant.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict, cast
from urllib.parse import quote, urlencode, urlsplit

import anyio
import anyio.to_thread
import httpx2
from mcp.client.auth.utils import (
    extract_field_from_www_auth,
    union_scopes,
)
from mcp.shared.auth import OAuthToken
from pydantic import ValidationError

from portal.auth._fetch import FetchError, FetchPolicy, post_form, post_json
from portal.auth._upstream_discovery import AuthServerInfo, DiscoveryError, UpstreamAuthError, discover_auth_server
from portal.auth._vault import SecretRef, Vault, VaultError
from portal.config import ServerSettings
from portal.errors import ExpiredStateError, GrantRequiredError, TamperedStateError
from portal.sealing import Sealer

__all__ = [
    "CALLBACK_PATH",
    "CATALOG_SUBJECT",
    "AuthServerInfo",
    "AuthorizationError",
    "DiscoveryError",
    "UpstreamAuthError",
    "UpstreamOAuth",
    "consent_link",
]

logger = logging.getLogger("dockyard.upstream_oauth")

CATALOG_SUBJECT = "portal:catalog"
"""Whose grant the shared session (tool listing) of an OAuth upstream uses: the admin's."""
CALLBACK_PATH = "/oauth/upstream/callback"
"""The portal's redirect URI path at every upstream authorization server."""
START_PATH = "/oauth/upstream/{server}/start"
CLIENT_METADATA_PATH = "/oauth/upstream/client-metadata.json"
_LINK_TTL = 15 * 60
_PENDING_TTL = 10 * 60
_GRANT = "oauth-grant"
_CLIENT = "oauth-client"
_PENDING = "oauth-pending"


class AuthorizationError(UpstreamAuthError):
    """A consent round failed: unknown or expired state, ``iss`` mismatch, or the code was refused."""


class _Client(TypedDict):
    client_id: str
    client_secret: str | None
    auth_method: str
    issuer: str
    redirect_uri: str


class _Pending(TypedDict):
    server: str
    subject: str
    verifier: str
    issuer: str
    iss_supported: bool
    expires: float


class _Grant(TypedDict):
    access_token: str
    refresh_token: str | None
    expires_at: float | None
    scope: str | None
    issuer: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def consent_link(public_url: str, sealer: Sealer, server: str, subject: str) -> str:
    """The URL where ``subject`` grants the portal at ``public_url`` access to ``server`` (15 minutes)."""
    token = sealer.seal({"k": "upstream-grant", "s": server, "u": subject}, ttl=_LINK_TTL)
    return public_url.rstrip("/") + START_PATH.format(server=server) + "?" + urlencode({"t": token})


class UpstreamOAuth:
    """Discovery, consent, tokens and refresh for every ``auth = "oauth"`` upstream.

    Args:
        vault: Where clients, pending consents and grants are kept, encrypted.
        servers: The configured servers by name.
        public_url: The portal's public URL (its redirect URI is built from it).
        sealer: Seals consent links.
        fetch_policy: Limits of every metadata, registration and token request.
        clock: Seconds since the epoch.
        refresh_margin: Seconds before expiry at which a token is refreshed.
        client_metadata_url: Where the portal's client metadata document is served (default: its own route,
            when the public URL is HTTPS, as Client ID Metadata Documents require).
    """

    def __init__(
        self,
        vault: Vault,
        servers: Mapping[str, ServerSettings],
        *,
        public_url: str,
        sealer: Sealer,
        fetch_policy: FetchPolicy,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 60.0,
        client_metadata_url: str | None = None,
    ) -> None:
        self.vault = vault
        self.servers = {name: s for name, s in servers.items() if s.auth == "oauth" and s.url is not None}
        self._undeclared = {name: s for name, s in servers.items() if s.auth == "none" and s.url is not None}
        """``url`` servers not declared ``auth = "oauth"``: one that answers 401 naming its resource metadata
        is treated as if it were (see :meth:`detected`)."""
        self._hints: dict[str, str] = {}
        self._warned: set[str] = set()
        self.public_url = public_url.rstrip("/")
        self._sealer = sealer
        self._policy = fetch_policy
        self._clock = clock
        self._margin = refresh_margin
        https = self.public_url.startswith("https://")
        self.client_metadata_url = client_metadata_url or (self.public_url + CLIENT_METADATA_PATH if https else None)
        """The portal's Client ID Metadata Document, used as client id where an upstream accepts one."""
        self._discovered: dict[str, AuthServerInfo] = {}
        self._challenged: dict[str, str] = {}
        """Scopes an upstream asked for in a 403 ``insufficient_scope`` (step-up), by server."""
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._discovery_lock = anyio.Lock()

    @property
    def callback_url(self) -> str:
        """The redirect URI the portal registers at every upstream authorization server."""
        return self.public_url + CALLBACK_PATH

    def uses_oauth(self, server: str) -> bool:
        """Whether ``server`` is an ``auth = "oauth"`` upstream."""
        return server in self.servers

    # ----------------------------------------------------------------- discovery (U1)

    async def discover(self, server: str, *, resource_metadata: str | None = None) -> AuthServerInfo:
        """Find and check the authorization server of ``server`` (cached once found).

        Raises:
            DiscoveryError: No usable metadata, a metadata URL that is not safe to fetch, a resource or
                issuer that does not match, or no PKCE S256.
        """
        async with self._discovery_lock:
            if server in self._discovered:
                return self._discovered[server]
            info = await discover_auth_server(
                server,
                self._url(server),
                policy=self._policy,
                scopes=self.servers[server].oauth_scopes,
                hint=resource_metadata or self._hints.get(server),
            )
            self._discovered[server] = info
            return info

    def _url(self, server: str) -> str:
        settings = self.servers.get(server)
        if settings is None or settings.url is None:
            raise DiscoveryError(f'server {server!r} is not an upstream with auth = "oauth"')
        return settings.url

    # ----------------------------------------------------------------- client registration

    async def _client(self, server: str, info: AuthServerInfo) -> _Client:
        settings = self.servers[server]
        if settings.oauth_client_id:
            secret = settings.oauth_client_secret
            method = "client_secret_basic" if secret else "none"
            return _Client(
                client_id=settings.oauth_client_id,
                client_secret=secret,
                auth_method=method,
                issuer=info.issuer,
                redirect_uri=self.callback_url,
            )
        if info.cimd_supported and self.client_metadata_url is not None:
            return _Client(
                client_id=self.client_metadata_url,
                client_secret=None,
                auth_method="none",
                issuer=info.issuer,
                redirect_uri=self.callback_url,
            )
        ref = SecretRef(_CLIENT, server, info.issuer)
        stored = await anyio.to_thread.run_sync(self.vault.get, ref)
        if stored is not None:
            client = cast(_Client, json.loads(stored.value))
            if client["redirect_uri"] == self.callback_url:
                return client
        if info.registration_endpoint is None:
            raise DiscoveryError(
                f"server {server!r}: its authorization server {info.issuer!r} offers no dynamic registration; "
                f"register the portal there (redirect URI {self.callback_url}) and set oauth_client_id"
            )
        body: dict[str, object] = {
            "client_name": "Dockyard portal",
            "redirect_uris": [self.callback_url],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
            "application_type": "web",  # the portal is a server; its redirect URI is on its public URL
        }
        if info.scopes:
            body["scope"] = info.scopes
        try:
            answer = await post_json(info.registration_endpoint, body, policy=self._policy)
        except FetchError as error:
            raise DiscoveryError(f"server {server!r}: registration at {info.issuer!r} failed: {error}") from None
        client_id = answer.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            raise DiscoveryError(f"server {server!r}: the registration response of {info.issuer!r} has no client_id")
        client_secret = answer.get("client_secret")
        method = answer.get("token_endpoint_auth_method")
        secret = client_secret if isinstance(client_secret, str) else None
        client = _Client(
            client_id=client_id,
            client_secret=secret,
            auth_method=method if isinstance(method, str) else ("client_secret_post" if secret else "none"),
            issuer=info.issuer,
            redirect_uri=self.callback_url,
        )
        await anyio.to_thread.run_sync(self.vault.put, ref, json.dumps(client))
        logger.info("registered the portal at %s for server %s (client %s)", info.issuer, server, client_id)
        return client

    def client_metadata(self) -> dict[str, object]:
        """The portal's Client ID Metadata Document (served at :attr:`client_metadata_url`)."""
        return {
            "client_id": self.client_metadata_url,
            "client_name": "Dockyard portal",
            "redirect_uris": [self.callback_url],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "web",
        }

    def _client_auth(self, client: _Client, form: dict[str, str]) -> dict[str, str]:
        """Add client authentication to a token request's form; returns the headers it needs."""
        if client["auth_method"] == "client_secret_basic" and client["client_secret"]:
            pair = f"{quote(client['client_id'], safe='')}:{quote(client['client_secret'], safe='')}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        form["client_id"] = client["client_id"]
        if client["auth_method"] == "client_secret_post" and client["client_secret"]:
            form["client_secret"] = client["client_secret"]
        return {}

    # ----------------------------------------------------------------- consent (U2)

    def consent_link(self, server: str, subject: str) -> str:
        """The URL where ``subject`` grants the portal access to ``server`` (valid for 15 minutes)."""
        return consent_link(self.public_url, self._sealer, server, subject)

    def link_subject(self, server: str, token: str) -> str:
        """Whose grant a consent link's token asks for.

        Raises:
            AuthorizationError: The token is not valid, has expired, or names another server.
        """
        try:
            claims = self._sealer.open(token)
        except ExpiredStateError:
            raise AuthorizationError("this consent link has expired; call the tool again for a new one") from None
        except TamperedStateError:
            raise AuthorizationError("this consent link was not issued by this portal") from None
        subject = claims.get("u")
        if claims.get("k") != "upstream-grant" or claims.get("s") != server or not isinstance(subject, str):
            raise AuthorizationError("this consent link is not for this server")
        return subject

    async def begin(self, server: str, token: str) -> str:
        """Open a consent round from a consent link; returns the upstream authorization URL to redirect to.

        Raises:
            AuthorizationError: The link is not valid, has expired, or names another server.
            DiscoveryError: The upstream's authorization server cannot be used.
        """
        subject = self.link_subject(server, token)
        info = await self.discover(server)
        client = await self._client(server, info)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        pending = _Pending(
            server=server,
            subject=subject,
            verifier=verifier,
            issuer=info.issuer,
            iss_supported=info.iss_parameter_supported,
            expires=self._clock() + _PENDING_TTL,
        )
        ref = SecretRef(_PENDING, "", _digest(state))
        await anyio.to_thread.run_sync(self.vault.purge_expired, _PENDING)
        await anyio.to_thread.run_sync(
            lambda: self.vault.put(ref, json.dumps(pending), expires_at=_utc(pending["expires"]))
        )
        query = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": self.callback_url,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": info.resource,
        }
        scope = union_scopes(info.scopes, self._challenged.get(server))
        if scope:
            query["scope"] = scope
        separator = "&" if urlsplit(info.authorization_endpoint).query else "?"
        return info.authorization_endpoint + separator + urlencode(query)

    async def complete(self, *, state: str, code: str | None, iss: str | None, error: str | None) -> tuple[str, str]:
        """Finish a consent round at the callback; returns (server, subject) whose grant is now stored.

        Raises:
            AuthorizationError: Unknown, used or expired state; ``iss`` mismatch; the upstream refused.
        """
        pending_secret = await anyio.to_thread.run_sync(self.vault.take, SecretRef(_PENDING, "", _digest(state)))
        if pending_secret is None:
            raise AuthorizationError("unknown or already used consent state; start again from the tool")
        pending = cast(_Pending, json.loads(pending_secret.value))
        server, subject = pending["server"], pending["subject"]
        if self._clock() >= pending["expires"]:
            raise AuthorizationError("this consent round has expired; start again from the tool")
        if iss is not None and iss != pending["issuer"]:  # RFC 9207: simple string comparison, no normalization
            raise AuthorizationError(f"the authorization response came from {iss!r}, not {pending['issuer']!r}")
        if iss is None and pending["iss_supported"]:
            raise AuthorizationError("the authorization response lacks the iss its server advertises (RFC 9207)")
        if error is not None or not code:
            raise AuthorizationError(f"the upstream authorization server answered {error or 'no code'!r}")
        info = await self.discover(server)
        client = await self._client(server, info)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.callback_url,
            "code_verifier": pending["verifier"],
            "resource": info.resource,
        }
        headers = self._client_auth(client, form)
        try:
            answer = await post_form(info.token_endpoint, form, policy=self._policy, headers=headers)
        except FetchError as failure:
            raise AuthorizationError(f"the upstream refused the authorization code: {failure}") from None
        await self._store(server, subject, self._grant(answer, info, previous=None))
        logger.info("stored the OAuth grant of %s for server %s", subject, server)
        return server, subject

    # ----------------------------------------------------------------- tokens

    def _grant(self, answer: Mapping[str, object], info: AuthServerInfo, *, previous: _Grant | None) -> _Grant:
        try:
            token = OAuthToken.model_validate(answer)
        except ValidationError as error:
            raise AuthorizationError(f"invalid token response: {error.errors()[0]['msg']}") from None
        expires = self._clock() + token.expires_in if token.expires_in is not None else None
        refresh = token.refresh_token or (previous["refresh_token"] if previous else None)
        return _Grant(
            access_token=token.access_token,
            refresh_token=refresh,
            expires_at=expires,
            scope=token.scope or (previous["scope"] if previous else None),
            issuer=info.issuer,
        )

    async def _store(self, server: str, subject: str, grant: _Grant) -> None:
        ref = SecretRef(_GRANT, server, "grant", subject)
        await anyio.to_thread.run_sync(
            lambda: self.vault.put(ref, json.dumps(grant), expires_at=_utc(grant["expires_at"]))
        )

    def _lock(self, server: str, subject: str) -> anyio.Lock:
        return self._locks.setdefault((server, subject), anyio.Lock())

    async def access_token(self, server: str, subject: str, *, force_refresh: bool = False) -> str:
        """``subject``'s access token for ``server``, refreshed first when it expires within the margin.

        Raises:
            GrantRequiredError: No grant, or a dead one (now marked and logged).
            UpstreamAuthError: The refresh failed for a reason that may pass (network); the grant is kept.
        """
        async with self._lock(server, subject):
            ref = SecretRef(_GRANT, server, "grant", subject)
            try:
                stored = await anyio.to_thread.run_sync(self.vault.get, ref)
            except VaultError as error:
                raise self._required(server, subject, f"its stored grant is unusable ({error})", dead=True) from None
            if stored is None:
                raise self._required(server, subject, "no grant yet")
            if stored.status == "dead":
                raise self._required(server, subject, f"the grant is dead ({stored.detail})", dead=True)
            if stored.status == "step-up":
                raise self._required(server, subject, stored.detail or "more access is needed")
            grant = cast(_Grant, json.loads(stored.value))
            expires = grant["expires_at"]
            fresh = expires is None or expires - self._clock() > self._margin
            if fresh and not force_refresh:
                return grant["access_token"]
            if not grant["refresh_token"]:
                if expires is not None and expires > self._clock() and not force_refresh:
                    return grant["access_token"]
                raise await self._kill(server, subject, "the access token expired and there is no refresh token")
            return await self._refresh(server, subject, grant)

    async def _refresh(self, server: str, subject: str, grant: _Grant) -> str:
        info = await self.discover(server)
        client = await self._client(server, info)
        assert grant["refresh_token"] is not None
        form = {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"], "resource": info.resource}
        headers = self._client_auth(client, form)
        try:
            answer = await post_form(info.token_endpoint, form, policy=self._policy, headers=headers)
        except FetchError as error:
            if error.oauth_error is None and error.status not in (400, 401, 403):
                raise UpstreamAuthError(f"cannot refresh the grant for {server!r}: {error}") from None
            if (rotated := await self._rotated_elsewhere(server, subject, grant)) is not None:
                return rotated
            raise await self._kill(server, subject, f"refresh refused: {error.oauth_error or error.status}") from None
        try:
            refreshed = self._grant(answer, info, previous=grant)
        except AuthorizationError as error:
            raise await self._kill(server, subject, str(error)) from None
        await self._store(server, subject, refreshed)
        logger.info("refreshed the OAuth grant of %s for server %s", subject, server)
        return refreshed["access_token"]

    async def _rotated_elsewhere(self, server: str, subject: str, grant: _Grant) -> str | None:
        """The access token another portal process got by refreshing the same grant first, if it did.

        Portals sharing one database refresh independently; with rotating refresh tokens the slower one is
        refused, and must use what the faster one stored rather than declare the grant dead.
        """
        ref = SecretRef(_GRANT, server, "grant", subject)
        stored = await anyio.to_thread.run_sync(self.vault.get, ref)
        if stored is None or stored.status != "ok":
            return None
        current = cast(_Grant, json.loads(stored.value))
        if current["refresh_token"] == grant["refresh_token"]:
            return None
        logger.info("the OAuth grant of %s for server %s was refreshed by another portal process", subject, server)
        return current["access_token"]

    async def _kill(self, server: str, subject: str, reason: str) -> GrantRequiredError:
        """Mark a grant dead, tell the admin (log, ``dockyard servers``); returns the error for its user."""
        ref = SecretRef(_GRANT, server, "grant", subject)
        await anyio.to_thread.run_sync(lambda: self.vault.mark(ref, status="dead", detail=reason))
        self._discovered.pop(server, None)  # the next consent discovers again: the upstream may have moved
        logger.warning("the OAuth grant of %s for upstream %s is dead: %s", subject, server, reason)
        return self._required(server, subject, f"the grant is dead ({reason})", dead=True)

    async def step_up(self, server: str, subject: str, scope: str) -> None:
        """Record a step-up: the upstream answered 403 ``insufficient_scope`` asking for ``scope``.

        The user must consent again; the new round asks for what was asked so far plus ``scope``.
        """
        self._challenged[server] = union_scopes(self._challenged.get(server), scope) or scope
        ref = SecretRef(_GRANT, server, "grant", subject)
        detail = f"the upstream asks for more access (scope {scope!r})"
        await anyio.to_thread.run_sync(lambda: self.vault.mark(ref, status="step-up", detail=detail))
        logger.info("upstream %s asks %s for more scope: %s", server, subject, scope)

    async def mark_dead(self, server: str, subject: str, reason: str) -> None:
        """Record that the upstream refused ``subject``'s token even after a refresh."""
        await self._kill(server, subject, reason)

    async def dead_grant(self, server: str, subject: str) -> GrantRequiredError | None:
        """The error to report when ``subject``'s grant for ``server`` is dead; None while it is usable."""
        stored = await anyio.to_thread.run_sync(lambda: self.vault.list(kinds=(_GRANT,), server=server))
        for info in stored:
            if info.ref.subject == subject and info.status == "dead":
                return self._required(server, subject, f"the grant is dead ({info.detail})", dead=True)
            if info.ref.subject == subject and info.status == "step-up":
                return self._required(server, subject, info.detail or "more access is needed")
        return None

    async def forget(self, server: str, subject: str) -> bool:
        """Delete ``subject``'s grant for ``server`` (the user or admin revokes it); whether there was one."""
        ref = SecretRef(_GRANT, server, "grant", subject)
        return await anyio.to_thread.run_sync(self.vault.delete, ref)

    def _required(self, server: str, subject: str, why: str, *, dead: bool = False) -> GrantRequiredError:
        message = f"server {server!r} needs your authorization: {why}"
        return GrantRequiredError(
            message, server=server, subject=subject, link=self.consent_link(server, subject), dead=dead
        )

    def auth(self, server: str, subject: str | None) -> httpx2.Auth | None:
        """The flow that puts ``subject``'s token (None: the catalog grant) on every request to ``server``.

        A ``url`` server not declared ``auth = "oauth"`` gets a flow that only watches for the 401 of a server
        that requires OAuth.
        """
        if server in self.servers:
            return _BearerFlow(self, server, subject or CATALOG_SUBJECT)
        if server in self._undeclared:
            return _Detector(self, server)
        return None

    def detected(self, server: str, resource_metadata: str) -> None:
        """An undeclared server answered 401 naming its resource metadata: from now on it is an OAuth upstream."""
        settings = self._undeclared.pop(server, None)
        if settings is None:
            return
        self.servers[server] = settings.model_copy(update={"auth": "oauth"})
        self._hints[server] = resource_metadata
        logger.warning(
            "upstream %s requires OAuth (its 401 names %s): each user now gets a consent link; run "
            '`dockyard servers authorize %s` so the portal can list its tools, and set auth = "oauth" in the config',
            server,
            resource_metadata,
            server,
        )

    def missing_catalog_grant(self, server: str) -> None:
        """Tell the admin, once, that ``server``'s tools cannot be listed without their grant."""
        if server not in self._warned:
            self._warned.add(server)
            logger.warning(
                "upstream %s requires OAuth and has no catalog grant yet: run `dockyard servers authorize %s` "
                "and open the link it prints, so the portal can list its tools",
                server,
                server,
            )


class _Detector(httpx2.Auth):
    """Passes requests through; a 401 naming resource metadata turns the server into an OAuth upstream."""

    def __init__(self, oauth: UpstreamOAuth, server: str) -> None:
        self._oauth = oauth
        self._server = server

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        response = yield request
        if response.status_code == 401:
            hint = extract_field_from_www_auth(response, "resource_metadata")
            if hint:
                self._oauth.detected(self._server, hint)

    def sync_auth_flow(self, request: httpx2.Request) -> Any:  # pragma: no cover - the portal is async
        raise RuntimeError("the upstream OAuth flow is async only")


class _BearerFlow(httpx2.Auth):
    """Adds the user's upstream token to each request; on a 401, refreshes once, then marks the grant dead."""

    def __init__(self, oauth: UpstreamOAuth, server: str, subject: str) -> None:
        self._oauth = oauth
        self._server = server
        self._subject = subject

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers.pop("Authorization", None)  # only ever the upstream's own token (R4)
        try:
            token: str | None = await self._oauth.access_token(self._server, self._subject)
        except UpstreamAuthError as error:
            logger.info("no usable token of %s for %s: %s", self._subject, self._server, error)
            token = None
        except GrantRequiredError:
            if self._subject == CATALOG_SUBJECT:
                self._oauth.missing_catalog_grant(self._server)
            token = None
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 403 and token is not None:
            if extract_field_from_www_auth(response, "error") == "insufficient_scope":
                scope = extract_field_from_www_auth(response, "scope")
                if scope:
                    await self._oauth.step_up(self._server, self._subject, scope)
            return
        if response.status_code != 401 or token is None:
            return
        try:
            token = await self._oauth.access_token(self._server, self._subject, force_refresh=True)
        except (UpstreamAuthError, GrantRequiredError):
            return
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            await self._oauth.mark_dead(self._server, self._subject, "the upstream refuses the refreshed token")

    def sync_auth_flow(self, request: httpx2.Request) -> Any:  # pragma: no cover - the portal is async
        raise RuntimeError("the upstream OAuth flow is async only")
