# pyright: strict
"""The MCP conformance suite's reference server ("everything" fixture), built on the `mcp` SDK.

It implements every tool, resource, prompt, completion and notification that the server
scenarios of `@modelcontextprotocol/conformance` 0.1.16 (2025-11-25 wire) and 0.2.0-alpha.12
(2026-07-28 wire) call by name, so the suite can run against it directly or through a gateway
that federates it:

    python tests/conformance/fixture_server.py --stdio              # how the portal federates it
    python tests/conformance/fixture_server.py --http --port 8931   # Streamable HTTP on /mcp, prints its URL

Both transports serve both protocol eras: the 2025-11-25 handshake (server-to-client requests
mid-call, `logging/setLevel`, `resources/subscribe`) and the stateless 2026-07-28 wire
(per-request `_meta`, `InputRequiredResult` round trips, `subscriptions/listen`).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import warnings
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, TypeVar, get_args

import anyio
import uvicorn
from mcp.server import CacheHint, MCPServer, ServerRequestContext
from mcp.server.caching import CacheableMethod
from mcp.server.mcpserver import Context, UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    ClientCapabilities,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitationCapability,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    InputResponses,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    LoggingLevel,
    PromptReference,
    ResourceTemplateReference,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

SERVER_NAME: Final = "dockyard-conformance-fixture"

# A 1x1 PNG and a WAV header with one silent sample: the smallest valid media for content tests.
PNG_BASE64: Final = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_BASE64: Final = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

_LOG_LEVELS: Final[tuple[LoggingLevel, ...]] = get_args(LoggingLevel)  # in rising severity


@dataclass
class FixtureState:
    """Mutable state shared by every connection to one fixture process.

    Attributes:
        log_level: Minimum level `logging/setLevel` asked for (2025-11-25 wire). Process-wide,
            not per session: the fixture has one client in practice (the suite or the portal).
        subscriptions: URIs subscribed with `resources/subscribe` (2025-11-25 wire).
    """

    log_level: LoggingLevel = "debug"
    subscriptions: set[str] = field(default_factory=set[str])

    def logs(self, level: LoggingLevel) -> bool:
        """Whether a message at `level` passes the `logging/setLevel` threshold."""
        return _LOG_LEVELS.index(level) >= _LOG_LEVELS.index(self.log_level)


Ctx = Context[FixtureState]


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream with `Last-Event-ID` (SEP-1699)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        """Store one event of `stream_id` and return its id (its 1-based position)."""
        self._events.append((stream_id, message))
        return str(len(self._events))

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        """Replay the events of `last_event_id`'s stream that came after it; `None` if the id is unknown."""
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self._events):
            return None
        position = int(last_event_id)
        stream_id = self._events[position - 1][0]
        for index, (event_stream, message) in enumerate(self._events[position:], start=position + 1):
            if event_stream == stream_id and message is not None:  # None marks a priming event
                await send_callback(EventMessage(message, str(index)))
        return stream_id


async def _log(ctx: Ctx, level: LoggingLevel, message: str) -> None:
    # The SDK drops the message on the 2026-07-28 wire unless the request opted in through
    # `_meta["io.modelcontextprotocol/logLevel"]`; on 2025-11-25 `logging/setLevel` filters it here.
    if ctx.request_context.lifespan_context.logs(level):
        await ctx.log(level, message)  # pyright: ignore[reportDeprecated]


# --- content tools -----------------------------------------------------------------------------


def test_simple_text() -> str:
    """Return a simple text response."""
    return "This is a simple text response for testing."


def test_image_content() -> list[ImageContent]:
    """Return a 1x1 PNG image."""
    return [ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")]


def test_audio_content() -> list[AudioContent]:
    """Return a tiny WAV clip."""
    return [AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]


def test_embedded_resource() -> list[EmbeddedResource]:
    """Return an embedded text resource."""
    resource = TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return [EmbeddedResource(type="resource", resource=resource)]


def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Return text, an image and an embedded resource in one result."""
    resource = TextResourceContents(
        uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
    )
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=resource),
    ]


def test_error_handling() -> str:
    """Always fail, as a tool error (`isError: true`)."""
    raise ToolError("This tool intentionally returns an error for testing")


def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict[str, str] | None = None,
    contactMethod: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> str:
    """Accept a contact whose input schema uses JSON Schema 2020-12 keywords."""
    return json.dumps(
        {"name": name, "address": address, "contactMethod": contactMethod, "phone": phone, "email": email}
    )


JSON_SCHEMA_2020_12: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def test_x_mcp_header(
    region: Annotated[
        str,
        Field(description="Mirrored into the Mcp-Param-Region header.", json_schema_extra={"x-mcp-header": "Region"}),
    ] = "none",
) -> str:
    """Echo a parameter that the 2026-07-28 HTTP transport mirrors into a header (SEP-2243)."""
    return f"region={region}"


# --- notification tools --------------------------------------------------------------------------


async def test_tool_with_logging(ctx: Ctx) -> str:
    """Send three info log messages about 50 ms apart."""
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return "Tool with logging executed successfully"


async def test_logging_tool(ctx: Ctx) -> str:
    """Log one info message; on 2026-07-28 only delivered if the request's `_meta` asked for logs."""
    await _log(ctx, "info", "test_logging_tool ran")
    return "logged"


async def test_tool_with_progress(ctx: Ctx) -> str:
    """Report progress 0, 50 and 100 of 100, about 50 ms apart."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
    return "Progress reported: 0, 50, 100 of 100"


async def test_reconnection(ctx: Ctx) -> str:
    """Close the SSE stream mid-call; the result arrives after the client resumes (SEP-1699)."""
    await _log(ctx, "info", "Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)  # the result must be produced after the stream closed, so it is replayed
    await _log(ctx, "info", "After reconnect")
    return "Reconnection test completed"


def _dynamic() -> str:
    """Registered and removed again by the list-change trigger tools."""
    return "dynamic"


async def test_trigger_tool_change(ctx: Ctx) -> str:
    """Change the tool list and announce it to `subscriptions/listen` streams (SEP-2575)."""
    ctx.mcp_server.add_tool(_dynamic, name="test_dynamic_tool")
    ctx.mcp_server.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


async def test_trigger_prompt_change(ctx: Ctx) -> str:
    """Change the prompt list and announce it to `subscriptions/listen` streams (SEP-2575)."""
    ctx.mcp_server.add_prompt(Prompt.from_function(_dynamic, name="test_dynamic_prompt"))
    ctx.mcp_server.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


async def test_trigger_resource_update(ctx: Ctx, uri: str = "test://watched-resource") -> str:
    """Announce that `uri` changed: to `resources/subscribe` subscribers and `subscriptions/listen` streams.

    Not called by the suites; it lets a gateway's tests check that it relays resource updates.
    """
    if uri in ctx.request_context.lifespan_context.subscriptions:  # 2025-11-25: connection-scoped
        await ctx.session.send_resource_updated(uri)
    await ctx.notify_resource_updated(uri)  # 2026-07-28: listen streams that asked for this URI
    return f"updated {uri}"


# --- interactive tools: one definition, both eras ------------------------------------------------
#
# Each interactive tool is written once as a *step*: given the answers so far and the opaque
# state, it returns either its result or an `InputRequiredResult` naming what it still needs. On
# 2026-07-28 the step runs once per client retry (the SDK seals and verifies `requestState`); on
# 2025-11-25 `_drive` answers each round itself with mid-call server-to-client requests.

T = TypeVar("T")
Step = Callable[[InputResponses, str | None], T | InputRequiredResult]
_MAX_ROUNDS: Final = 8


async def _send(ctx: Ctx, request: InputRequest) -> InputResponse:
    """Send one server-to-client request on the stream of the request being handled."""
    related = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
    if isinstance(request, CreateMessageRequest):
        return await ctx.session.send_request(request, CreateMessageResult, metadata=related)
    if isinstance(request, ElicitRequest):
        return await ctx.session.send_request(request, ElicitResult, metadata=related)
    return await ctx.session.send_request(request, ListRootsResult, metadata=related)


async def _drive(ctx: Ctx, step: Step[T]) -> T | InputRequiredResult:
    """Run `step` in the way the request's protocol era allows (see the section comment)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return step(ctx.input_responses or {}, ctx.request_state)
    responses: InputResponses = {}
    state: str | None = None
    for _ in range(_MAX_ROUNDS):
        outcome = step(responses, state)
        if not isinstance(outcome, InputRequiredResult):
            return outcome
        requests = outcome.input_requests or {}
        responses = {key: await _send(ctx, request) for key, request in requests.items()}
        state = outcome.request_state
    raise ToolError(f"Gave up after {_MAX_ROUNDS} rounds of input requests.")


def _ask(key: str, request: InputRequest, finish: Callable[[InputResponse], T]) -> Step[T]:
    """A one-question step: ask `request` under `key`, then `finish` with the answer."""

    def step(responses: InputResponses, state: str | None) -> T | InputRequiredResult:
        if key in responses:
            return finish(responses[key])
        return InputRequiredResult(input_requests={key: request})  # also when a retry answered other keys

    return step


def _require(ctx: Ctx, capability: ClientCapabilities, name: str) -> None:
    """Raise the `-32021` error (SEP-2575) unless the client declared `capability`."""
    if not ctx.session.check_client_capability(capability):
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"This tool needs the client capability {name!r}; declare it and retry.",
            data={"requiredCapabilities": {name: {}}},
        )


def _elicitation(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sampling(prompt: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _string_fields(*names: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string"} for name in names}, "required": list(names)}


def _field(answer: InputResponse, key: str) -> object:
    """The value of `key` in an accepted elicitation answer, or `None`."""
    return answer.content.get(key) if isinstance(answer, ElicitResult) and answer.content else None


def _sampled_text(answer: InputResponse) -> str:
    text = answer.content.text if isinstance(answer, CreateMessageResult) and answer.content.type == "text" else ""
    return f"LLM response: {text}"


def _form_summary(prefix: str) -> Callable[[InputResponse], str]:
    def finish(answer: InputResponse) -> str:
        if not isinstance(answer, ElicitResult):
            raise ToolError(f"Expected an elicitation result, got {answer!r}.")
        return f"{prefix}: action={answer.action}, content={json.dumps(answer.content or {})}"

    return finish


async def _elicit(ctx: Ctx, message: str, schema: dict[str, Any], prefix: str) -> str | InputRequiredResult:
    _require(ctx, ClientCapabilities(elicitation=ElicitationCapability()), "elicitation")
    return await _drive(ctx, _ask("form", _elicitation(message, schema), _form_summary(prefix)))


USER_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

DEFAULTS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}


def _titled(values: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in values]


ENUMS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": _titled([("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")]),
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": _titled([("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice")])
            },
        },
    },
}
NAME_SCHEMA: Final = _string_fields("name")
CONFIRM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}


async def test_sampling(prompt: str, ctx: Ctx) -> str | InputRequiredResult:
    """Ask the client's LLM to complete `prompt` (`sampling/createMessage`, 100 tokens)."""
    _require(ctx, ClientCapabilities(sampling=SamplingCapability()), "sampling")
    return await _drive(ctx, _ask("completion", _sampling(prompt, 100), _sampled_text))


async def test_elicitation(message: str, ctx: Ctx) -> str | InputRequiredResult:
    """Ask the user for a username and an email address (`elicitation/create`)."""
    return await _elicit(ctx, message, USER_SCHEMA, "User response")


async def test_elicitation_sep1034_defaults(ctx: Ctx) -> str | InputRequiredResult:
    """Elicit a form whose fields carry defaults of every primitive type (SEP-1034)."""
    return await _elicit(ctx, "Please review your profile", DEFAULTS_SCHEMA, "Elicitation completed")


async def test_elicitation_sep1330_enums(ctx: Ctx) -> str | InputRequiredResult:
    """Elicit a form with all five enum schema variants (SEP-1330)."""
    return await _elicit(ctx, "Please choose some options", ENUMS_SCHEMA, "Elicitation completed")


async def test_missing_capability(ctx: Ctx) -> str:
    """Fail with `-32021` unless the client declared the sampling capability (SEP-2575)."""
    _require(ctx, ClientCapabilities(sampling=SamplingCapability()), "sampling")
    return "The client declared sampling."


async def test_streaming_elicitation(ctx: Ctx) -> str | InputRequiredResult:
    """Ask for a name; on 2026-07-28 only through `InputRequiredResult`, never a request on the stream."""
    return await _elicit(ctx, "What is your name?", NAME_SCHEMA, "Elicitation completed")


def _greeting(answer: InputResponse) -> str:
    return f"Hello, {_field(answer, 'name') or 'stranger'}!"


async def test_input_required_result_elicitation(ctx: Ctx) -> str | InputRequiredResult:
    """Greet the user by the name one elicitation round returns (SEP-2322)."""
    return await _drive(ctx, _ask("user_name", _elicitation("What is your name?", NAME_SCHEMA), _greeting))


async def test_input_required_result_sampling(ctx: Ctx) -> str | InputRequiredResult:
    """Report what the client's LLM answered to one sampling round."""
    question = _sampling("What is the capital of France?", 100)
    return await _drive(ctx, _ask("capital_question", question, _sampled_text))


def _roots_summary(answer: InputResponse) -> str:
    roots = [str(root.uri) for root in answer.roots] if isinstance(answer, ListRootsResult) else []
    return f"Client exposed {len(roots)} root(s): {', '.join(roots)}"


async def test_input_required_result_list_roots(ctx: Ctx) -> str | InputRequiredResult:
    """Report the client's roots, fetched in one `roots/list` round."""
    return await _drive(ctx, _ask("client_roots", ListRootsRequest(), _roots_summary))


def _confirm_with_state(responses: InputResponses, state: str | None) -> str | InputRequiredResult:
    if "confirm" in responses and state == "awaiting-confirm":
        return "state-ok: confirmation received"
    confirm = _elicitation("Please confirm", CONFIRM_SCHEMA)
    return InputRequiredResult(input_requests={"confirm": confirm}, request_state="awaiting-confirm")


async def test_input_required_result_request_state(ctx: Ctx) -> str | InputRequiredResult:
    """Complete only when the retry echoes the `requestState` this tool minted."""
    return await _drive(ctx, _confirm_with_state)


def _all_inputs(responses: InputResponses, state: str | None) -> str | InputRequiredResult:
    if {"user_name", "greeting", "client_roots"} <= responses.keys():
        return "All inputs received."
    return InputRequiredResult(
        input_requests={
            "user_name": _elicitation("What is your name?", NAME_SCHEMA),
            "greeting": _sampling("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="multiple-inputs",
    )


async def test_input_required_result_multiple_inputs(ctx: Ctx) -> str | InputRequiredResult:
    """Ask for an elicitation, a sampling and the roots in one round."""
    return await _drive(ctx, _all_inputs)


def _name_then_colour(responses: InputResponses, state: str | None) -> str | InputRequiredResult:
    progress: dict[str, Any] = json.loads(state) if state else {}
    if progress.get("round") == 1 and "step1" in responses:
        return InputRequiredResult(
            input_requests={"step2": _elicitation("Step 2: What is your favorite color?", _string_fields("color"))},
            request_state=json.dumps({"round": 2, "name": _field(responses["step1"], "name")}),
        )
    if progress.get("round") == 2 and "step2" in responses:
        return f"{progress.get('name')} likes {_field(responses['step2'], 'color')}."
    return InputRequiredResult(  # first round, or an out-of-order retry: start over
        input_requests={"step1": _elicitation("Step 1: What is your name?", NAME_SCHEMA)},
        request_state=json.dumps({"round": 1}),
    )


async def test_input_required_result_multi_round(ctx: Ctx) -> str | InputRequiredResult:
    """Ask for a name, then a colour, carrying the name in `requestState` between rounds."""
    return await _drive(ctx, _name_then_colour)


def _echo_state(responses: InputResponses, state: str | None) -> str | InputRequiredResult:
    if state is None:
        confirm = _elicitation("Please confirm", CONFIRM_SCHEMA)
        return InputRequiredResult(input_requests={"confirm": confirm}, request_state="round-1")
    return f"state-ok: {state}"


async def test_input_required_result_tampered_state(ctx: Ctx) -> str | InputRequiredResult:
    """Echo the `requestState`; the SDK's request-state boundary rejects a tampered one (-32602)."""
    return await _drive(ctx, _echo_state)


async def test_input_required_result_capabilities(ctx: Ctx) -> str | InputRequiredResult:
    """Ask only for the inputs the client declared it can provide (sampling, elicitation, roots)."""
    caps = ctx.client_capabilities or ClientCapabilities()
    wanted: dict[str, InputRequest] = {}
    if caps.sampling is not None:
        wanted["sample"] = _sampling("Say hello", 50)
    if caps.elicitation is not None:
        wanted["ask"] = _elicitation("What is your name?", NAME_SCHEMA)
    if caps.roots is not None:
        wanted["roots"] = ListRootsRequest()

    def step(responses: InputResponses, state: str | None) -> str | InputRequiredResult:
        if set(wanted) <= responses.keys():
            return f"Received inputs: {sorted(wanted)}"
        return InputRequiredResult(input_requests=wanted, request_state="capability-gated")

    return await _drive(ctx, step)


# --- resources, prompts, completion -------------------------------------------------------------


def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


def static_binary() -> bytes:
    """A static binary resource (a 1x1 PNG)."""
    return base64.b64decode(PNG_BASE64)


def template_data(id: str) -> str:
    """JSON data for one id, read through the `test://template/{id}/data` template."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def watched_resource() -> str:
    """A resource clients can subscribe to."""
    return "Watched resource content"


def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[UserMessage]:
    """A prompt that embeds a resource."""
    resource = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(EmbeddedResource(type="resource", resource=resource)),
        UserMessage("Please process the embedded resource above."),
    ]


def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that contains an image."""
    return [
        UserMessage(ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


async def test_input_required_result_prompt(ctx: Ctx) -> list[UserMessage] | InputRequiredResult:
    """A prompt that first asks the user for context (SEP-2322 on `prompts/get`)."""
    question = _elicitation("What context should the prompt use?", _string_fields("context"))

    def finish(answer: InputResponse) -> list[UserMessage]:
        return [UserMessage(f"Use the following context: {_field(answer, 'context')}")]

    return await _drive(ctx, _ask("user_context", question, finish))


COMPLETIONS: Final[dict[str, list[str]]] = {
    "arg1": ["paris", "park", "party"],
    "arg2": ["hello", "help", "world"],
    "id": ["123", "456", "789"],
}


async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion:
    """Suggest values for prompt and template arguments that start with what was typed."""
    values = [value for value in COMPLETIONS.get(argument.name, []) if value.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


# --- 2025-11-25 methods the 2026-07-28 revision removed ------------------------------------------


async def set_logging_level(ctx: ServerRequestContext[FixtureState], params: SetLevelRequestParams) -> EmptyResult:
    """Handle `logging/setLevel`."""
    ctx.lifespan_context.log_level = params.level
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext[FixtureState], params: SubscribeRequestParams) -> EmptyResult:
    """Handle `resources/subscribe`."""
    ctx.lifespan_context.subscriptions.add(params.uri)
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext[FixtureState], params: UnsubscribeRequestParams) -> EmptyResult:
    """Handle `resources/unsubscribe`."""
    ctx.lifespan_context.subscriptions.discard(params.uri)
    return EmptyResult()


# --- assembly ------------------------------------------------------------------------------------

TOOLS: Final = (
    test_simple_text,
    test_image_content,
    test_audio_content,
    test_embedded_resource,
    test_multiple_content_types,
    test_error_handling,
    test_x_mcp_header,
    test_tool_with_logging,
    test_logging_tool,
    test_tool_with_progress,
    test_reconnection,
    test_trigger_tool_change,
    test_trigger_prompt_change,
    test_trigger_resource_update,
    test_sampling,
    test_elicitation,
    test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums,
    test_missing_capability,
    test_streaming_elicitation,
    test_input_required_result_elicitation,
    test_input_required_result_sampling,
    test_input_required_result_list_roots,
    test_input_required_result_request_state,
    test_input_required_result_multiple_inputs,
    test_input_required_result_multi_round,
    test_input_required_result_tampered_state,
    test_input_required_result_capabilities,
)

PROMPTS: Final = (
    test_simple_prompt,
    test_prompt_with_arguments,
    test_prompt_with_embedded_resource,
    test_prompt_with_image,
    test_input_required_result_prompt,
)

# Every cacheable result carries explicit freshness hints (SEP-2549); nothing here is shared
# across authorization contexts, and the lists change at runtime (the trigger tools).
CACHE_HINTS: Final[dict[CacheableMethod, CacheHint]] = {
    "tools/list": CacheHint(ttl_ms=0, scope="private"),
    "prompts/list": CacheHint(ttl_ms=0, scope="private"),
    "resources/list": CacheHint(ttl_ms=60_000, scope="private"),
    "resources/templates/list": CacheHint(ttl_ms=60_000, scope="private"),
    "resources/read": CacheHint(ttl_ms=0, scope="private"),
}


def build_server() -> MCPServer[FixtureState]:
    """Assemble the fixture: every tool, resource, prompt and handler the conformance suites call.

    Returns:
        A server whose state lives in one `FixtureState`, shared by all its connections.
    """
    state = FixtureState()

    @asynccontextmanager
    async def lifespan(_: MCPServer[FixtureState]) -> AsyncGenerator[FixtureState]:
        yield state

    schema_tool = Tool.from_function(json_schema_2020_12_tool).model_copy(update={"parameters": JSON_SCHEMA_2020_12})
    server = MCPServer[FixtureState](
        SERVER_NAME,
        version="1.0.0",
        instructions="Reference server for the MCP conformance suite.",
        tools=[schema_tool],
        lifespan=lifespan,
        log_level="WARNING",
        cache_hints=CACHE_HINTS,
    )
    for tool in TOOLS:
        server.add_tool(tool, structured_output=False)
    for prompt in PROMPTS:
        server.prompt()(prompt)
    server.resource("test://static-text", mime_type="text/plain")(static_text)
    server.resource("test://static-binary", mime_type="image/png")(static_binary)
    server.resource("test://template/{id}/data", mime_type="application/json")(template_data)
    server.resource("test://watched-resource", mime_type="text/plain")(watched_resource)
    server.completion()(complete)
    # MCPServer has no public hook for the methods 2026-07-28 removed; the SDK's own docs point to
    # the low-level `Server.add_request_handler` for re-providing them to 2025-11-25 clients.
    lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_logging_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    return server


def serve_http(server: MCPServer[FixtureState], *, host: str, port: int) -> None:
    """Serve Streamable HTTP on `/mcp`, printing the endpoint URL once the port is listening.

    The socket is bound and listening before the URL is printed, so a launcher that reads that
    first stdout line can connect at once; `port=0` lets the OS pick a free port.
    """
    app = server.streamable_http_app(
        event_store=InMemoryEventStore(),
        retry_interval=100,  # ms before a client resumes a closed SSE stream (server-sse-polling)
        host=host,  # a loopback host turns on the SDK's DNS-rebinding protection
    )
    sock = socket.create_server((host, port))
    bound_host, bound_port = sock.getsockname()[:2]
    authority = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"http://{authority}:{bound_port}/mcp", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fixture on stdio or Streamable HTTP, as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    transport = parser.add_mutually_exclusive_group(required=True)
    transport.add_argument("--stdio", action="store_true", help="serve one client on stdin/stdout")
    transport.add_argument("--http", action="store_true", help="serve Streamable HTTP on /mcp; prints its URL")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port; 0 picks a free one (default: %(default)s)")
    args = parser.parse_args(argv)
    # Logging and the mid-call sampling/elicitation/roots requests are deprecated in 2026-07-28
    # but still specified for 2025-11-25, which this fixture serves on purpose.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    server = build_server()
    if args.stdio:
        server.run("stdio")
    else:
        serve_http(server, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
