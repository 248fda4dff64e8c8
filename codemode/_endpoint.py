"""The ``/mcp/code`` endpoint: two tools, ``search`` and ``execute``, over the SDK a caller may see.

The SDK is generated from ``gateway.list_tools(principal)`` and cached per catalog snapshot and visible
set; each SDK function targets the tool's exposed name, and the executor's hook calls
``gateway.call_tool(principal, name, arguments, channel=NULL_CHANNEL)`` — so every SDK call passes the
choke point (policy, credentials, audit) with the caller's identity. The two tool descriptions are fixed
text: their size does not grow with the catalog.

A call the policy holds for approval pauses the script at that call: ``execute`` answers ``paused`` with the
approval and a run id, the paused run is kept in the database (:mod:`codemode._runs`), and
``execute(resume=RUN)`` continues it once an admin has decided — after a restart too — without repeating
any earlier call.

``execute(runtime="python")`` runs the script in full CPython in the caller's sandbox box instead
(:mod:`codemode._python`); its SDK calls come back over a socket into the same hook.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, cast

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from codemode._executor import ApprovalPending, ExecuteResult, MontyExecutor, PausedState, ToolError
from codemode._python import PythonRuntime, PythonRuntimeError
from codemode._runs import RunError, RunStore
from codemode._sdk import GeneratedSdk, ToolCaller, generate_sdk
from codemode._search import Detail, SdkIndex
from portal.approvals import APPROVAL_META
from portal.catalog import Catalog
from portal.channel import NULL_CHANNEL
from portal.endpoint import Ctx, principal_of
from portal.errors import ApprovalError, UnknownTargetError
from portal.gateway import Gateway
from portal.principal import Principal

__all__ = ["EXECUTE_DESCRIPTION", "SEARCH_DESCRIPTION", "build_code_server"]

SEARCH_DESCRIPTION = """\
Find functions of the typed Python SDK over every tool you may use. One namespace per MCP server, one \
async function per tool, keyword arguments only: `await <namespace>.<function>(name=value)`.
Pass words describing what you want to do; get the best matches as `names` (one line each), \
`signatures` (default: signature and summary) or `full` stubs (docstrings, parameters, hints, and the \
TypedDicts they use). An exact function name (`namespace.function`) returns its full stub. Search before \
you write code for `execute`."""

EXECUTE_DESCRIPTION = """\
Run a Python script against the SDK found with `search`, and get back the value of its last expression, \
what it printed, and the tool calls it made (tool, ok, ms; per tool past 10). Use it to chain several \
tool calls and to filter large results down to what you need before they reach you.
The script runs in a sandboxed Python subset (Monty): top-level `await` works; the SDK namespaces are \
already imported (a server named like a module gets a `_`: `json_`); there is no filesystem, network or \
environment access, and only the standard library's pure modules (json, re, math, datetime, ...). The \
script is type-checked against the SDK first: type errors come back with line numbers and nothing runs. \
A tool call that fails raises `ToolError` ("<tool>: <error>"), which the script may catch. Optional \
arguments default to OMIT (not sent); None is sent as null. Limits: CPU time, memory, number of tool \
calls and output size; output past the limit is cut and `truncated` is set. A call that needs an \
admin's approval pauses the script (`status: paused`); once it is decided, `execute` with `resume` set \
to the run id continues from that call. `runtime: "python"` runs full CPython and its standard library \
instead (sqlite3, classes, ...) in a sandbox without network; it starts slower and cannot pause."""

_SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What you want to do, or an exact function name."},
        "detail": {"type": "string", "enum": ["names", "signatures", "full"], "default": "signatures"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
    },
    "required": ["query"],
}
_EXECUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "The Python script to run."},
        "resume": {"type": "string", "description": "The run id of a paused run to continue (instead of code)."},
        "runtime": {"type": "string", "enum": ["monty", "python"], "default": "monty"},
    },
}
_TOOLS = [
    types.Tool(name="search", description=SEARCH_DESCRIPTION, input_schema=_SEARCH_SCHEMA),
    types.Tool(name="execute", description=EXECUTE_DESCRIPTION, input_schema=_EXECUTE_SCHEMA),
]
_CACHE_SIZE = 64


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _value(result: types.CallToolResult) -> object:
    """A tool's result as the SDK returns it: structured content, else its text, else its content blocks."""
    if result.structured_content is not None:
        return result.structured_content
    if all(isinstance(c, types.TextContent) for c in result.content):
        return _text(result)
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]


class _CodeMode:
    def __init__(self, gateway: Gateway, executor: MontyExecutor, python: PythonRuntime | None) -> None:
        self.gateway = gateway
        self.executor = executor
        self.python = python
        self.runs = RunStore(gateway.engine)
        self._catalog: Catalog | None = None
        self._cache: dict[tuple[str, ...], tuple[GeneratedSdk, SdkIndex]] = {}

    def sdk_for(self, principal: Principal) -> tuple[GeneratedSdk, SdkIndex]:
        """The SDK of the tools ``principal`` may see, generated once per catalog snapshot and visible set."""
        catalog = self.gateway.catalog
        visible = tuple(tool.name for tool in self.gateway.list_tools(principal) if tool.name in catalog.tools)
        if catalog is not self._catalog:
            self._catalog, self._cache = catalog, {}
        cached = self._cache.get(visible)
        if cached is None:
            servers: dict[str, list[types.Tool]] = {}
            exposed: dict[tuple[str, str], str] = {}
            for name in visible:
                entry = catalog.tools[name]
                servers.setdefault(entry.server, []).append(
                    entry.definition.model_copy(update={"name": entry.upstream_name})
                )
                exposed[entry.server, entry.upstream_name] = name
            sdk = generate_sdk(servers, target=lambda server, tool: exposed[server, tool.name])
            cached = (sdk, SdkIndex(sdk))
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[visible] = cached
        return cached

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=_TOOLS)

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        principal = principal_of(ctx)
        if params.name == "search":
            return self.search(principal, arguments)
        if params.name == "execute":
            return await self.execute(principal, arguments)
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool: {params.name!r}; use 'search' or 'execute'")

    def search(self, principal: Principal, arguments: dict[str, Any]) -> types.CallToolResult:
        query, detail, limit = arguments.get("query"), arguments.get("detail", "signatures"), arguments.get("limit", 8)
        if not isinstance(query, str) or not query.strip():
            return _error(f"'query' must be a non-empty string, got {query!r}")
        if detail not in ("names", "signatures", "full"):
            return _error(f"'detail' must be 'names', 'signatures' or 'full', got {detail!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
            return _error(f"'limit' must be an integer from 1 to 50, got {limit!r}")
        _, index = self.sdk_for(principal)
        chosen: Detail = detail
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=index.search(query, detail=chosen, limit=limit))]
        )

    async def execute(self, principal: Principal, arguments: dict[str, Any]) -> types.CallToolResult:
        code, resume, runtime = arguments.get("code"), arguments.get("resume"), arguments.get("runtime", "monty")
        if runtime not in ("monty", "python"):
            return _error(f"'runtime' must be 'monty' or 'python', got {runtime!r}")
        if resume is not None:
            if not isinstance(resume, str) or code is not None:
                return _error(f"'resume' must be the run id of a paused run, without 'code'; got {resume!r}")
            return await self.resume(principal, resume)
        if not isinstance(code, str) or not code.strip():
            return _error(f"'code' must be a non-empty string of Python, got {code!r}")
        sdk, _ = self.sdk_for(principal)
        if runtime == "python":
            if self.python is None:
                return _error("runtime 'python' is off on this portal ([codemode] python_backend = \"none\")")
            try:
                outcome = await self.python.run(sdk, code, self._caller(principal), owner=principal.label)
            except PythonRuntimeError as error:
                return _error(str(error))
            return _answer(outcome)
        return await self._answer(principal, await self.executor.run(sdk, code, self._caller(principal)))

    async def resume(self, principal: Principal, run_id: str) -> types.CallToolResult:
        """Continue a paused run once its approval is decided; while it is pending, say so again."""
        try:
            approval_id = await self.runs.approval_of(principal, run_id)
            approval = await anyio.to_thread.run_sync(self.gateway.approvals.get, approval_id)
            if approval.status == "pending":
                return _paused(run_id, approval_id, _still_pending(approval_id), calls=[], calls_total=0)
            claimed = await self.runs.claim(principal, run_id)
        except (RunError, ApprovalError) as error:
            return _error(str(error))
        sdk, _ = self.sdk_for(principal)
        paused = PausedState(claimed.snapshot, claimed.state)
        try:
            outcome = await self.executor.resume(sdk, paused, self._caller(principal))
        finally:
            await self.runs.finish(run_id)
        return await self._answer(principal, outcome)

    def _caller(self, principal: Principal) -> ToolCaller:
        gateway = self.gateway

        async def call(target: str, wire: dict[str, object]) -> object:
            try:
                result = await gateway.call_tool(principal, target, wire, channel=NULL_CHANNEL)
            except (UnknownTargetError, MCPError) as error:
                raise ToolError(target, str(error)) from None
            if isinstance(result, types.InputRequiredResult):
                raise ToolError(target, "the tool asks the client for input, which code mode cannot relay yet")
            held = (result.meta or {}).get(APPROVAL_META)
            if result.is_error and isinstance(held, dict) and cast(dict[str, Any], held).get("status") == "pending":
                raise ApprovalPending(str(cast(dict[str, Any], held)["id"]), _text(result))
            if result.is_error:
                raise ToolError(target, _text(result) or "the tool failed without saying why")
            return _value(result)

        return call

    async def _answer(self, principal: Principal, outcome: ExecuteResult) -> types.CallToolResult:
        if outcome.status != "paused":
            return _answer(outcome)
        assert outcome.paused is not None and outcome.approval_id is not None
        approval = await anyio.to_thread.run_sync(self.gateway.approvals.get, outcome.approval_id)
        run_id = await self.runs.pause(
            principal,
            approval_id=outcome.approval_id,
            snapshot=outcome.paused.snapshot,
            state=outcome.paused.state,
            expires_at=approval.expires_at,
        )
        message = f"{outcome.error} Once it is decided, call `execute` with resume={run_id!r} to continue."
        return _paused(run_id, outcome.approval_id, message, calls=_calls(outcome), calls_total=len(outcome.calls))


def _still_pending(approval_id: str) -> str:
    return f"The call is still waiting for approval {approval_id}; try again once an admin has decided."


def _paused(
    run_id: str, approval_id: str, message: str, *, calls: list[dict[str, Any]], calls_total: int
) -> types.CallToolResult:
    body = {
        "status": "paused",
        "run": run_id,
        "approval": approval_id,
        "message": message,
        "calls": calls,
        "calls_total": calls_total,
    }
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, ensure_ascii=False))], structured_content=body
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


_CALLS_IN_FULL = 10
"""Past this many SDK calls, ``execute`` reports them per tool: a long call log would cost the model more
tokens than the results the script filtered away (bench/codemode measured it)."""


def _calls(outcome: ExecuteResult) -> list[dict[str, Any]]:
    if len(outcome.calls) <= _CALLS_IN_FULL:
        return [asdict(call) for call in outcome.calls]
    per_tool: dict[str, dict[str, Any]] = {}
    for call in outcome.calls:
        entry = per_tool.setdefault(call.tool, {"tool": call.tool, "calls": 0, "failed": 0, "ms": 0.0})
        entry["calls"] += 1
        entry["failed"] += 0 if call.ok else 1
        entry["ms"] += call.ms
    return [{**entry, "ms": round(entry["ms"], 1)} for entry in per_tool.values()]


def _answer(outcome: ExecuteResult) -> types.CallToolResult:
    body: dict[str, Any] = {
        "status": outcome.status,
        "value": outcome.value,
        "stdout": outcome.stdout,
        "calls": _calls(outcome),
        "calls_total": len(outcome.calls),
        "truncated": outcome.truncated,
    }
    if outcome.status != "ok":
        body["error"] = outcome.error
        body["line"] = outcome.line
    text = json.dumps(body, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=body, is_error=outcome.status != "ok"
    )


def build_code_server(
    gateway: Gateway, executor: MontyExecutor, *, python: PythonRuntime | None = None, name: str = "dockyard-code"
) -> Server[Any]:
    """The MCP server the portal mounts on ``/mcp/code``: ``search`` and ``execute`` over the caller's SDK.

    Args:
        gateway: The choke point every SDK call goes through.
        executor: Runs the scripts; its :meth:`~codemode.MontyExecutor.running` must be entered while serving.
        python: Runs ``runtime="python"`` scripts (its ``running`` entered too); None turns that runtime off.
        name: The server name reported to clients.
    """
    code_mode = _CodeMode(gateway, executor, python)
    server: Server[Any] = Server(
        name,
        version="0.1.0",
        instructions="Dockyard Code Mode: `search` the typed Python SDK of your tools, then `execute` a script.",
        on_list_tools=code_mode.list_tools,
        on_call_tool=code_mode.call_tool,
    )
    server.middleware = []
    return server
