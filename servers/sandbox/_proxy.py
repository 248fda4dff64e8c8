"""The egress proxy: the only way out of a box, outside it, on a Unix socket bind-mounted in.

It speaks just enough HTTP/1.1 to act as a forward proxy for one request per connection:

* ``CONNECT host:port`` opens a tunnel (TLS end to end; nothing is injected) to an allowed host.
* An absolute-form request (``GET http://host/path HTTP/1.1``) is sent on to an allowed host, over HTTPS
  or HTTP as its :class:`Credential` says, with the credential's headers added. This is how a box uses an
  API key it never holds: it calls ``http://api.github.com/...`` through ``HTTP_PROXY``; the proxy upgrades
  the connection to HTTPS and adds ``Authorization``.

Allow-list patterns: ``api.github.com``, ``*.example.com`` (any subdomain, not the apex), ``host:port``,
``*`` (any host). A pattern without a port allows ports 80 and 443. A host that resolves to a loopback,
private, link-local or otherwise non-public address is refused unless the matching pattern names that
very IP address (``127.0.0.1:8080``): a public name cannot be pointed at the host's own services.

Every decision becomes an :class:`EgressEvent` handed to ``on_event``; the manager keeps the recent ones
per sandbox (the ``egress_log`` tool) and logs refusals on the ``sandbox.egress`` logger at WARNING. No
event, log line or error message carries a header value.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream, SocketListener, SocketStream
from anyio.streams.tls import TLSStream

__all__ = ["Credential", "EgressEvent", "EgressProxy", "host_allowed", "matching_pattern", "split_pattern"]

_MAX_HEAD = 64 * 1024
_CONNECT_TIMEOUT = 10.0
_HEAD_TIMEOUT = 30.0
_HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "te", "trailer",
     "upgrade", "host"}
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Credential:
    """Headers the proxy adds to requests for one host (the box never sees them)."""

    host: str
    """Exact host name (case-insensitive), optionally ``host:port``."""
    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    scheme: Literal["https", "http"] = "https"
    """How the proxy connects to the host for a box's ``http://`` request."""


@dataclass(frozen=True, kw_only=True)
class EgressEvent:
    """One decision of the proxy."""

    time: float
    sandbox_id: str
    principal: str
    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    credential: bool = False
    """Whether configured headers were added."""


def split_pattern(pattern: str) -> tuple[str, int | None]:
    """``host[:port]`` → (lower-case host without IPv6 brackets, port or None)."""
    host, sep, port = pattern.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):
        return host.lower().strip("[]"), int(port)
    return pattern.lower().strip("[]"), None


def matching_pattern(patterns: Sequence[str], host: str, port: int) -> str | None:
    """The first allow-list pattern that admits ``host:port``, or None."""
    host = host.lower().rstrip(".").strip("[]")
    for pattern in patterns:
        name, wanted = split_pattern(pattern)
        if wanted is None and port not in (80, 443):
            continue
        if wanted is not None and wanted != port:
            continue
        if name == "*" or name == host or (name.startswith("*.") and fnmatch.fnmatchcase(host, name)):
            return pattern
    return None


def host_allowed(patterns: Sequence[str], host: str, port: int) -> bool:
    """Whether the allow-list admits ``host:port``."""
    return matching_pattern(patterns, host, port) is not None


def _literal_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class EgressProxy:
    """Serves one box's egress socket with that box's allow-list and the configured credentials."""

    def __init__(
        self,
        *,
        sandbox_id: str,
        principal: str,
        allow: Sequence[str],
        credentials: Sequence[Credential] = (),
        on_event: Callable[[EgressEvent], None],
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.principal = principal
        self.allow: tuple[str, ...] = tuple(allow)
        """Patterns in force; the manager narrows them when the owner's policy changes."""
        self._credentials = {c.host.lower(): c for c in credentials}
        self._on_event = on_event
        self._tls = tls_context or ssl.create_default_context()

    async def serve(self, listener: socket.socket) -> None:
        """Accept connections on a listening Unix socket until cancelled."""
        async with await SocketListener.from_socket(listener) as wrapped:
            await wrapped.serve(self._handle)

    def _credential(self, host: str, port: int) -> Credential | None:
        return self._credentials.get(f"{host}:{port}") or self._credentials.get(host)

    def _event(
        self, method: str, host: str, port: int, *, allowed: bool, reason: str, credential: bool = False
    ) -> None:
        self._on_event(
            EgressEvent(
                time=time.time(),
                sandbox_id=self.sandbox_id,
                principal=self.principal,
                method=method,
                host=host,
                port=port,
                allowed=allowed,
                reason=reason,
                credential=credential,
            )
        )

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            try:
                with anyio.fail_after(_HEAD_TIMEOUT):
                    head, rest = await _read_head(client)
            except TimeoutError:
                await _refuse(client, 408, "no complete request head in time")
                return
            except _Refused as refused:
                await _refuse(client, refused.status, refused.reason)
                return
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                await _refuse(client, 400, "malformed request line")
                return
            method, target, version = parts
            try:
                if method.upper() == "CONNECT":
                    await self._tunnel(client, target, rest)
                else:
                    await self._forward(client, method, target, version, lines[1:], rest)
            except _Refused as refused:
                await _refuse(client, refused.status, refused.reason)

    async def _check(self, method: str, host: str, port: int) -> tuple[str, int]:
        """Allow-list and address checks; returns the address to connect to."""
        pattern = matching_pattern(self.allow, host, port)
        if pattern is None:
            reason = f"{host}:{port} is not in this sandbox's egress allow-list"
            self._event(method, host, port, allowed=False, reason=reason)
            raise _Refused(403, reason)
        literal = _literal_ip(host)
        try:
            infos = await anyio.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except OSError as error:
            reason = f"cannot resolve {host}: {error}"
            self._event(method, host, port, allowed=False, reason=reason)
            raise _Refused(502, reason) from None
        if not infos:
            raise _Refused(502, f"cannot resolve {host}")
        address = str(infos[0][4][0])
        ip = ipaddress.ip_address(address)
        named_exactly = literal is not None and literal == ip and _literal_ip(split_pattern(pattern)[0]) == ip
        if not ip.is_global and not named_exactly:
            reason = (
                f"{host} resolves to the non-public address {address}; "
                "only an allow-list entry naming that IP may reach it"
            )
            self._event(method, host, port, allowed=False, reason=reason)
            raise _Refused(403, reason)
        return address, port

    async def _connect(self, address: str, port: int) -> SocketStream:
        try:
            with anyio.fail_after(_CONNECT_TIMEOUT):
                return await anyio.connect_tcp(address, port)
        except (OSError, TimeoutError) as error:
            raise _Refused(502, f"cannot connect to {address}:{port}: {error}") from None

    async def _tunnel(self, client: SocketStream, target: str, rest: bytes) -> None:
        host, sep, port_text = target.rpartition(":")
        if not sep or not port_text.isdigit():
            raise _Refused(400, f"CONNECT needs host:port, got {target!r}")
        port = int(port_text)
        address, port = await self._check("CONNECT", host, port)
        upstream = await self._connect(address, port)
        self._event("CONNECT", host, port, allowed=True, reason="tunnel")
        async with upstream:
            await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if rest:
                await upstream.send(rest)
            await _splice(client, upstream)

    async def _forward(
        self, client: SocketStream, method: str, target: str, version: str, header_lines: list[str], rest: bytes
    ) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            raise _Refused(
                400,
                "send absolute-form http:// requests (the proxy upgrades hosts configured for HTTPS) "
                f"or CONNECT for https; got {target!r}",
            )
        host = url.hostname
        try:
            port = url.port or 80
        except ValueError:
            raise _Refused(400, f"bad port in {target!r}") from None
        credential = self._credential(host.lower(), port)
        upstream_port = port
        if credential is not None and credential.scheme == "https" and url.port is None:
            upstream_port = 443
        address, _ = await self._check(method, host, upstream_port)  # where the request really goes
        injected = {k.lower(): v for k, v in (credential.headers if credential else {}).items()}
        headers = [
            line
            for line in header_lines
            if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP | injected.keys()
        ]
        default = 443 if credential is not None and credential.scheme == "https" else 80
        host_header = host if upstream_port == default else f"{host}:{upstream_port}"
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        out = [f"{method} {path} {version}", f"Host: {host_header}", *headers]
        out += [f"{name}: {value}" for name, value in (credential.headers if credential else {}).items()]
        out.append("Connection: close")
        raw = await self._connect(address, upstream_port)
        upstream: ByteStream = raw
        if credential is not None and credential.scheme == "https":
            try:
                upstream = await TLSStream.wrap(raw, hostname=host, ssl_context=self._tls, standard_compatible=False)
            except (OSError, ssl.SSLError) as error:
                await raw.aclose()
                raise _Refused(502, f"TLS to {host} failed: {error}") from None
        self._event(method, host, upstream_port, allowed=True, reason="forwarded", credential=credential is not None)
        async with upstream:
            await upstream.send(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
            await _splice(client, upstream)


async def _read_head(client: SocketStream) -> tuple[bytes, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise _Refused(431, "request head too large")
        buffer += await client.receive(65536)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


async def _refuse(client: SocketStream, status: int, reason: str) -> None:
    phrase = {
        400: "Bad Request",
        403: "Forbidden",
        408: "Request Timeout",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
    }
    body = f"dockyard egress proxy: {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} {phrase.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Dockyard-Egress: refused\r\n\r\n"
    )
    try:
        await client.send(head.encode() + body)
    except (anyio.BrokenResourceError, OSError):
        pass


async def _splice(client: ByteStream, upstream: ByteStream) -> None:
    """Copy both ways until the upstream is done (the client may half-close first)."""

    async def copy(source: ByteStream, sink: ByteStream, final: bool) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            pass
        if final:
            tg.cancel_scope.cancel()
        else:
            try:
                await sink.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, NotImplementedError):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(copy, client, upstream, False)
        tg.start_soon(copy, upstream, client, True)
