"""The portal's MCP endpoint: a low-level ``mcp`` server whose every handler goes through the gateway.

The SDK's Streamable HTTP session manager serves both protocol eras on one URL: 2026-07-28 requests
(stateless, per-request envelope) and the session-based 2025-11-25 / 2025-06-18 handshake. Gateway
errors are translated into protocol errors here, once.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Any, get_args

import mcp_types as types
from mcp.server import Server
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from portal.channel import SamplingResult
from portal.errors import UnknownTargetError, UpstreamUnavailableError
from portal.gateway import Gateway, ListKind
from portal.principal import LOCAL_PRINCIPAL, Principal

__all__ = ["PRINCIPAL_SCOPE_KEY", "build_mcp_server"]

PRINCIPAL_SCOPE_KEY = "dockyard.principal"
"""ASGI scope key where authentication middleware leaves the verified :class:`Principal`."""

Ctx = ServerRequestContext[Any, Any]

_LOG_LEVEL_KEY = "dockyard.log_level"
_LEVELS: tuple[str, ...] = get_args(types.LoggingLevel)

# Listings are filtered per principal (SECURITY.md T4): a cached result must never be shared.
_PRIVATE = CacheHint(ttl_ms=0, scope="private")


def principal_of(ctx: Ctx) -> Principal:
    """The verified caller of this request."""
    request = ctx.request
    scope: dict[str, Any] | None = getattr(request, "scope", None)
    if scope is not None:
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if isinstance(principal, Principal):
            return principal
    return LOCAL_PRINCIPAL


class _RequestChannel:
    """The :class:`~portal.channel.ClientChannel` of one inbound request."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx
        self.modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        self._connection: Any = None if self.modern else ctx.session._connection  # pyright: ignore[reportPrivateUsage]
        caps = self.capabilities = ctx.session.client_capabilities
        self.can_relay = (
            (not self.modern) and caps is not None and (caps.sampling is not None or caps.elicitation is not None)
        )
        meta = ctx.meta
        self.wants_progress = meta is not None and meta.get("progress_token") is not None
        self._log_level: str | None = None if self.modern else self._connection.state.get(_LOG_LEVEL_KEY)
        self.wants_logs = self._log_level is not None

    @property
    def connection(self) -> object | None:
        return self._connection

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._ctx.session.report_progress(progress, total, message)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self._log_level is not None and _LEVELS.index(params.level) < _LEVELS.index(self._log_level):
            return
        await self._ctx.session.send_notification(
            types.LoggingMessageNotification(params=params), related_request_id=self._ctx.request_id
        )

    def _metadata(self) -> ServerMessageMetadata:
        return ServerMessageMetadata(related_request_id=self._ctx.request_id)

    async def elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        try:
            return await self._ctx.session.send_request(
                types.ElicitRequest(params=params), types.ElicitResult, metadata=self._metadata()
            )
        except MCPError as error:
            return error.error

    async def sample(self, params: types.CreateMessageRequestParams) -> SamplingResult:
        try:
            return await self._ctx.session.send_request(
                types.CreateMessageRequest(params=params), types.CreateMessageResult, metadata=self._metadata()
            )
        except MCPError as error:
            return error.error

    async def list_roots(self) -> types.ListRootsResult | types.ErrorData:
        try:
            return await self._ctx.session.send_request(
                types.ListRootsRequest(), types.ListRootsResult, metadata=self._metadata()
            )
        except MCPError as error:
            return error.error

    async def resource_updated(self, uri: str) -> None:
        await self._ctx.session.send_resource_updated(uri)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        if self._connection is not None:
            self._connection.exit_stack.push_async_callback(callback)


class _Connections:
    """Live handshake-era client connections, for list-changed notifications."""

    def __init__(self) -> None:
        self._live: dict[int, tuple[weakref.ref[Any], ServerSession]] = {}

    def remember(self, ctx: Ctx) -> None:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        connection: Any = ctx.session._connection  # pyright: ignore[reportPrivateUsage]
        key = id(connection)
        if key in self._live:
            return
        self._live[key] = (weakref.ref(connection), ctx.session)

        async def forget() -> None:
            self._live.pop(key, None)

        connection.exit_stack.push_async_callback(forget)

    async def broadcast(self, kinds: set[ListKind]) -> None:
        for key, (ref, session) in list(self._live.items()):
            if ref() is None:
                self._live.pop(key, None)
                continue
            if "tools" in kinds:
                await session.send_tool_list_changed()
            if "prompts" in kinds:
                await session.send_prompt_list_changed()
            if "resources" in kinds:
                await session.send_resource_list_changed()


class _PortalServer(Server[Any]):
    """Advertises list-changed notifications, which the portal sends whenever its catalog changes."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(
            prompts_changed=True, resources_changed=True, tools_changed=True
        )
        return super().create_initialization_options(options, experimental_capabilities, extensions)


@contextmanager
def _protocol_errors(*, uri: str | None = None) -> Generator[None]:
    """Translate the gateway's refusals into JSON-RPC errors, in this one place.

    Args:
        uri: The resource a request names, so an unknown one gets the resource-not-found shape.
    """
    try:
        yield
    except UnknownTargetError as error:
        if uri is not None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri}", data={"uri": uri}) from None
        raise MCPError(code=types.INVALID_PARAMS, message=str(error)) from None
    except UpstreamUnavailableError as error:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None


class _Handlers:
    """The MCP request handlers, each a thin translation onto the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.connections = _Connections()
        gateway.add_listener(self.connections.broadcast)

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        self.connections.remember(ctx)
        principal = principal_of(ctx)
        tools = self.gateway.list_tools(principal)
        if principal.kind != "local" and "tools:call" not in principal.scopes:
            # The token may only call read-only tools (portal/auth/_scopes.py): list no others.
            tools = [t for t in tools if t.annotations is not None and t.annotations.read_only_hint is True]
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        self.connections.remember(ctx)
        with _protocol_errors():
            return await self.gateway.call_tool(
                principal_of(ctx),
                params.name,
                params.arguments,
                channel=_RequestChannel(ctx),
                input_responses=params.input_responses,
                request_state=params.request_state,
            )

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        self.connections.remember(ctx)
        return types.ListPromptsResult(prompts=self.gateway.list_prompts(principal_of(ctx)))

    async def get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        with _protocol_errors():
            return await self.gateway.get_prompt(
                principal_of(ctx),
                params.name,
                params.arguments,
                channel=_RequestChannel(ctx),
                input_responses=params.input_responses,
                request_state=params.request_state,
            )

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        self.connections.remember(ctx)
        return types.ListResourcesResult(resources=self.gateway.list_resources(principal_of(ctx)))

    async def list_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = self.gateway.list_resource_templates(principal_of(ctx))
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        uri = str(params.uri)
        with _protocol_errors(uri=uri):
            return await self.gateway.read_resource(
                principal_of(ctx),
                uri,
                channel=_RequestChannel(ctx),
                input_responses=params.input_responses,
                request_state=params.request_state,
            )

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        with _protocol_errors(uri=uri):
            await self.gateway.subscribe(principal_of(ctx), uri, channel=_RequestChannel(ctx))
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        await self.gateway.unsubscribe(principal_of(ctx), str(params.uri), channel=_RequestChannel(ctx))
        return types.EmptyResult()

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        with _protocol_errors():
            return await self.gateway.complete(principal_of(ctx), params.ref, params.argument, params.context)

    async def set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        # Upstream log messages then reach this client through upstream sessions of its own.
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            connection: Any = ctx.session._connection  # pyright: ignore[reportPrivateUsage]
            connection.state[_LOG_LEVEL_KEY] = params.level
        return types.EmptyResult()


def build_mcp_server(gateway: Gateway, *, name: str = "dockyard") -> Server[Any]:
    """The MCP server the portal mounts on ``/mcp``: the federated catalog, through the choke point."""
    handlers = _Handlers(gateway)
    server: Server[Any] = _PortalServer(
        name,
        version="0.1.0",
        instructions="Dockyard portal: the tools of many MCP servers behind one governed endpoint.",
        cache_hints={
            "tools/list": _PRIVATE,
            "prompts/list": _PRIVATE,
            "resources/list": _PRIVATE,
            "resources/templates/list": _PRIVATE,
            "resources/read": _PRIVATE,
        },
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
        on_list_prompts=handlers.list_prompts,
        on_get_prompt=handlers.get_prompt,
        on_list_resources=handlers.list_resources,
        on_list_resource_templates=handlers.list_templates,
        on_read_resource=handlers.read_resource,
        on_subscribe_resource=handlers.subscribe,
        on_unsubscribe_resource=handlers.unsubscribe,
        on_completion=handlers.complete,
    )
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, handlers.set_level)
    # The SDK's OpenTelemetry middleware costs ~5% of the portal's CPU per call even with no exporter
    # installed; the portal's own metrics and audit cover what it would record.
    server.middleware = []
    return server
