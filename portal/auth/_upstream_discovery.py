"""Discovery of an upstream's OAuth authorization server (SECURITY.md U1).

RFC 9728 protected-resource metadata (from the upstream's 401, else the path-inserted and root well-known
URIs), then RFC 8414 or OpenID Connect metadata of the authorization server it names, every document
fetched with the SSRF-safe fetcher. Metadata whose ``resource`` or ``issuer`` is not what was asked for, or
that lacks PKCE S256, is refused; issuers are compared as the strings the documents carry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
    issuers_match,
    union_scopes,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import ValidationError

from portal.auth._fetch import BlockedURLError, FetchError, FetchPolicy, fetch_json
from portal.errors import DockyardError

__all__ = ["AuthServerInfo", "DiscoveryError", "UpstreamAuthError", "discover_auth_server"]

logger = logging.getLogger("dockyard.upstream_oauth")


class UpstreamAuthError(DockyardError):
    """Base of the errors of the portal's OAuth client."""


class DiscoveryError(UpstreamAuthError):
    """The upstream's OAuth metadata is missing, unreachable, unsafe to fetch, or inconsistent."""


@dataclass(frozen=True, slots=True)
class AuthServerInfo:
    """What discovery found for one upstream."""

    resource: str
    """The RFC 8707 resource indicator sent on every request."""
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    scopes: str | None
    iss_parameter_supported: bool
    cimd_supported: bool = False
    """Whether the server accepts a Client ID Metadata Document URL as client id."""


def _raw(document: Mapping[str, object], key: str) -> str | None:
    """A string field (or the first string of a list field) of a JSON document, as it was sent."""
    value = document.get(key)
    if isinstance(value, list) and value:
        value = cast(list[object], value)[0]
    return value if isinstance(value, str) else None


async def _probe(url: str, policy: FetchPolicy) -> tuple[str | None, str | None]:
    """``resource_metadata`` and ``scope`` of the upstream's 401 to an unauthenticated request (RFC 9728 §5.1).

    The URL is the configured one, which the portal connects to anyway; the metadata URL the answer names
    is only ever fetched through the SSRF-safe fetcher.
    """
    initialize = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "dockyard-portal", "version": "0.1.0"},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    try:
        async with httpx2.AsyncClient(trust_env=False, timeout=policy.timeout) as http:
            # Some servers let initialize through and guard everything else: ask twice if need be.
            for method, params in (("initialize", initialize), ("tools/list", {})):
                body = {"jsonrpc": "2.0", "id": 0, "method": method, "params": params}
                response = await http.post(url, json=body, headers=headers)
                if response.status_code in (401, 403):
                    return (
                        extract_field_from_www_auth(response, "resource_metadata"),
                        extract_field_from_www_auth(response, "scope"),
                    )
    except httpx2.HTTPError as error:
        logger.debug("probing %s for its authorization metadata failed: %s", url, error)
    return None, None


async def discover_auth_server(
    server: str, url: str, *, policy: FetchPolicy, scopes: list[str] | None = None, hint: str | None = None
) -> AuthServerInfo:
    """Find and check the authorization server of the upstream ``server`` at ``url`` (U1).

    Raises:
        DiscoveryError: No usable metadata, a metadata URL that is not safe to fetch, a resource or
            issuer that does not match, or no PKCE S256.
    """
    expected_resource = resource_url_from_server_url(url)
    challenge_scope: str | None = None
    if hint is None:
        hint, challenge_scope = await _probe(url, policy)
    prm: ProtectedResourceMetadata | None = None
    prm_document: dict[str, object] = {}
    for candidate in build_protected_resource_metadata_discovery_urls(hint, url):
        document = await _fetch_optional(policy, candidate, what="protected resource metadata")
        if document is None:
            continue
        try:
            prm = ProtectedResourceMetadata.model_validate(document)
        except ValidationError:
            continue
        prm_document = document
        break
    if prm is not None:
        if not check_resource_allowed(expected_resource, str(prm.resource)):
            raise DiscoveryError(
                f"server {server!r}: its protected resource metadata names resource {str(prm.resource)!r}, "
                f"not {expected_resource!r} (RFC 9728 section 3.3); refusing it"
            )
        # The raw strings: an issuer is compared as a simple string (RFC 8414 section 3.3), not as a URL.
        issuer: str | None = _raw(prm_document, "authorization_servers") or str(prm.authorization_servers[0])
        resource = _raw(prm_document, "resource") or str(prm.resource)
    else:
        issuer, resource = None, expected_resource
    parts = urlsplit(url)
    expected_issuer = issuer or f"{parts.scheme}://{parts.netloc}"
    metadata, raw_issuer = await _as_metadata(server, issuer, url, policy)
    if not issuers_match(raw_issuer, expected_issuer):
        raise DiscoveryError(
            f"server {server!r}: the authorization server metadata says issuer {raw_issuer!r}, "
            f"but it was discovered for {expected_issuer!r} (RFC 8414 section 3.3); refusing it"
        )
    if "S256" not in (metadata.code_challenge_methods_supported or []):
        raise DiscoveryError(
            f"server {server!r}: its authorization server {expected_issuer!r} does not advertise PKCE S256 "
            "(code_challenge_methods_supported); the portal only uses S256"
        )
    chosen = " ".join(scopes) if scopes else challenge_scope
    if chosen is None and prm is not None and prm.scopes_supported:
        chosen = " ".join(prm.scopes_supported)
    if chosen is not None and "offline_access" in (metadata.scopes_supported or []):
        chosen = union_scopes(chosen, "offline_access")  # ask for a refresh token where that is how
    return AuthServerInfo(
        resource=resource,
        issuer=raw_issuer,
        authorization_endpoint=str(metadata.authorization_endpoint),
        token_endpoint=str(metadata.token_endpoint),
        registration_endpoint=str(metadata.registration_endpoint) if metadata.registration_endpoint else None,
        scopes=chosen,
        iss_parameter_supported=bool(metadata.authorization_response_iss_parameter_supported),
        cimd_supported=metadata.client_id_metadata_document_supported is True,
    )


async def _as_metadata(server: str, issuer: str | None, url: str, policy: FetchPolicy) -> tuple[OAuthMetadata, str]:
    """The authorization server's metadata and its ``issuer`` exactly as the document spells it."""
    for candidate in build_oauth_authorization_server_metadata_discovery_urls(issuer, url):
        document = await _fetch_optional(policy, candidate, what="authorization server metadata")
        if document is None:
            continue
        try:
            metadata = OAuthMetadata.model_validate(document)
        except ValidationError as error:
            raise DiscoveryError(
                f"server {server!r}: invalid authorization server metadata at {candidate!r}: {error.errors()[0]['msg']}"
            ) from None
        return metadata, _raw(document, "issuer") or str(metadata.issuer)
    if issuer is None:
        # 2025-03-26 servers without any metadata: the default endpoints at the server's origin, which that
        # revision required to support PKCE.
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        logger.info("server %s publishes no OAuth metadata; using the default endpoints at %s", server, origin)
        fallback = OAuthMetadata.model_validate(
            {
                "issuer": origin,
                "authorization_endpoint": f"{origin}/authorize",
                "token_endpoint": f"{origin}/token",
                "registration_endpoint": f"{origin}/register",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
            }
        )
        return fallback, origin
    raise DiscoveryError(
        f"server {server!r}: no authorization server metadata found for {issuer or url!r} "
        "(tried RFC 8414 and OpenID Connect discovery)"
    )


async def _fetch_optional(policy: FetchPolicy, url: str, *, what: str) -> dict[str, object] | None:
    try:
        return await fetch_json(url, policy=policy)
    except BlockedURLError as error:
        raise DiscoveryError(f"refusing to fetch {what} from {url!r}: {error}") from None
    except FetchError as error:
        logger.debug("no %s at %s: %s", what, url, error)
        return None
