"""OAuth clients: pre-registered in the config, registered dynamically (RFC 7591), or metadata documents.

Redirect URIs match exactly (SECURITY.md A3): the string the client registered, except that the port of
an ``http`` loopback URI may vary (RFC 8252 7.3, native apps listen on a free port).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import anyio.from_thread
from sqlalchemy import Engine
from sqlmodel import Session

from portal.auth._cimd import DocumentFetcher, is_metadata_url, validate_document
from portal.auth._errors import ClientMetadataError
from portal.auth._ledger import aware, digest
from portal.auth._scopes import DEFAULT_SCOPES, OIDC_SCOPES, SCOPES, format_scope, parse_scope
from portal.config import ClientSettings, is_loopback_host
from portal.store import utcnow
from portal.store._auth_tables import ClientRecord

__all__ = ["Client", "ClientStore", "redirect_uri_problem"]

_CIMD_TTL = timedelta(hours=1)
_USER_SCOPES = frozenset(SCOPES) | frozenset(OIDC_SCOPES)


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a redirect URI (HTTPS, or http on loopback; absolute; no fragment), or None."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri!r} is not a URL"
    if not parts.hostname or parts.fragment:
        return f"{uri!r} must be absolute and have no fragment"
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return None
    return f"{uri!r} must use https (http only on a loopback host)"


def _same_redirect(registered: str, presented: str) -> bool:
    if registered == presented:
        return True
    a, b = urlsplit(registered), urlsplit(presented)
    if a.scheme != "http" or not a.hostname or not is_loopback_host(a.hostname):
        return False
    return (a.scheme, a.hostname, a.path, a.query, a.username) == (b.scheme, b.hostname, b.path, b.query, b.username)


@dataclass(frozen=True)
class Client:
    """A client as authlib sees it (``authlib.oauth2.rfc6749.ClientMixin``)."""

    client_id: str
    name: str
    kind: str  # config | registered | cimd
    redirect_uris: tuple[str, ...] = ()
    grant_types: frozenset[str] = frozenset({"authorization_code", "refresh_token"})
    auth_method: str = "none"
    secret_hash: str | None = None
    allowed_scopes: frozenset[str] = _USER_SCOPES
    groups: frozenset[str] = field(default_factory=frozenset[str])

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Never guessed: the request must name its redirect URI (OAuth 2.1).
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        if not scope:
            defaults = parse_scope(" ".join(DEFAULT_SCOPES)) & self.allowed_scopes
            return format_scope(defaults or self.allowed_scopes)
        allowed = parse_scope(scope) & self.allowed_scopes
        return format_scope(allowed) if allowed else None  # None: invalid_scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(_same_redirect(r, redirect_uri) for r in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret_hash is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def redirect_host(self) -> str:
        """The host the consent page names: where the user's grant will go."""
        hosts = sorted({urlsplit(u).hostname or u for u in self.redirect_uris})
        return ", ".join(hosts)


def client_from_settings(client_id: str, settings: ClientSettings) -> Client:
    """A pre-registered client from its ``[auth.clients.ID]`` table."""
    return Client(
        client_id=client_id,
        name=settings.name or client_id,
        kind="config",
        redirect_uris=tuple(settings.redirect_uris),
        grant_types=frozenset(settings.grant_types),
        auth_method="client_secret_basic" if settings.secret else "none",
        secret_hash=digest(settings.secret) if settings.secret else None,
        allowed_scopes=frozenset(settings.scopes) | frozenset(OIDC_SCOPES),
        groups=frozenset(settings.groups),
    )


def _from_record(record: ClientRecord) -> Client:
    meta = record.metadata_
    scope = meta.get("scope")
    allowed = parse_scope(scope) & _USER_SCOPES if isinstance(scope, str) and scope else _USER_SCOPES
    return Client(
        client_id=record.client_id,
        name=record.name or record.client_id,
        kind=record.kind,
        redirect_uris=tuple(cast(list[str], meta.get("redirect_uris") or [])),
        grant_types=frozenset(cast(list[str], meta.get("grant_types") or ["authorization_code"])),
        auth_method=str(meta.get("token_endpoint_auth_method") or "none"),
        secret_hash=record.secret_hash,
        allowed_scopes=allowed or _USER_SCOPES,
    )


class ClientStore:
    """Finds clients: the config's first, then the database, then (for URL client ids) the metadata document.

    Args:
        engine: The portal's database.
        configured: Pre-registered clients by client id.
        fetcher: Fetches a Client ID Metadata Document; None turns the feature off.
        insecure_hosts: Hosts whose documents may be fetched over plain http (development and tests).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        configured: Mapping[str, ClientSettings],
        fetcher: DocumentFetcher | None,
        insecure_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.configured = {cid: client_from_settings(cid, s) for cid, s in configured.items()}
        self.fetcher = fetcher
        self.insecure_hosts = insecure_hosts

    def query(self, client_id: str) -> Client | None:
        """The client with ``client_id``, or None. Runs in a worker thread (it may fetch a document)."""
        if found := self.configured.get(client_id):
            return found
        with Session(self.engine, expire_on_commit=False) as session:
            record = session.get(ClientRecord, client_id)
        if record is not None and (record.expires_at is None or aware(record.expires_at) > utcnow()):
            return _from_record(record)
        if self.fetcher is None or not is_metadata_url(client_id, insecure_hosts=self.insecure_hosts):
            return None
        try:
            return self._fetch_document(client_id)
        except ClientMetadataError:
            return None

    def _fetch_document(self, url: str) -> Client:
        assert self.fetcher is not None
        fetcher = self.fetcher

        async def fetch() -> Mapping[str, object]:
            return await fetcher(url)

        document = anyio.from_thread.run(fetch)
        metadata = validate_document(url, document)
        record = ClientRecord(
            client_id=url,
            name=str(metadata["client_name"]),
            kind="cimd",
            metadata_=metadata,
            expires_at=utcnow() + _CIMD_TTL,
        )
        with Session(self.engine, expire_on_commit=False) as session:
            session.merge(record)
            session.commit()
        return _from_record(record)

    def register(self, client_id: str, *, secret: str | None, metadata: Mapping[str, Any]) -> Client:
        """Store a dynamically registered client (RFC 7591)."""
        name = metadata.get("client_name")
        record = ClientRecord(
            client_id=client_id,
            name=name if isinstance(name, str) else "",
            kind="registered",
            secret_hash=digest(secret) if secret else None,
            metadata_=dict(metadata),
        )
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(record)
            session.commit()
        return _from_record(record)


def check_redirect_uris(uris: Sequence[str]) -> str | None:
    """The first problem with a list of redirect URIs, or None."""
    for uri in uris:
        if problem := redirect_uri_problem(uri):
            return problem
    return None
