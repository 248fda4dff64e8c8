"""Client ID Metadata Documents: a client whose ``client_id`` is an HTTPS URL publishes its metadata there.

The document is fetched with the SSRF-safe fetcher (``portal.auth._fetch``: HTTPS only, no private,
loopback or link-local address, redirects checked hop by hop, size and time limits) and must name
itself: ``client_id`` equals the URL (SECURITY.md A4). Redirect URIs come from the document alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast
from urllib.parse import urlsplit

from portal.auth._errors import ClientMetadataError
from portal.auth._fetch import FetchError, FetchPolicy, fetch_json

__all__ = [
    "POLICY",
    "DocumentFetcher",
    "document_fetcher",
    "fetch_client_document",
    "is_metadata_url",
    "validate_document",
]

DocumentFetcher = Callable[[str], Awaitable[Mapping[str, object]]]
"""``url -> JSON object``: fetches a document whose URL a client chose, refusing what is not safe to reach."""

POLICY = FetchPolicy(timeout=5.0, max_bytes=64 * 1024, max_redirects=0)
"""Limits of a metadata document fetch: 5 s, 64 KiB, no redirects."""


def is_metadata_url(client_id: str, *, insecure_hosts: frozenset[str] = frozenset()) -> bool:
    """Whether ``client_id`` is shaped like a Client ID Metadata Document URL (HTTPS, with a path)."""
    parts = urlsplit(client_id)
    secure = parts.scheme == "https" or (parts.scheme == "http" and (parts.hostname or "") in insecure_hosts)
    return secure and bool(parts.hostname) and parts.path not in ("", "/") and not parts.fragment


def document_fetcher(insecure_hosts: frozenset[str]) -> DocumentFetcher:
    """The SSRF-safe fetcher, exempting the development hosts of ``[portal] insecure_fetch_hosts``."""
    policy = FetchPolicy(
        timeout=POLICY.timeout, max_bytes=POLICY.max_bytes, max_redirects=0, insecure_hosts=insecure_hosts
    )

    async def fetch(url: str) -> Mapping[str, object]:
        return await fetch_client_document(url, policy=policy)

    return fetch


async def fetch_client_document(url: str, *, policy: FetchPolicy = POLICY) -> Mapping[str, object]:
    """Fetch the metadata document at ``url`` (the default :data:`DocumentFetcher`).

    Raises:
        ClientMetadataError: The document could not be fetched safely.
    """
    try:
        return await fetch_json(url, policy=policy)
    except FetchError as error:
        raise ClientMetadataError(f"cannot fetch the client metadata document {url!r}: {error}") from None


def validate_document(url: str, document: Mapping[str, object]) -> dict[str, object]:
    """The client metadata of a fetched document, after checking it names ``url`` and asks for nothing unsafe.

    Raises:
        ClientMetadataError: The document is not a usable client metadata document.
    """
    if document.get("client_id") != url:
        raise ClientMetadataError(f"the document at {url!r} names client_id {document.get('client_id')!r}, not itself")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in cast(list[object], uris)):
        raise ClientMetadataError(f"the document at {url!r} has no 'redirect_uris' list of strings")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ClientMetadataError(
            f"the document at {url!r} asks for token_endpoint_auth_method {method!r}; only 'none' (PKCE) is supported"
        )
    grants = document.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not set(cast(list[object], grants)) <= {"authorization_code", "refresh_token"}:
        raise ClientMetadataError(f"the document at {url!r} asks for grant types {grants!r}")
    name = document.get("client_name")
    return {
        "client_name": name if isinstance(name, str) else urlsplit(url).hostname or url,
        "redirect_uris": list(cast(list[str], uris)),
        "grant_types": list(cast(list[str], grants)),
        "token_endpoint_auth_method": "none",
        **{k: v for k, v in document.items() if k in ("client_uri", "logo_uri", "scope") and isinstance(v, str)},
    }
