"""One upstream server: its long-lived connection, its listings, its health.

The :class:`Upstream` supervisor keeps one shared session open, reloads the listings when the upstream
says they changed, pings it, and reconnects with exponential back-off when it fails. While it is down
its state is ``unhealthy`` and the catalog shows none of its tools.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import anyio
import anyio.abc
import mcp_types as types
from mcp import Client
from mcp.client.session import ClientSession, ElicitationFnT, IncomingMessage, LoggingFnT, SamplingFnT
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost, listen
from mcp.server import Server
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import CLIENT_CAPABILITIES_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from portal.config import ServerSettings
from portal.errors import UpstreamUnavailableError
from portal.upstreams._credentials import Credentials
from portal.upstreams._transports import http_transport, resolve_inprocess, stdio_transport

__all__ = ["FORWARDED_CAPABILITIES", "Listing", "Upstream", "UpstreamState"]

logger = logging.getLogger("dockyard.upstream")

UpstreamState = Literal["starting", "connected", "unhealthy", "disabled"]

FORWARDED_CAPABILITIES: ContextVar[dict[str, Any] | None] = ContextVar("dockyard_forwarded_capabilities", default=None)
"""The calling client's capabilities, stamped on 2026-07-28 upstream requests made in this context.

On the stateless protocol a server decides per request what it may ask of the client (input-required
results carry only what the client can answer), so the portal must present the real client's capabilities,
not its own."""


def _forward_capabilities(session: ClientSession) -> None:
    """Make ``session`` stamp :data:`FORWARDED_CAPABILITIES` instead of the portal's own capabilities.

    The SDK builds the per-request envelope in one private hook and offers no per-request override, so the
    hook is wrapped here, in this one place.
    """
    inner: Callable[[dict[str, Any], Any], None] = session._stamp  # pyright: ignore[reportPrivateUsage]

    def stamp(data: dict[str, Any], opts: Any) -> None:
        inner(data, opts)
        forwarded = FORWARDED_CAPABILITIES.get()
        meta = data.get("params", {}).get("_meta")
        if forwarded is not None and isinstance(meta, dict) and CLIENT_CAPABILITIES_META_KEY in meta:
            meta[CLIENT_CAPABILITIES_META_KEY] = forwarded

    session._stamp = stamp  # pyright: ignore[reportPrivateUsage]


@dataclass(frozen=True)
class Listing:
    """What an upstream offers, as it reported it."""

    tools: tuple[types.Tool, ...] = ()
    resources: tuple[types.Resource, ...] = ()
    templates: tuple[types.ResourceTemplate, ...] = ()
    prompts: tuple[types.Prompt, ...] = ()
    capabilities: types.ServerCapabilities = field(default_factory=types.ServerCapabilities)


@dataclass(frozen=True)
class SessionHandlers:
    """Callbacks for server-initiated traffic on a session (shared or dedicated to one client)."""

    sampling: SamplingFnT | None = None
    elicitation: ElicitationFnT | None = None
    logging: LoggingFnT | None = None


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        leaves: list[BaseException] = []
        pending: list[BaseException] = [error]
        while pending:
            current = pending.pop()
            if isinstance(current, BaseExceptionGroup):
                pending.extend(current.exceptions)  # pyright: ignore[reportUnknownMemberType,reportUnknownArgumentType]
            else:
                leaves.append(current)
        return "; ".join(_describe(leaf) for leaf in leaves[:3])
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, MCPError | OSError) else text


class Upstream:
    """Supervises the connection to one upstream server.

    Args:
        name: The configured server name.
        settings: Its configuration.
        source: The configuration file, for error messages.
        log_dir: Where stdio children write their stderr (``NAME.log``).
        stdio_slots: Shared cap on stdio children.
        health_interval: Seconds between pings.
        max_backoff: Upper bound of the reconnect back-off in seconds.
        on_change: Awaited after every change of state or listing.
        on_resource_updated: Awaited with the URI of each ``notifications/resources/updated``.
        credentials: Stored secrets and OAuth tokens presented when connecting.
    """

    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        *,
        source: str,
        log_dir: Path,
        stdio_slots: anyio.CapacityLimiter,
        health_interval: float,
        max_backoff: float,
        on_change: Callable[[Upstream], Awaitable[None]],
        on_resource_updated: Callable[[Upstream, str], Awaitable[None]] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.kind = settings.kind
        self.state: UpstreamState = "starting" if settings.enabled else "disabled"
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.connected_at: float | None = None
        self.protocol_version: str | None = None
        self.listing = Listing()
        self.known_tools: tuple[types.Tool, ...] = ()
        """The tools of the last successful listing, kept while the upstream is down."""
        self.failures = 0
        self._stderr_offset = 0
        self._source = source
        self._log_dir = log_dir
        self._stdio_slots = stdio_slots
        self._health_interval = health_interval
        self._max_backoff = max_backoff
        self._on_change = on_change
        self._on_resource_updated = on_resource_updated
        self._credentials = credentials
        self._session: ClientSession | None = None
        self._broken = anyio.Event()
        self._refresh = anyio.Event()
        self._inprocess: Server[Any] | None = None
        self._subscriptions: dict[str, anyio.CancelScope | None] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._upstream_log = logging.getLogger(f"dockyard.upstream.{name}")

    # ----------------------------------------------------------------- public surface

    @property
    def connected(self) -> bool:
        """Whether the shared session is up."""
        return self._session is not None and self.state == "connected"

    def session(self) -> ClientSession:
        """The shared session.

        Raises:
            UpstreamUnavailableError: The upstream is not connected.
        """
        if self._session is None or self.state != "connected":
            reason = f": {self.last_error}" if self.last_error else ""
            raise UpstreamUnavailableError(f"server {self.name!r} is {self.state}{reason}")
        return self._session

    def mark_broken(self, error: BaseException) -> None:
        """Report that a request found the connection dead, so the supervisor reconnects now."""
        self._note_error(error)
        self._broken.set()

    @asynccontextmanager
    async def dedicated_session(self, handlers: SessionHandlers) -> AsyncGenerator[ClientSession]:
        """Open a session used by one client only, whose server-initiated traffic goes to ``handlers``.

        Raises:
            UpstreamUnavailableError: It cannot be opened.
        """
        closed = anyio.Event()
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.settings.connect_timeout) as scope:
                async with self._client(closed, handlers, dedicated=True) as client:
                    scope.deadline = math.inf
                    yield client.session
            if scope.cancelled_caught:
                raise TimeoutError
        except (OSError, MCPError, TimeoutError) as error:
            raise UpstreamUnavailableError(f"cannot open a session to {self.name!r}: {_describe(error)}") from error

    @asynccontextmanager
    async def user_session(self, subject: str) -> AsyncGenerator[ClientSession]:
        """Open a session that carries ``subject``'s own OAuth token (an ``auth = "oauth"`` server).

        Raises:
            UpstreamUnavailableError: It cannot be opened.
        """
        closed = anyio.Event()
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.settings.connect_timeout) as scope:
                async with self._client(closed, SessionHandlers(), dedicated=True, subject=subject) as client:
                    scope.deadline = math.inf
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        _forward_capabilities(client.session)
                    yield client.session
            if scope.cancelled_caught:
                raise TimeoutError
        except (OSError, MCPError, TimeoutError) as error:
            raise UpstreamUnavailableError(f"cannot open a session to {self.name!r}: {_describe(error)}") from error

    async def subscribe(self, uri: str) -> None:
        """Ask the upstream for ``notifications/resources/updated`` of ``uri``, in whichever era it speaks.

        Raises:
            UpstreamUnavailableError: The upstream is not connected.
            MCPError: The upstream refused.
        """
        if uri in self._subscriptions:
            return
        session = self.session()
        if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
            assert self._task_group is not None
            self._subscriptions[uri] = await self._task_group.start(self._watch_resource, session, uri)
        else:
            await session.send_request(
                types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)), types.EmptyResult
            )
            self._subscriptions[uri] = None

    async def unsubscribe(self, uri: str) -> None:
        """Stop watching ``uri``; a no-op when not subscribed."""
        if uri not in self._subscriptions:
            return
        scope = self._subscriptions.pop(uri)
        if scope is not None:
            scope.cancel()
        elif self.connected:
            try:
                await self.session().send_request(
                    types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri)), types.EmptyResult
                )
            except MCPError as error:
                self._upstream_log.debug("unsubscribe %s failed: %s", uri, error)

    async def _resubscribe(self, uri: str) -> None:
        self._subscriptions.pop(uri, None)
        try:
            await self.subscribe(uri)
        except (MCPError, UpstreamUnavailableError) as error:
            self._upstream_log.warning("cannot renew the subscription to %s: %s", uri, error)

    async def _watch_resource(
        self, session: ClientSession, uri: str, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
    ) -> None:
        """A 2026-07-28 resource subscription: one ``subscriptions/listen`` stream for ``uri``."""
        with anyio.CancelScope() as scope:
            async with listen(session, resource_subscriptions=[uri]) as subscription:
                task_status.started(scope)
                async for event in subscription:
                    if isinstance(event, ResourceUpdated) and self._on_resource_updated is not None:
                        await self._on_resource_updated(self, event.uri)

    async def run(self) -> None:
        """Connect, serve, and reconnect with back-off until cancelled."""
        if not self.settings.enabled:
            await self._on_change(self)
            return
        while True:
            started = time.monotonic()
            try:
                await self._serve_once()
            except Exception as error:
                self._note_error(error)
            self._session = None
            self.state = "unhealthy"
            self.listing = Listing()
            await self._on_change(self)
            if time.monotonic() - started > 60:
                self.failures = 0  # it was up for a while: start the back-off again from the bottom
            self.failures += 1
            delay = min(self._max_backoff, 0.5 * math.pow(2, min(self.failures - 1, 16)))
            logger.warning("upstream %s is down (%s); retrying in %.1fs", self.name, self.last_error, delay)
            await anyio.sleep(delay)

    # ----------------------------------------------------------------- connection

    def _note_error(self, error: BaseException) -> None:
        self.last_error = _describe(error)
        self.last_error_at = time.time()
        tail = self._stderr_tail()
        if tail and self.kind == "stdio":
            self.last_error += f" (stderr: {tail})"

    def _stderr_tail(self) -> str:
        path = self._log_dir / f"{self.name}.log"
        try:
            with path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(self._stderr_offset, size - 400))
                lines = handle.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][-200:] if lines else ""

    @asynccontextmanager
    async def _client(
        self, closed: anyio.Event, handlers: SessionHandlers, *, dedicated: bool, subject: str | None = None
    ) -> AsyncGenerator[Client]:
        async def message_handler(message: IncomingMessage) -> None:
            await self._on_message(message, dedicated=dedicated)

        # A dedicated session exists for server-initiated requests, which only the handshake era allows;
        # a user's own session (OAuth) exists for that user's token and speaks whatever the server does.
        mode = "legacy" if dedicated and subject is None else "auto"
        callbacks: dict[str, Any] = {
            "sampling_callback": handlers.sampling,
            "elicitation_callback": handlers.elicitation,
            "logging_callback": handlers.logging or self._log_upstream,
            "message_handler": message_handler,
            "read_timeout_seconds": self.settings.call_timeout,
            "client_info": types.Implementation(name="dockyard-portal", version="0.1.0"),
            "cache": None,
        }
        async with AsyncExitStack() as stack:
            if self.kind == "stdio":
                await stack.enter_async_context(_Slot(self._stdio_slots, self.name))
                self._log_dir.mkdir(parents=True, exist_ok=True)
                errlog: IO[str] = stack.enter_context((self._log_dir / f"{self.name}.log").open("a", encoding="utf-8"))
                if not dedicated:
                    self._stderr_offset = errlog.tell()  # only this attempt's stderr explains its failure
                settings = self.settings
                if self._credentials is not None and (env := await self._credentials.env(self.name)):
                    settings = settings.model_copy(update={"env": {**settings.env, **env}})
                transport = stdio_transport(settings, closed=closed, errlog=errlog)  # pyright: ignore[reportArgumentType]
                client = Client(transport, mode=mode, **callbacks)  # pyright: ignore[reportArgumentType]
            elif self.kind == "http":
                headers: dict[str, str] = dict(self.settings.headers)
                auth = None
                if self._credentials is not None:
                    headers.update(await self._credentials.headers(self.name))
                    auth = self._credentials.auth(self.name, subject)
                transport = http_transport(self.settings, closed=closed, headers=headers, auth=auth)
                client = Client(transport, mode=mode, **callbacks)  # pyright: ignore[reportArgumentType]
            else:
                if self._inprocess is None:
                    # The data directory is where the gateway puts the upstream logs' folder.
                    self._inprocess = resolve_inprocess(
                        self.name, self.settings, self._source, data_dir=self._log_dir.parent
                    )
                client = Client(self._inprocess, mode=mode, **callbacks)
            yield await stack.enter_async_context(client)

    async def _serve_once(self) -> None:
        self._broken = anyio.Event()
        # One scope spans the whole connection so the SDK's task groups nest inside it; its deadline bounds
        # start-up only and is lifted once the upstream has answered.
        with anyio.CancelScope(deadline=anyio.current_time() + self.settings.connect_timeout) as scope:
            async with self._client(self._broken, SessionHandlers(), dedicated=False) as client:
                self._session = client.session
                self.protocol_version = client.protocol_version
                if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    _forward_capabilities(client.session)
                self.listing = await self._load_listing(client.session, client.server_capabilities)
                self.known_tools = self.listing.tools
                scope.deadline = math.inf
                await self._serve_connected(client)
        if scope.cancelled_caught:
            raise TimeoutError(f"no answer within connect_timeout={self.settings.connect_timeout}s")

    async def _serve_connected(self, client: Client) -> None:
        self.state = "connected"
        self.connected_at = time.time()
        self.last_error = None
        logger.info(
            "upstream %s connected (%s, protocol %s, %d tools)",
            self.name,
            self.kind,
            self.protocol_version,
            len(self.listing.tools),
        )
        await self._on_change(self)
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(self._health_loop, client.session)
            tg.start_soon(self._refresh_loop, client.session, client.server_capabilities)
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                tg.start_soon(self._listen_loop, client.session, client.server_capabilities)
            for uri in list(self._subscriptions):  # the upstream forgot them when the connection dropped
                tg.start_soon(self._resubscribe, uri)
            try:
                await self._broken.wait()
            finally:
                self._task_group = None
                tg.cancel_scope.cancel()
        raise ConnectionError(self.last_error or "connection closed")

    async def _health_loop(self, session: ClientSession) -> None:
        while True:
            await anyio.sleep(self._health_interval)
            try:
                with anyio.fail_after(min(10.0, self._health_interval * 2)):
                    if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        await session.send_discover(session.protocol_version)  # 2026-07-28 has no ping
                    else:
                        await session.send_ping()
            except (MCPError, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
                self.mark_broken(error)
                return

    async def _listen_loop(self, session: ClientSession, capabilities: types.ServerCapabilities) -> None:
        """2026-07-28 delivers list changes only on a ``subscriptions/listen`` stream: keep one open."""
        tools = bool(capabilities.tools and capabilities.tools.list_changed)
        prompts = bool(capabilities.prompts and capabilities.prompts.list_changed)
        resources = bool(capabilities.resources and capabilities.resources.list_changed)
        if not (tools or prompts or resources):
            return
        while True:
            try:
                async with listen(
                    session, tools_list_changed=tools, prompts_list_changed=prompts, resources_list_changed=resources
                ) as subscription:
                    async for _event in subscription:
                        self._refresh.set()
            except (MCPError, SubscriptionLost, TimeoutError, ListenNotSupportedError) as error:
                self._upstream_log.debug("subscriptions/listen ended: %s", error)
                if isinstance(error, MCPError) and error.code == types.CONNECTION_CLOSED:
                    self.mark_broken(error)
                    return
                if isinstance(error, ListenNotSupportedError | MCPError):
                    return  # the upstream does not offer it; health checks still notice a dead upstream
            await anyio.sleep(1.0)  # the stream dropped: reopen it, then refetch what may have changed
            self._refresh.set()

    async def _refresh_loop(self, session: ClientSession, capabilities: types.ServerCapabilities) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = anyio.Event()
            try:
                with anyio.fail_after(self.settings.connect_timeout):
                    self.listing = await self._load_listing(session, capabilities)
                    self.known_tools = self.listing.tools
            except (MCPError, TimeoutError) as error:
                self.mark_broken(error)
                return
            await self._on_change(self)

    async def _on_message(self, message: IncomingMessage, *, dedicated: bool) -> None:
        if isinstance(message, Exception):
            self._upstream_log.debug("transport error: %s", message)
            return
        if dedicated:
            return  # the shared session reports list changes; a dedicated one would only repeat them
        if isinstance(
            message,
            types.ToolListChangedNotification
            | types.ResourceListChangedNotification
            | types.PromptListChangedNotification,
        ):
            self._refresh.set()
        elif isinstance(message, types.ResourceUpdatedNotification) and self._on_resource_updated is not None:
            await self._on_resource_updated(self, str(message.params.uri))

    async def _log_upstream(self, params: types.LoggingMessageNotificationParams) -> None:
        level = {"debug": 10, "info": 20, "notice": 20, "warning": 30}.get(params.level, 40)
        self._upstream_log.log(level, "%s", params.data)

    async def _load_listing(self, session: ClientSession, capabilities: types.ServerCapabilities) -> Listing:
        tools: list[types.Tool] = []
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        prompts: list[types.Prompt] = []
        if capabilities.tools is not None:
            cursor: str | None = None
            while True:
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                tools.extend(page.tools)
                if not (cursor := page.next_cursor):
                    break
        if capabilities.resources is not None:
            cursor = None
            while True:
                rpage = await session.list_resources(params=types.PaginatedRequestParams(cursor=cursor))
                resources.extend(rpage.resources)
                if not (cursor := rpage.next_cursor):
                    break
            cursor = None
            while True:
                tpage = await session.list_resource_templates(params=types.PaginatedRequestParams(cursor=cursor))
                templates.extend(tpage.resource_templates)
                if not (cursor := tpage.next_cursor):
                    break
        if capabilities.prompts is not None:
            cursor = None
            while True:
                ppage = await session.list_prompts(params=types.PaginatedRequestParams(cursor=cursor))
                prompts.extend(ppage.prompts)
                if not (cursor := ppage.next_cursor):
                    break
        return Listing(tuple(tools), tuple(resources), tuple(templates), tuple(prompts), capabilities)


class _Slot:
    """Holds one of the portal's stdio child slots for as long as a child runs."""

    def __init__(self, limiter: anyio.CapacityLimiter, name: str) -> None:
        self._limiter = limiter
        self._name = name
        self._token = object()

    async def __aenter__(self) -> None:
        try:
            self._limiter.acquire_on_behalf_of_nowait(self._token)
        except anyio.WouldBlock:
            raise OSError(
                f"the cap of {int(self._limiter.total_tokens)} stdio children is reached; "
                "raise [portal] max_stdio_children to start more"
            ) from None

    async def __aexit__(self, *exc: object) -> None:
        self._limiter.release_on_behalf_of(self._token)
