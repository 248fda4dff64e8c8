"""An SSRF-safe HTTP(S) client for documents whose URL someone else chose.

Client ID Metadata Documents, upstream OAuth discovery (RFC 9728/8414), OIDC discovery and upstream
token endpoints all name URLs the portal did not choose. Fetching them naively lets a caller make the
portal reach its own loopback services, the cloud metadata endpoint (169.254.169.254) or the private
network. Every request made here:

- uses HTTPS (plain HTTP only for hosts on the policy's explicit development allow-list);
- resolves the host name once, refuses it if *any* address is not globally routable (loopback,
  private, link-local, CGNAT, multicast, reserved, unspecified, and the IPv6 forms that embed such an
  IPv4 address: mapped, 6to4, Teredo, NAT64), then connects to the checked address itself, with the
  original name in ``Host`` and TLS SNI, so DNS cannot change the answer between check and connect;
- follows at most ``max_redirects`` redirects, checking every hop the same way;
- stops after ``timeout`` seconds and ``max_bytes`` of body, and insists on a JSON content type.

Errors::

    FetchError              the document could not be fetched (network, status, size, time, not JSON)
    └── BlockedURLError     the URL, or an address it resolves to, is not allowed (the SSRF refusal)
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import anyio
import httpx2

from portal.errors import DockyardError

__all__ = ["BlockedURLError", "FetchError", "FetchPolicy", "check_address", "fetch_json", "post_form", "post_json"]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: how host names become IP addresses (the system resolver by default)."""

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(DockyardError):
    """A document could not be fetched: network failure, bad status, too big, too slow, or not JSON.

    Attributes:
        status: The HTTP status of an error response, when there was one.
        oauth_error: The RFC 6749 ``error`` code of an error response's JSON body (``invalid_grant``...).
    """

    def __init__(self, message: str, *, status: int | None = None, oauth_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.oauth_error = oauth_error


class BlockedURLError(FetchError):
    """The URL's scheme or host, or an address its host resolves to, is not allowed (SSRF defence)."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one kind of fetch.

    Attributes:
        timeout: Seconds for the whole exchange, redirects included.
        max_bytes: Largest body accepted.
        max_redirects: Redirects followed (each hop checked again); 0 refuses any redirect.
        insecure_hosts: Host names or IP literals exempt from the HTTPS and address checks, for
            development and tests only (e.g. ``{"127.0.0.1"}``). Comes from configuration, never a request.
        resolver: Resolves a host name; the system resolver when None.
    """

    timeout: float = 5.0
    max_bytes: int = 256 * 1024
    max_redirects: int = 3
    insecure_hosts: frozenset[str] = field(default_factory=frozenset[str])
    resolver: Resolver | None = None


def check_address(address: str) -> None:
    """Refuse an address that is not a public unicast address.

    Raises:
        BlockedURLError: ``address`` is loopback, private, link-local, CGNAT, multicast, reserved,
            unspecified, or an IPv6 form embedding such an IPv4 address; or not an IP address at all.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise BlockedURLError(f"{address!r} is not an IP address") from None
    reason = _blocked_reason(ip)
    if reason:
        raise BlockedURLError(f"address {address} is {reason}; only public addresses may be fetched")


def _blocked_reason(ip: _IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = _blocked_reason(embedded)
            if inner:
                return f"an IPv6 form of {embedded} ({inner})"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "carrier-grade NAT (100.64.0.0/10)"),
        (ip.is_private, "private"),
        (not ip.is_global, "not globally routable"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


async def _system_resolver(host: str, port: int) -> Sequence[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class _Target:
    urls: tuple[httpx2.URL, ...]
    """The URL with its host replaced by each checked address, tried in the resolver's order."""
    host_header: str
    sni: str | None


async def _check_url(url: httpx2.URL, policy: FetchPolicy) -> _Target:
    host = url.host
    if not host:
        raise BlockedURLError(f"{str(url)!r} has no host")
    if url.userinfo:
        raise BlockedURLError(f"{str(url)!r} carries credentials in its URL")
    exempt = host.lower() in policy.insecure_hosts
    if url.scheme != "https" and not (exempt and url.scheme == "http"):
        raise BlockedURLError(f"{str(url)!r} is not an https URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        literal: _IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: Sequence[str] = [str(literal)]
    else:
        try:
            addresses = await (policy.resolver or _system_resolver)(host, port)
        except OSError as error:
            raise FetchError(f"cannot resolve {host!r}: {error}") from None
        if not addresses:
            raise FetchError(f"{host!r} resolves to no address")
    if not exempt:
        for address in addresses:
            check_address(address)
    default_port = url.port is None or url.port == (443 if url.scheme == "https" else 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{url.port}")
    urls = tuple(url.copy_with(host=address.split("%", 1)[0]) for address in dict.fromkeys(addresses))
    return _Target(urls, host_header, None if literal is not None else host)


async def _exchange(
    method: str,
    url: str,
    *,
    policy: FetchPolicy,
    data: Mapping[str, str] | None,
    json_body: Mapping[str, object] | None,
    headers: Mapping[str, str],
) -> dict[str, object]:
    try:
        current = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError) as error:
        raise BlockedURLError(f"{url!r} is not a valid URL: {error}") from None
    async with httpx2.AsyncClient(trust_env=False, follow_redirects=False, timeout=policy.timeout) as client:
        for _hop in range(policy.max_redirects + 1):
            target = await _check_url(current, policy)
            response = await _send_first(client, target, method, data, json_body, headers)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{str(current)!r} redirected without a Location")
                    if method == "POST":
                        raise FetchError(f"{str(current)!r} redirected a POST ({response.status_code}); refused")
                    current = current.join(location)
                    continue
                return await _json_body(response, str(current), policy)
            finally:
                await response.aclose()
    raise FetchError(f"{url!r} redirected more than {policy.max_redirects} times")


async def _send_first(
    client: httpx2.AsyncClient,
    target: _Target,
    method: str,
    data: Mapping[str, str] | None,
    json_body: Mapping[str, object] | None,
    headers: Mapping[str, str],
) -> httpx2.Response:
    """Send to the first checked address that accepts a connection (a host may have an unreachable IPv6 one)."""
    for index, url in enumerate(target.urls):
        request = client.build_request(
            method,
            url,
            data=dict(data) if data is not None else None,
            json=dict(json_body) if json_body is not None else None,
            headers={**headers, "Host": target.host_header, "Accept": "application/json"},
            extensions={"sni_hostname": target.sni} if target.sni else None,
        )
        try:
            return await client.send(request, stream=True)
        except httpx2.ConnectError:
            if index == len(target.urls) - 1:
                raise
    raise AssertionError("a target always has an address")


async def _json_body(response: httpx2.Response, url: str, policy: FetchPolicy) -> dict[str, object]:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(f"{url!r} answered {declared} bytes, more than the {policy.max_bytes} allowed")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise FetchError(f"{url!r} answered more than the {policy.max_bytes} bytes allowed")
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if response.status_code >= 400 and content_type != "application/json":
        raise FetchError(f"{url!r} answered HTTP {response.status_code}", status=response.status_code)
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise FetchError(f"{url!r} answered {content_type or 'no content type'!r}, not application/json")
    try:
        document: object = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as error:
        raise FetchError(f"{url!r} answered invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise FetchError(f"{url!r} answered JSON that is not an object")
    result = cast(dict[str, object], document)  # JSON object keys are always strings
    if response.status_code >= 400:
        code = result.get("error")
        raise FetchError(
            f"{url!r} answered HTTP {response.status_code}: {_oauth_error(result)}",
            status=response.status_code,
            oauth_error=code if isinstance(code, str) else None,
        )
    return result


def _oauth_error(document: Mapping[str, object]) -> str:
    error, description = document.get("error"), document.get("error_description")
    if isinstance(error, str):
        return f"{error}" + (f" ({description})" if isinstance(description, str) else "")
    return "error"


async def _guarded(
    method: str,
    url: str,
    *,
    policy: FetchPolicy,
    data: Mapping[str, str] | None = None,
    json_body: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    try:
        with anyio.fail_after(policy.timeout):
            return await _exchange(method, url, policy=policy, data=data, json_body=json_body, headers=headers or {})
    except TimeoutError:
        raise FetchError(f"{url!r} did not answer within {policy.timeout:g} s") from None
    except httpx2.HTTPError as error:
        raise FetchError(f"cannot fetch {url!r}: {type(error).__name__}: {error}") from None


async def fetch_json(url: str, *, policy: FetchPolicy, headers: Mapping[str, str] | None = None) -> dict[str, object]:
    """GET a JSON object from a URL someone else chose, with the SSRF defences of this module.

    Raises:
        BlockedURLError: The URL or an address its host resolves to (on any redirect hop) is not allowed.
        FetchError: Network error, HTTP error status, too big, too slow, not JSON or not a JSON object.
    """
    return await _guarded("GET", url, policy=policy, headers=headers)


async def post_form(
    url: str,
    data: Mapping[str, str],
    *,
    policy: FetchPolicy,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """POST a form (an OAuth token or registration request) and read a JSON object back, SSRF-safe.

    An error status with an OAuth error document raises :class:`FetchError` naming the RFC error code.

    Raises:
        BlockedURLError: The URL or an address its host resolves to is not allowed.
        FetchError: Network error, HTTP error status, too big, too slow, or not a JSON object.
    """
    return await _guarded("POST", url, policy=policy, data=data, headers=headers)


async def post_json(
    url: str,
    body: Mapping[str, object],
    *,
    policy: FetchPolicy,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """POST a JSON object (an RFC 7591 registration request) and read a JSON object back, SSRF-safe.

    Raises:
        BlockedURLError: The URL or an address its host resolves to is not allowed.
        FetchError: Network error, HTTP error status, too big, too slow, or not a JSON object.
    """
    return await _guarded("POST", url, policy=policy, json_body=body, headers=headers)
