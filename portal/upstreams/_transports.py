"""How the portal reaches each kind of upstream: a stdio child, a remote URL, or an in-process server."""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import anyio
import httpx2
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer, Server
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage

from portal.config import ServerSettings
from portal.errors import ConfigError

__all__ = ["WatchedReadStream", "http_transport", "resolve_inprocess", "stdio_transport"]


class WatchedReadStream:
    """A read stream that sets ``closed`` when the transport ends, so the supervisor reconnects at once."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], closed: anyio.Event) -> None:
        self._inner = inner
        self._closed = closed

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._closed.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> WatchedReadStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class _DrainingStream(httpx2.AsyncByteStream):
    """A response body that, when closed early, first reads what is left of it (briefly).

    The SDK's Streamable HTTP client closes each POST's event stream as soon as it has the JSON-RPC
    response, before the server's final chunk arrives; closing a half-read body makes the pool drop the
    connection, so every call would open a new TCP (and TLS) connection. Draining the last few bytes
    keeps the connection reusable. A body that does not end within ``_DRAIN_SECONDS`` is closed as before.
    """

    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        self._done = False

    async def __aiter__(self) -> AsyncGenerator[bytes]:
        async for chunk in self._inner:
            yield chunk
        self._done = True

    async def aclose(self) -> None:
        if not self._done:
            drained = 0
            with anyio.move_on_after(_DRAIN_SECONDS):
                async for chunk in self._inner:
                    drained += len(chunk)
                    if drained > _DRAIN_BYTES:
                        break
        await self._inner.aclose()


class _KeepAliveTransport(httpx2.AsyncBaseTransport):
    """The default transport, with responses that leave their connection reusable (see _DrainingStream)."""

    def __init__(self, limits: httpx2.Limits) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=limits)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        if isinstance(stream, httpx2.AsyncByteStream):
            response.stream = _DrainingStream(stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


_DRAIN_SECONDS = 0.05
_DRAIN_BYTES = 64 * 1024


def stdio_parameters(settings: ServerSettings) -> StdioServerParameters:
    """The launch parameters of a stdio upstream, wrapped in the launcher that ties it to the portal.

    Only the configured ``env`` is passed, on top of the SDK's minimal safe set (HOME, LOGNAME, PATH, SHELL,
    TERM, USER): the portal's own secrets never reach a child.
    """
    assert settings.command is not None
    env = dict(settings.env)
    launcher = [sys.executable, "-m", "portal.upstreams._launcher"]
    if "PYTHONCOERCECLOCALE" not in env:
        # Stop the launcher's own Python from adding LC_CTYPE (PEP 538); it removes this variable again.
        env["PYTHONCOERCECLOCALE"] = "0"
        launcher.append("--unset=PYTHONCOERCECLOCALE")
    return StdioServerParameters(
        command=launcher[0], args=[*launcher[1:], "--", settings.command, *settings.args], env=env, cwd=settings.cwd
    )


@asynccontextmanager
async def stdio_transport(
    settings: ServerSettings, *, closed: anyio.Event, errlog: TextIO
) -> AsyncGenerator[tuple[WatchedReadStream, Any]]:
    """Start a stdio upstream; its stderr goes to ``errlog``.

    Raises:
        OSError: The command cannot be found.
    """
    assert settings.command is not None
    if shutil.which(settings.command, path=(settings.env.get("PATH") or None)) is None:
        raise FileNotFoundError(f"command {settings.command!r} not found on PATH or not executable")
    async with stdio_client(stdio_parameters(settings), errlog=errlog) as (read, write):
        yield WatchedReadStream(read, closed), write


@asynccontextmanager
async def http_transport(
    settings: ServerSettings,
    *,
    closed: anyio.Event,
    headers: Mapping[str, str] | None = None,
    auth: httpx2.Auth | None = None,
) -> AsyncGenerator[tuple[WatchedReadStream, Any]]:
    """Connect to a remote upstream over Streamable HTTP or SSE.

    Args:
        settings: The server's configuration.
        closed: Set when the transport ends.
        headers: Headers to send (default: the configured ``headers``), e.g. with stored secrets added.
        auth: The OAuth flow that puts a user's token on each request.
    """
    assert settings.url is not None
    sent = dict(settings.headers if headers is None else headers)
    if settings.transport == "sse":
        async with sse_client(settings.url, headers=sent, timeout=settings.connect_timeout, auth=auth) as (
            read,
            write,
        ):
            yield WatchedReadStream(read, closed), write
        return
    timeout = httpx2.Timeout(settings.connect_timeout, read=max(settings.call_timeout, 300.0))
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=50)
    transport = _KeepAliveTransport(limits)
    async with (
        httpx2.AsyncClient(headers=sent, timeout=timeout, transport=transport, auth=auth) as http,
        streamable_http_client(settings.url, http_client=http) as (read, write),
    ):
        yield WatchedReadStream(read, closed), write


def resolve_inprocess(name: str, settings: ServerSettings, source: str, *, data_dir: Path | None = None) -> Server[Any]:
    """Import the in-process server a ``builtin`` or ``module`` entry names.

    The target is an MCP server, or a factory returning one. A factory is called with ``options=`` (the
    entry's ``options`` table) and ``data_dir=`` (the portal's data directory) when its signature takes
    them; a zero-argument factory is simply called. Options given to a factory that takes none are an error.

    Raises:
        ConfigError: The module or attribute does not exist, is not an MCP server, or rejects its options
            (a factory's ``ValueError``).
    """
    from servers import BUILTINS

    if settings.builtin is not None:
        if settings.builtin not in BUILTINS:
            known = ", ".join(sorted(BUILTINS)) or "none yet"
            raise ConfigError(
                source, f"servers.{name}.builtin", f"unknown built-in {settings.builtin!r} (known: {known})"
            )
        target = BUILTINS[settings.builtin]
        key = f"servers.{name}.builtin"
    else:
        assert settings.module is not None
        target = settings.module
        key = f"servers.{name}.module"
    module_name, _, attribute = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(source, key, f"cannot import {module_name!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(source, key, f"{module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, MCPServer | Server):
        obj = _call_factory(obj, settings, source=source, key=key, data_dir=data_dir)
    elif settings.options:
        raise ConfigError(source, f"servers.{name}.options", f"{target!r} is a server, not a factory taking options")
    if isinstance(obj, MCPServer):
        lowlevel: Server[Any] = obj._lowlevel_server  # pyright: ignore[reportPrivateUsage,reportUnknownMemberType,reportUnknownVariableType]
        return lowlevel  # the SDK's own Client unwraps MCPServer the same way
    if isinstance(obj, Server):
        return obj  # pyright: ignore[reportUnknownVariableType]
    raise ConfigError(source, key, f"{target!r} is a {type(obj).__name__}, not an MCPServer or Server")


def _call_factory(factory: Any, settings: ServerSettings, *, source: str, key: str, data_dir: Path | None) -> Any:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    kwargs: dict[str, Any] = {}
    if "options" in parameters:
        kwargs["options"] = dict(settings.options)
    elif settings.options:
        raise ConfigError(source, key.rsplit(".", 1)[0] + ".options", "this server takes no options")
    if "data_dir" in parameters and data_dir is not None:
        kwargs["data_dir"] = data_dir
    try:
        return factory(**kwargs)
    except ValueError as error:
        raise ConfigError(source, key.rsplit(".", 1)[0] + ".options", str(error)) from None
