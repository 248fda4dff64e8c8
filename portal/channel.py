"""The caller's side of one request: how the choke point relays what an upstream sends back mid-request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import mcp_types as types

__all__ = ["NULL_CHANNEL", "ClientChannel", "NullChannel"]

SamplingResult = types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData


class ClientChannel(Protocol):
    """Implemented by each front end (the MCP endpoint; later Code Mode and workflows)."""

    @property
    def connection(self) -> object | None:
        """Identity of the client's connection for per-connection upstream sessions; None when stateless."""
        ...

    @property
    def can_relay(self) -> bool:
        """Whether the client can answer server-initiated requests (sampling, elicitation) during a call."""
        ...

    @property
    def modern(self) -> bool:
        """Whether the client speaks 2026-07-28, where input arrives through input-required results."""
        ...

    @property
    def capabilities(self) -> types.ClientCapabilities | None:
        """What the client can answer (sampling, elicitation, roots), as it declared it."""
        ...

    @property
    def wants_logs(self) -> bool:
        """Whether a handshake-era client asked for log messages (``logging/setLevel``)."""
        ...

    @property
    def wants_progress(self) -> bool:
        """Whether the client asked for progress notifications on this request."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Relay a progress notification for this request."""
        ...

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        """Relay an upstream log message."""
        ...

    async def elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        """Ask the client's user for input."""
        ...

    async def sample(self, params: types.CreateMessageRequestParams) -> SamplingResult:
        """Ask the client's model for a completion."""
        ...

    async def list_roots(self) -> types.ListRootsResult | types.ErrorData:
        """Ask the client for its roots."""
        ...

    async def resource_updated(self, uri: str) -> None:
        """Tell a subscribed client that a resource changed."""
        ...

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` when the client's connection ends."""
        ...


_NO_CLIENT = types.ErrorData(code=types.INVALID_REQUEST, message="the caller cannot answer server requests")


class NullChannel:
    """A caller with no way back: progress and logs are dropped, input requests are refused."""

    connection: object | None = None
    can_relay = False
    modern = False
    wants_progress = False
    wants_logs = False
    capabilities: types.ClientCapabilities | None = None

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Drop progress."""

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        """Drop logs."""

    async def elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        """Refuse."""
        return _NO_CLIENT

    async def sample(self, params: types.CreateMessageRequestParams) -> SamplingResult:
        """Refuse."""
        return _NO_CLIENT

    async def list_roots(self) -> types.ListRootsResult | types.ErrorData:
        """Refuse."""
        return _NO_CLIENT

    async def resource_updated(self, uri: str) -> None:
        """Drop."""

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Nothing to close."""


NULL_CHANNEL = NullChannel()
