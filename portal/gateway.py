"""The choke point: every request to an upstream goes through :class:`Gateway`.

``resolve → policy decision → upstream session → call → normalise → audit + metrics``, the same for
``tools/call``, ``prompts/get``, ``resources/read``, subscriptions and completions; listings are filtered
by the same policy. Front ends (the MCP endpoint, later Code Mode and workflows) call these methods and
never talk to an upstream themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import anyio
import anyio.abc
import mcp_types as types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.shared.exceptions import MCPError
from sqlalchemy import Engine
from sqlmodel import Session

from portal.approvals import APPROVAL_META, Approval, ApprovalStore
from portal.audit import AuditEvent, AuditLog, Status, arguments_digest
from portal.catalog import Catalog, build_catalog
from portal.channel import ClientChannel
from portal.config import Settings
from portal.errors import (
    ApprovalError,
    GrantRequiredError,
    UnknownTargetError,
    UpstreamUnavailableError,
    WithheldToolError,
)
from portal.limits import Limiter
from portal.metrics import Metrics
from portal.pins import PinStore
from portal.policy_seam import AllowLocal, Decision, Policy, Request
from portal.principal import Principal
from portal.redaction import redact, redact_text, redaction_label
from portal.sealing import Sealer, TamperedStateError
from portal.store import UpstreamStatus, utcnow
from portal.upstreams import FORWARDED_CAPABILITIES, SessionHandlers, Upstream

if TYPE_CHECKING:
    from portal.auth._credentials import UpstreamCredentials

__all__ = ["CALLER_META", "Gateway", "ListKind"]

logger = logging.getLogger("dockyard.gateway")

ListKind = Literal["tools", "prompts", "resources"]
_MAX_INPUT_ROUNDS = 8
_LISTING_CACHE = 4096
"""Principals x kinds of listing remembered; past that the cache starts over."""
_R = TypeVar("_R")
_Redactable = TypeVar("_Redactable", types.CallToolResult, types.ReadResourceResult, types.GetPromptResult)
_T = TypeVar("_T")
_Listed = Literal["tools", "prompts", "resources", "templates"]


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class _Relay:
    """Routes server-initiated requests on a dedicated upstream session to the client's current request."""

    def __init__(self) -> None:
        self.channels: list[ClientChannel] = []

    def _current(self) -> ClientChannel | None:
        return self.channels[-1] if self.channels else None

    async def sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        channel = self._current()
        if channel is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="no client request is in progress")
        return await channel.sample(params)

    async def elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        channel = self._current()
        if channel is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="no client request is in progress")
        return await channel.elicit(params)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        channel = self._current()
        if channel is not None:
            await channel.log(params)


CALLER_META = "io.dockyard/caller"
LIMIT_META = "io.dockyard/limit"
"""``_meta`` key of a call refused by a rate limit: the limit (``rule``, ``count``, ``window`` seconds) and
``retry_after`` (seconds; null when the limit could not be checked)."""
"""``_meta`` key of the caller's identity and egress allow-list, sent only to in-process (built-in) servers."""


def _caller_meta(trace: _Trace) -> types.RequestParamsMeta:
    """Who a call is for, for the built-in servers the portal mounts in-process (never for remote ones).

    Only the portal reaches an in-process server, so it may trust this: a client's own ``_meta`` is never
    forwarded upstream.
    """
    egress = list(trace.decision.egress) if trace.decision is not None else []
    return {CALLER_META: {"principal": trace.principal.label, "egress": egress}}  # pyright: ignore[reportReturnType]


def _pending_message(approval: Approval) -> str:
    why = f": {approval.reason}" if approval.reason else ""
    return (
        f"This call needs approval (rule {approval.rule!r}{why}) and is held as {approval.id} until "
        f"{approval.expires_at:%Y-%m-%d %H:%M} UTC. An admin approves it with "
        f"'dockyard approvals approve {approval.id}'; then call again with the same arguments and it runs once."
    )


def _approval_meta(approval: Approval) -> dict[str, Any]:
    return {"id": approval.id, "status": approval.status, "expires_at": approval.expires_at.isoformat()}


def _decision_label(decision: Decision | None) -> str:
    if decision is None or decision.allowed:
        return "allow"
    return f"{'approval' if decision.needs_approval else 'deny'}:{decision.rule}"


@dataclass
class _Trace:
    """What the choke point learns about one request; ``done`` writes its audit record and metrics."""

    gateway: Gateway
    principal: Principal
    method: str
    target: str
    arguments: Mapping[str, Any] | None
    started: float
    server: str | None = None
    upstream_target: str | None = None
    decision: Decision | None = None
    approval: str | None = None
    """The approval this call runs under, once consumed."""
    continued: bool = False
    """An input round of a call already running under its approval (the state is the upstream's)."""
    status: Status = "ok"
    error: str | None = None
    redacted: dict[str, int] = field(default_factory=dict[str, int])
    """Matches the decision's redactions replaced in the result, per pattern (SECURITY.md G6)."""

    def done(self, status: Status, *, error: str | None = None, bytes_out: int = 0) -> None:
        seconds = time.perf_counter() - self.started
        decision = self.decision
        digest, size = arguments_digest(self.arguments)
        self.gateway.metrics.observe(
            method=self.method, target=self.target, server=self.server or "", status=status, seconds=seconds
        )
        self.gateway.audit.record(
            AuditEvent(
                principal=self.principal,
                method=self.method,
                target=self.target,
                decision=redaction_label(
                    f"approved:{self.approval}" if self.approval else _decision_label(decision), self.redacted
                ),
                status=status,
                server=self.server,
                upstream_target=self.upstream_target,
                arguments_digest=digest,
                error=error,
                latency_ms=seconds * 1000,
                bytes_in=size,
                bytes_out=bytes_out,
            )
        )


@dataclass
class _Dedicated:
    session: ClientSession
    relay: _Relay
    close: anyio.Event = field(default_factory=anyio.Event)


class Gateway:
    """The single choke point, and owner of the upstream supervisors and the catalog.

    Args:
        settings: The portal configuration.
        engine: The database.
        metrics: Where to count requests.
        policy: Who may see and use what; defaults to :class:`AllowLocal`.
        sealer: Signs request state handed to clients.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        metrics: Metrics,
        sealer: Sealer,
        policy: Policy | None = None,
        credentials: UpstreamCredentials | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.policy: Policy = policy or AllowLocal()
        self.audit = AuditLog(engine)
        self.pins = PinStore(engine)
        self.approvals = ApprovalStore(engine, ttl=settings.policy.approval_ttl)
        self.limiter = Limiter(engine)
        self._sealer = sealer
        self.credentials = credentials
        self._catalog = Catalog()
        self._rebuild_lock = anyio.Lock()
        self._listeners: list[Callable[[set[ListKind]], Awaitable[None]]] = []
        self._subscribers: dict[str, dict[object, ClientChannel]] = {}
        self._dedicated: dict[tuple[object, str], _Dedicated] = {}
        self._dedicated_lock = anyio.Lock()
        self._listings: dict[tuple[Principal, _Listed], tuple[Catalog, str, list[Any]]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self.ready = anyio.Event()
        log_dir = Path(settings.portal.data_dir) / "logs"
        slots = anyio.CapacityLimiter(settings.portal.max_stdio_children)
        self.upstreams: dict[str, Upstream] = {
            name: Upstream(
                name,
                server,
                source=settings.source,
                log_dir=log_dir,
                stdio_slots=slots,
                health_interval=settings.portal.health_interval,
                max_backoff=settings.portal.retry_max_backoff,
                on_change=self._upstream_changed,
                on_resource_updated=self._resource_updated,
                credentials=credentials,
            )
            for name, server in sorted(settings.servers.items())
        }

    # ----------------------------------------------------------------- lifecycle

    @property
    def catalog(self) -> Catalog:
        """The current catalog snapshot."""
        return self._catalog

    def add_listener(self, listener: Callable[[set[ListKind]], Awaitable[None]]) -> None:
        """Call ``listener`` with the kinds of list that changed after each catalog rebuild."""
        self._listeners.append(listener)

    async def notify_changed(self, kinds: set[ListKind] | None = None) -> None:
        """Tell clients their lists may have changed (e.g. a new policy shows or hides tools)."""
        for listener in list(self._listeners):
            await listener(kinds or {"tools", "prompts", "resources"})

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[Gateway]:
        """Run the upstream supervisors and the audit writer for the duration of the block."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(self.audit.run)
            for upstream in self.upstreams.values():
                tg.start_soon(upstream.run)
            tg.start_soon(self._watch_pins)
            tg.start_soon(self._mark_ready)
            if self.credentials is not None:
                tg.start_soon(self.credentials.run)
            try:
                yield self
            finally:
                for dedicated in self._dedicated.values():
                    dedicated.close.set()
                tg.cancel_scope.cancel()
                self._task_group = None

    async def _mark_ready(self) -> None:
        """Ready once every enabled upstream has had its first chance to connect."""
        while any(u.state == "starting" for u in self.upstreams.values()):
            await anyio.sleep(0.05)
        await self.rebuild()  # a connection's own rebuild may still be queued: ready means listed
        self.ready.set()

    async def _watch_pins(self) -> None:
        """Pick up ``dockyard tools accept`` made by another process while tools are withheld."""
        while True:
            await anyio.sleep(2.0)
            if self._catalog.withheld:
                await self.rebuild()

    async def _upstream_changed(self, upstream: Upstream) -> None:
        self.metrics.upstream_up.labels(upstream.name, upstream.kind).set(1 if upstream.connected else 0)
        await self.rebuild()
        await anyio.to_thread.run_sync(self._write_status, upstream)

    async def rebuild(self) -> None:
        """Rebuild the catalog from the upstreams and notify listeners of what changed."""
        async with self._rebuild_lock:
            before = self._catalog
            after = await anyio.to_thread.run_sync(build_catalog, list(self.upstreams.values()), self.pins)
            self._catalog = after
        changed: set[ListKind] = set()
        if {n: e.definition for n, e in before.tools.items()} != {n: e.definition for n, e in after.tools.items()}:
            changed.add("tools")
        if {n: e.definition for n, e in before.prompts.items()} != {n: e.definition for n, e in after.prompts.items()}:
            changed.add("prompts")
        if before.resources.keys() != after.resources.keys() or before.templates != after.templates:
            changed.add("resources")
        for upstream in self.upstreams.values():
            tools = sum(1 for e in after.tools.values() if e.server == upstream.name)
            self.metrics.upstream_tools.labels(upstream.name).set(tools)
        if changed:
            for listener in list(self._listeners):
                await listener(changed)

    def _write_status(self, upstream: Upstream) -> None:
        catalog = self._catalog
        conflicts = catalog.conflicts.get(upstream.name, ())
        error = upstream.last_error
        if conflicts:
            error = "; ".join(conflicts) + (f"; {error}" if error else "")
        row = UpstreamStatus(
            server=upstream.name,
            kind=upstream.kind,
            state=upstream.state,
            protocol_version=upstream.protocol_version,
            tools=sum(1 for e in catalog.tools.values() if e.server == upstream.name),
            withheld=sum(1 for server, _ in catalog.withheld.values() if server == upstream.name),
            resources=len(upstream.listing.resources),
            prompts=len(upstream.listing.prompts),
            last_error=error,
            last_error_at=None if error is None else utcnow(),
            connected_at=None if upstream.connected_at is None else datetime.fromtimestamp(upstream.connected_at, UTC),
            updated_at=utcnow(),
        )
        with Session(self.engine) as session:
            session.merge(row)
            session.commit()

    # ----------------------------------------------------------------- listings

    def _visible(
        self, principal: Principal, target: str, server: str, annotations: types.ToolAnnotations | None = None
    ) -> bool:
        return self.policy.decide(principal, Request("list", target, server, annotations=annotations)).allowed

    def _listing(self, principal: Principal, kind: _Listed, build: Callable[[Catalog], list[_T]]) -> list[_T]:
        """``build(catalog)``, remembered per principal while the catalog and the policy's listing key stay."""
        key, catalog = self.policy.listing_key, self._catalog
        if key is None:
            return build(catalog)
        cached = self._listings.get((principal, kind))
        if cached is not None and cached[0] is catalog and cached[1] == key:
            return list(cached[2])
        items = build(catalog)
        if len(self._listings) >= _LISTING_CACHE:
            self._listings.clear()
        self._listings[(principal, kind)] = (catalog, key, items)
        return list(items)

    def list_tools(self, principal: Principal) -> list[types.Tool]:
        """The tools ``principal`` may see."""
        return self._listing(
            principal,
            "tools",
            lambda catalog: [
                e.definition
                for e in catalog.tools.values()
                if self._visible(principal, e.name, e.server, e.definition.annotations)
            ],
        )

    def list_prompts(self, principal: Principal) -> list[types.Prompt]:
        """The prompts ``principal`` may see."""
        return self._listing(
            principal,
            "prompts",
            lambda catalog: [
                e.definition for e in catalog.prompts.values() if self._visible(principal, e.name, e.server)
            ],
        )

    def list_resources(self, principal: Principal) -> list[types.Resource]:
        """The resources ``principal`` may see."""
        return self._listing(
            principal,
            "resources",
            lambda catalog: [
                r.definition for r in catalog.resources.values() if self._visible(principal, r.uri, r.server)
            ],
        )

    def list_resource_templates(self, principal: Principal) -> list[types.ResourceTemplate]:
        """The resource templates ``principal`` may see."""
        return self._listing(
            principal,
            "templates",
            lambda catalog: [
                t.definition for t in catalog.templates if self._visible(principal, t.definition.uri_template, t.server)
            ],
        )

    # ----------------------------------------------------------------- the choke point

    def _trace(
        self, principal: Principal, method: str, target: str, arguments: Mapping[str, Any] | None = None
    ) -> _Trace:
        return _Trace(self, principal, method, target, arguments, time.perf_counter())

    async def _session_for(self, upstream: Upstream, channel: ClientChannel) -> tuple[ClientSession, _Relay | None]:
        """The shared session, or this client's own one when the upstream may call back into the client."""
        shared = upstream.session()
        # Most servers ask for input with server requests (ctx.elicit), which only a handshake-era session
        # carries, and mid-request logs have no owner on a shared session: so a handshake-era client that
        # can answer, or asked for logs, gets its own session unless the server is set to "shared".
        needs_own = channel.wants_logs or channel.can_relay
        if (
            not needs_own
            or channel.connection is None
            or upstream.kind == "inprocess"
            or upstream.settings.client_sessions == "shared"
        ):
            return shared, None
        key = (channel.connection, upstream.name)
        async with self._dedicated_lock:
            dedicated = self._dedicated.get(key)
            if dedicated is None:
                try:
                    dedicated = await self._open_dedicated(upstream)
                except UpstreamUnavailableError as error:
                    logger.warning("using the shared session of %s for a client: %s", upstream.name, error)
                    return shared, None
                self._dedicated[key] = dedicated

                async def forget() -> None:
                    self._dedicated.pop(key, None)
                    dedicated.close.set()

                channel.on_close(forget)
        return dedicated.session, dedicated.relay

    async def _open_dedicated(self, upstream: Upstream) -> _Dedicated:
        assert self._task_group is not None
        relay = _Relay()
        handlers = SessionHandlers(sampling=relay.sampling, elicitation=relay.elicitation, logging=relay.logging)
        holder: list[_Dedicated] = []

        async def hold(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with upstream.dedicated_session(handlers) as session:
                holder.append(_Dedicated(session, relay))
                task_status.started()
                await holder[0].close.wait()

        await self._task_group.start(hold)
        return holder[0]

    def _missing_tool(self, trace: _Trace) -> types.CallToolResult:
        """Explain a call to a tool not in the catalog: withheld (G3), its server down, or unknown."""
        name = trace.target
        held = self._catalog.withheld.get(name)
        if held is not None and self._visible(trace.principal, name, held[0]):
            trace.server, trace.upstream_target = held
            message = str(
                WithheldToolError(
                    f"tool {name!r} changed on server {held[0]!r} and is withheld until an admin runs "
                    f"'dockyard tools accept {held[0]} {held[1]}'"
                )
            )
            trace.done("withheld", error=message)
            return _error_result(message)
        down = self._catalog.offline.get(name)
        if down is not None and self._visible(trace.principal, name, down):
            upstream = self.upstreams[down]
            trace.server = down
            message = f"server {down!r} is {upstream.state}" + (
                f": {upstream.last_error}" if upstream.last_error else ""
            )
            trace.done("unavailable", error=message)
            return _error_result(message)
        trace.done("unknown")
        raise UnknownTargetError(f"unknown tool: {name!r}")

    def _unseal(self, trace: _Trace, request_state: str | None) -> str | None:
        """The upstream's own state inside a ``requestState`` this portal issued (SECURITY.md T5)."""
        if request_state is None:
            return None
        upstream_state = self._open(trace, request_state).get("u")
        return upstream_state if isinstance(upstream_state, str) else None

    def _open(self, trace: _Trace, request_state: str) -> dict[str, Any]:
        """A ``requestState`` this portal sealed for this principal and request; else a protocol error (T5)."""
        try:
            sealed = self._sealer.open(request_state)
        except TamperedStateError as error:
            trace.done("denied", error=str(error))
            raise MCPError(code=types.INVALID_PARAMS, message=str(error)) from None
        if sealed.get("p") != trace.principal.label or (sealed.get("m"), sealed.get("t")) != (
            trace.method,
            trace.target,
        ):
            trace.done("denied", error="requestState belongs to another request")
            raise MCPError(code=types.INVALID_PARAMS, message="requestState belongs to another request")
        return sealed

    def _seal(self, trace: _Trace, result: types.InputRequiredResult) -> types.InputRequiredResult:
        """Wrap the upstream's state so only this principal can resume only this request with it (T5)."""
        state = {"p": trace.principal.label, "m": trace.method, "t": trace.target, "u": result.request_state}
        if trace.approval is not None:  # the approved call continues across its input rounds
            state["ok"] = trace.approval
        return result.model_copy(update={"request_state": self._sealer.seal(state)})

    async def _hold(
        self, trace: _Trace, arguments: dict[str, Any] | None, channel: ClientChannel, request_state: str | None
    ) -> types.CallToolResult | types.InputRequiredResult | None:
        """Hold a call that needs approval; None when an approval for exactly this call was just used up.

        The caller gets a pending answer naming the approval: an input-required result with a sealed
        ``requestState`` for a 2026-07-28 client that can show a message (retrying after the admin decides
        runs the call), otherwise an error result it can act on by calling again.
        """
        decision = trace.decision
        assert decision is not None and trace.server is not None
        sealed = self._open(trace, request_state) if request_state is not None else {}
        if isinstance(approved := sealed.get("ok"), str) and await self._continues(approved, arguments):
            # A later input round of a call that already ran under its approval: it goes on, not held again.
            trace.approval, trace.continued = approved, True
            trace.decision = Decision(
                allowed=True, rule=decision.rule, redactions=decision.redactions, egress=decision.egress
            )
            return None
        approval = await self.approvals.hold(
            trace.principal,
            method=trace.method,
            target=trace.target,
            server=trace.server,
            arguments=arguments,
            rule=decision.rule,
            reason=decision.reason,
            policy_version=self.policy.version,
        )
        if approval.status == "approved":
            # Limits first: a call refused by a limit keeps its approval for the retry. (A call that loses the
            # race for the approval below has spent a count without running: the rarer, cheaper failure.)
            if decision.limits and (limited := await self._admit(trace)) is not None:
                return limited
            if await self.approvals.consume(approval.id):
                trace.approval = approval.id
                trace.decision = Decision(  # limits admitted above
                    allowed=True, rule=decision.rule, redactions=decision.redactions, egress=decision.egress
                )
                return None
        if approval.status == "denied":
            note = f": {approval.note}" if approval.note else ""
            message = f"denied by {approval.decided_by} (approval {approval.id}){note}"
            trace.done("denied", error=message)
            return _error_result(message)
        if approval.status == "approved":  # another call used it between our read and our update
            return await self._hold(trace, arguments, channel, None)
        trace.done("pending", error=f"awaiting approval {approval.id}")
        message = _pending_message(approval)
        caps = channel.capabilities
        if channel.modern and caps is not None and caps.elicitation is not None:
            ask = types.ElicitRequest(
                params=types.ElicitRequestFormParams(
                    message=f"{message}\nAccept to check again.",
                    requested_schema={"type": "object", "properties": {}},
                )
            )
            state = {"p": trace.principal.label, "m": trace.method, "t": trace.target, "a": approval.id}
            return types.InputRequiredResult(input_requests={"approval": ask}, request_state=self._sealer.seal(state))
        result = _error_result(message)
        return result.model_copy(update={"meta": {APPROVAL_META: _approval_meta(approval)}})

    async def _continues(self, approval_id: str, arguments: dict[str, Any] | None) -> bool:
        """Whether ``approval_id`` was used by a call with exactly these arguments under the policy in force."""
        try:
            approval = await anyio.to_thread.run_sync(self.approvals.get, approval_id)
        except ApprovalError:
            return False
        return (
            approval.status == "consumed"
            and approval.arguments == arguments
            and approval.policy_version == self.policy.version
        )

    async def call_tool(
        self,
        principal: Principal,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        channel: ClientChannel,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Call a tool on behalf of ``principal``.

        Tool failures, denials and unavailable upstreams come back as ``isError`` results.

        Raises:
            UnknownTargetError: No tool of that name is visible to ``principal``.
            MCPError: The upstream answered with a protocol error (relayed as it is), or ``request_state``
                was not issued by this portal for this call.
        """
        trace = self._trace(principal, "tools/call", name, arguments)
        entry = self._catalog.tools.get(name)
        if entry is None:
            return self._missing_tool(trace)
        trace.server, trace.upstream_target = entry.server, entry.upstream_name
        annotations = entry.definition.annotations
        trace.decision = self.policy.decide(
            principal, Request("tools/call", name, entry.server, arguments, annotations)
        )
        if not trace.decision.allowed:
            if not self._visible(principal, name, entry.server, annotations):
                trace.done("unknown")
                raise UnknownTargetError(f"unknown tool: {name!r}")
            if not trace.decision.needs_approval:
                reason = f": {trace.decision.reason}" if trace.decision.reason else ""
                message = f"denied by policy ({trace.decision.rule}){reason}"
                trace.done("denied", error=message)
                return _error_result(message)
            held = await self._hold(trace, arguments, channel, request_state)
            if held is not None:
                return held
            if not trace.continued:
                input_responses = request_state = None  # answers to the portal's own approval round
        upstream_state = self._unseal(trace, request_state)
        if trace.decision.limits and (limited := await self._admit(trace)) is not None:
            return limited
        upstream = self.upstreams[entry.server]
        result = await self._invoke(trace, upstream, channel, arguments, input_responses, upstream_state)
        if not isinstance(result, types.InputRequiredResult):
            result = self._redact(trace, result)  # before the error text below is taken from it
            if upstream.kind == "inprocess":
                self._audit_egress(trace, result)
        if isinstance(result, types.InputRequiredResult):
            result = self._seal(trace, result)
        elif result.is_error and trace.status == "ok":
            trace.status = "error"
            trace.error = next((c.text for c in result.content if isinstance(c, types.TextContent)), None)
        trace.done(
            trace.status, error=trace.error, bytes_out=len(result.model_dump_json(by_alias=True, exclude_none=True))
        )
        return result

    def _audit_egress(self, trace: _Trace, result: types.CallToolResult) -> None:
        """Audit each request a built-in server's egress proxy refused during the call (``egress_blocked``).

        Built-in servers that reach the network for a caller (the sandbox) report refused requests in their
        structured result as ``"METHOD host:port: reason"``; each becomes a ``denied`` record of method
        ``egress`` naming the host, so blocked egress shows up in ``dockyard audit`` like any refusal.
        """
        structured: dict[str, Any] = result.structured_content or {}
        blocked = structured.get("egress_blocked")
        if not isinstance(blocked, list):
            return
        for entry in cast(list[object], blocked):
            if not isinstance(entry, str):
                continue
            request, _, reason = entry.partition(": ")
            target = request.rpartition(" ")[2] or request
            self.audit.record(
                AuditEvent(
                    principal=trace.principal,
                    method="egress",
                    target=target[:512],
                    decision="deny:egress",
                    status="denied",
                    server=trace.server,
                    upstream_target=trace.upstream_target,
                    error=f"{request}: {reason}" if reason else request,
                )
            )

    async def _admit(self, trace: _Trace) -> types.CallToolResult | None:
        """Count the call against its limits; refused: the error result the caller gets, audited as limited."""
        assert trace.decision is not None
        refusal = await self.limiter.admit(
            trace.principal, target=trace.target, server=trace.server or "", limits=trace.decision.limits
        )
        if refusal is None:
            return None
        trace.done("limited", error=refusal.message)
        limit = refusal.limit
        meta = {"rule": limit.rule, "count": limit.count, "window": limit.window, "retry_after": refusal.retry_after}
        return _error_result(refusal.message).model_copy(update={"meta": {LIMIT_META: meta}})

    def _redact(self, trace: _Trace, result: _Redactable) -> _Redactable:
        """Apply the decision's redactions to what the upstream returned, and to error text noted on ``trace``."""
        redactions = trace.decision.redactions if trace.decision is not None else ()
        if not redactions:
            return result
        result, counts = redact(result, redactions)
        if trace.error:
            trace.error, more = redact_text(trace.error, redactions)
            counts = {n: counts.get(n, 0) + more.get(n, 0) for n in {*counts, *more}}
        for name, count in counts.items():
            trace.redacted[name] = trace.redacted.get(name, 0) + count
        return result

    def _redact_error(self, trace: _Trace, error: MCPError) -> MCPError:
        """An upstream's protocol error with the decision's redactions applied to its message (and no data)."""
        redactions = trace.decision.redactions if trace.decision is not None else ()
        if not redactions:
            return error
        message, counts = redact_text(error.error.message, redactions)
        for name, count in counts.items():
            trace.redacted[name] = trace.redacted.get(name, 0) + count
        return MCPError(code=error.error.code, message=message)

    async def _invoke(
        self,
        trace: _Trace,
        upstream: Upstream,
        channel: ClientChannel,
        arguments: dict[str, Any] | None,
        input_responses: types.InputResponses | None,
        upstream_state: str | None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Call the upstream; connection failures and timeouts become error results, noted on ``trace``."""
        timeout = upstream.settings.call_timeout
        try:
            session, relay = await self._session_of(upstream, channel, trace.principal)
            if relay is not None:
                relay.channels.append(channel)
            try:
                progress = channel.progress if channel.wants_progress else None

                async def send(
                    responses: types.InputResponses | None, state: str | None
                ) -> types.CallToolResult | types.InputRequiredResult:
                    return await session.call_tool(
                        trace.upstream_target or "",
                        arguments,
                        read_timeout_seconds=timeout,
                        progress_callback=progress,
                        input_responses=responses,
                        request_state=state,
                        meta=meta,
                        allow_input_required=True,
                    )

                meta = _caller_meta(trace) if upstream.kind == "inprocess" else None
                return await self._drive(channel, send, input_responses, upstream_state)
            finally:
                if relay is not None:
                    relay.channels.remove(channel)
        except GrantRequiredError as error:
            return self._grant_required(trace, channel, error)
        except UpstreamUnavailableError as error:
            trace.status, trace.error = "unavailable", str(error)
        except MCPError as error:
            if (dead := await self._dead_grant(upstream, trace.principal)) is not None:
                return self._grant_required(trace, channel, dead)
            if error.code == types.CONNECTION_CLOSED:
                upstream.mark_broken(error)
                trace.status, trace.error = "unavailable", f"server {upstream.name!r} closed the connection"
            elif error.code == types.REQUEST_TIMEOUT:
                trace.status, trace.error = "error", f"server {upstream.name!r} did not answer within {timeout}s"
            else:
                error = self._redact_error(trace, error)
                trace.done("error", error=error.error.message)
                raise error from None
        except RuntimeError as error:  # the SDK's output-schema validation of the upstream's result
            trace.status, trace.error = "error", f"server {upstream.name!r} returned an invalid result: {error}"
        return _error_result(trace.error or "call failed")

    async def _session_of(
        self, upstream: Upstream, channel: ClientChannel, principal: Principal
    ) -> tuple[ClientSession, _Relay | None]:
        """The session a call goes through: for an ``auth = "oauth"`` upstream, the caller's own (R4, U2)."""
        if self.credentials is not None and self.credentials.uses_oauth(upstream):
            return await self.credentials.user_session(upstream, principal.label), None
        return await self._session_for(upstream, channel)

    async def _dead_grant(self, upstream: Upstream, principal: Principal) -> GrantRequiredError | None:
        """After a failed call to an ``auth = "oauth"`` upstream: the caller's grant, if it died (U2)."""
        if self.credentials is None or not self.credentials.uses_oauth(upstream):
            return None
        return await self.credentials.dead_grant(upstream, principal.label)

    def _grant_error(self, trace: _Trace, channel: ClientChannel, error: GrantRequiredError) -> MCPError:
        """The consent link as a protocol error (prompts, resources); the audit record gets no link."""
        assert self.credentials is not None
        trace.done("error", error=str(error))
        return self.credentials.grant_required_error(error, channel)

    def _grant_required(self, trace: _Trace, channel: ClientChannel, error: GrantRequiredError) -> types.CallToolResult:
        """The consent link for the caller (U2); the audit record gets the message, which has no link."""
        assert self.credentials is not None
        trace.status, trace.error = "error", str(error)
        try:
            return self.credentials.grant_required_result(error, channel)
        except MCPError:  # URL-mode elicitation: a protocol error carrying the link
            trace.done("error", error=str(error))
            raise

    async def _drive(
        self,
        channel: ClientChannel,
        send: Callable[[types.InputResponses | None, str | None], Awaitable[_R | types.InputRequiredResult]],
        input_responses: types.InputResponses | None,
        request_state: str | None,
    ) -> _R | types.InputRequiredResult:
        """Send a request upstream as the client; answer input-required rounds for a handshake-era client.

        A 2026-07-28 client gets input-required results back (sealed by the caller); a handshake-era
        client cannot see them, so the portal asks it itself, mid-request, and retries upstream.
        """
        caps = channel.capabilities
        token = FORWARDED_CAPABILITIES.set(
            caps.model_dump(by_alias=True, mode="json", exclude_none=True) if caps else {}
        )
        try:
            for _ in range(_MAX_INPUT_ROUNDS):
                result = await send(input_responses, request_state)
                if not isinstance(result, types.InputRequiredResult) or channel.modern:
                    return result
                input_responses = await self._answer_input_requests(result, channel)
                request_state = result.request_state
        finally:
            FORWARDED_CAPABILITIES.reset(token)
        raise MCPError(
            code=types.INTERNAL_ERROR, message=f"the server asked for input more than {_MAX_INPUT_ROUNDS} times"
        )

    async def _answer_input_requests(
        self, result: types.InputRequiredResult, channel: ClientChannel
    ) -> types.InputResponses:
        responses: types.InputResponses = {}
        for key, request in (result.input_requests or {}).items():
            if isinstance(request, types.ElicitRequest):
                answer: Any = await channel.elicit(request.params)
            elif isinstance(request, types.CreateMessageRequest):
                answer = await channel.sample(request.params)
            else:
                answer = await channel.list_roots()
            if isinstance(answer, types.ErrorData):
                raise MCPError(code=answer.code, message=answer.message)
            responses[key] = answer
        return responses

    def _route(self, trace: _Trace, server: str | None, *, request: Request | None) -> str:
        """Decide a non-tool request; returns the server, or raises when it is unknown or denied."""
        if server is None or request is None or server not in self.upstreams:
            trace.done("unknown")
            raise UnknownTargetError(f"unknown {trace.method.split('/')[0].rstrip('s')}: {trace.target!r}")
        trace.server = server
        trace.decision = self.policy.decide(trace.principal, request)
        if not trace.decision.allowed:
            trace.done("denied" if self._visible(trace.principal, trace.target, server) else "unknown")
            raise UnknownTargetError(f"unknown {trace.method.split('/')[0].rstrip('s')}: {trace.target!r}")
        return server

    async def _relay(
        self,
        trace: _Trace,
        server: str,
        channel: ClientChannel,
        send: Callable[
            [ClientSession, types.InputResponses | None, str | None], Awaitable[_R | types.InputRequiredResult]
        ],
        input_responses: types.InputResponses | None,
        request_state: str | None,
    ) -> _R | types.InputRequiredResult:
        """Send a prompt or resource request upstream for ``trace.principal``; its errors are audited and relayed.

        Raises:
            MCPError: The upstream's error (redacted), or a consent link for an upstream the caller must grant.
            UpstreamUnavailableError: The server is down.
        """
        upstream_state = self._unseal(trace, request_state)
        try:
            session, _ = await self._session_of(self.upstreams[server], channel, trace.principal)
            return await self._drive(channel, partial(send, session), input_responses, upstream_state)
        except MCPError as error:
            error = self._redact_error(trace, error)
            trace.done("error", error=str(error))
            raise error from None
        except GrantRequiredError as error:
            raise self._grant_error(trace, channel, error) from None
        except UpstreamUnavailableError as error:
            trace.done("error", error=str(error))
            raise

    async def get_prompt(
        self,
        principal: Principal,
        name: str,
        arguments: dict[str, str] | None,
        *,
        channel: ClientChannel,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Get a prompt on behalf of ``principal``.

        Raises:
            UnknownTargetError: No prompt of that name is visible to ``principal``.
            UpstreamUnavailableError: Its server is down.
            MCPError: The upstream's own error, relayed.
        """
        trace = self._trace(principal, "prompts/get", name, arguments)
        entry = self._catalog.prompts.get(name)
        request = None if entry is None else Request("prompts/get", name, entry.server, arguments)
        server = self._route(trace, entry.server if entry else None, request=request)
        assert entry is not None
        trace.upstream_target = entry.upstream_name

        def send(
            session: ClientSession, responses: types.InputResponses | None, state: str | None
        ) -> Awaitable[types.GetPromptResult | types.InputRequiredResult]:
            return session.get_prompt(
                entry.upstream_name,
                arguments,
                input_responses=responses,
                request_state=state,
                allow_input_required=True,
            )

        result = await self._relay(trace, server, channel, send, input_responses, request_state)
        if isinstance(result, types.InputRequiredResult):
            trace.done("ok")
            return self._seal(trace, result)
        result = self._redact(trace, result)
        trace.done("ok")
        return result

    async def read_resource(
        self,
        principal: Principal,
        uri: str,
        *,
        channel: ClientChannel,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        """Read a resource on behalf of ``principal``.

        Raises:
            UnknownTargetError: No server serves ``uri`` for this principal.
            UpstreamUnavailableError: Its server is down.
            MCPError: The upstream's own error, relayed.
        """
        trace = self._trace(principal, "resources/read", uri)
        route = self._catalog.resolve_resource(uri)
        request = None if route is None else Request("resources/read", uri, route[0])
        server = self._route(trace, route[0] if route else None, request=request)
        assert route is not None
        upstream_uri = trace.upstream_target = route[1]

        def send(
            session: ClientSession, responses: types.InputResponses | None, state: str | None
        ) -> Awaitable[types.ReadResourceResult | types.InputRequiredResult]:
            return session.read_resource(
                upstream_uri, input_responses=responses, request_state=state, allow_input_required=True
            )

        result = await self._relay(trace, server, channel, send, input_responses, request_state)
        if isinstance(result, types.InputRequiredResult):
            trace.done("ok")
            return self._seal(trace, result)
        if upstream_uri != uri:
            contents = [c.model_copy(update={"uri": uri}) if str(c.uri) == upstream_uri else c for c in result.contents]
            result = result.model_copy(update={"contents": contents})
        result = self._redact(trace, result)
        trace.done("ok")
        return result

    async def subscribe(self, principal: Principal, uri: str, *, channel: ClientChannel) -> None:
        """Subscribe the caller's connection to updates of ``uri``.

        Raises:
            UnknownTargetError: No server serves ``uri`` for this principal, or the caller is stateless.
            UpstreamUnavailableError: Its server is down.
            MCPError: The upstream's own error, relayed.
        """
        trace = self._trace(principal, "resources/subscribe", uri)
        route = self._catalog.resolve_resource(uri) if channel.connection is not None else None
        request = None if route is None else Request("resources/subscribe", uri, route[0])
        server = self._route(trace, route[0] if route else None, request=request)
        assert route is not None
        trace.upstream_target = route[1]
        subscribers = self._subscribers.setdefault(uri, {})
        if not subscribers:
            try:
                await self.upstreams[server].subscribe(route[1])
            except (UpstreamUnavailableError, MCPError) as error:
                del self._subscribers[uri]
                trace.done("error", error=str(error))
                raise
        if channel.connection not in subscribers:
            subscribers[channel.connection] = channel

            async def drop() -> None:
                await self.unsubscribe(principal, uri, channel=channel)

            channel.on_close(drop)
        trace.done("ok")

    async def unsubscribe(self, principal: Principal, uri: str, *, channel: ClientChannel) -> None:
        """End the caller's subscription to ``uri`` (a no-op when there is none)."""
        subscribers = self._subscribers.get(uri)
        if not subscribers or subscribers.pop(channel.connection, None) is None or subscribers:
            return
        del self._subscribers[uri]
        route = self._catalog.resolve_resource(uri)
        upstream = None if route is None else self.upstreams.get(route[0])
        if route is not None and upstream is not None:
            await upstream.unsubscribe(route[1])

    async def _resource_updated(self, upstream: Upstream, upstream_uri: str) -> None:
        for uri, subscribers in list(self._subscribers.items()):
            if self._catalog.resolve_resource(uri) == (upstream.name, upstream_uri):
                for channel in list(subscribers.values()):
                    await channel.resource_updated(uri)

    async def complete(
        self,
        principal: Principal,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.CompleteResult:
        """Relay a completion request to the server that owns the prompt or template.

        Raises:
            UnknownTargetError: The prompt or template is not visible to ``principal``.
            UpstreamUnavailableError: Its server is down.
            MCPError: The upstream's own error, relayed.
        """
        if isinstance(ref, types.PromptReference):
            trace = self._trace(principal, "completion/complete", ref.name)
            entry = self._catalog.prompts.get(ref.name)
            server = entry.server if entry else None
            upstream_ref: types.PromptReference | types.ResourceTemplateReference = (
                ref if entry is None else ref.model_copy(update={"name": entry.upstream_name})
            )
        else:
            trace = self._trace(principal, "completion/complete", ref.uri)
            server = self._catalog.server_of_template(ref.uri)
            upstream_ref = ref
        request = None if server is None else Request("completion/complete", trace.target, server)
        server = self._route(trace, server, request=request)
        try:
            result = (
                await self.upstreams[server]
                .session()
                .complete(
                    upstream_ref,
                    {"name": argument.name, "value": argument.value},
                    context.arguments if context else None,
                )
            )
        except (UpstreamUnavailableError, MCPError) as error:
            trace.done("error", error=str(error))
            raise
        trace.done("ok")
        return result

    def servers(self) -> Sequence[Upstream]:
        """The upstream supervisors, by name."""
        return list(self.upstreams.values())
