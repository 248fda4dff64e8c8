"""The portal's side of one ``runtime="python"`` run: the socket's JSON lines, answered through the caller's hook.

See :mod:`codemode._python_runner` for the protocol. Every line from the box is untrusted: a call must name
a tool of the SDK the run was given (anything else is refused without reaching the portal), calls past
``max_calls`` are refused, and only JSON objects are read, up to 64 MiB a line.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from codemode._executor import ApprovalPending, CallRecord, Limits, ToolError
from codemode._sdk import ToolCaller

__all__ = ["MAX_LINE", "Session"]

MAX_LINE = 64 * 1024 * 1024


@dataclass
class Session:
    """One run's bookkeeping on the portal's side of the socket."""

    call: ToolCaller
    limits: Limits
    targets: frozenset[str]
    calls: list[CallRecord] = field(default_factory=list[CallRecord])
    over_budget: bool = False
    done: dict[str, Any] | None = None

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        call_id, target, arguments = request.get("id"), request.get("target"), request.get("arguments")
        if not isinstance(target, str) or not isinstance(arguments, dict):
            return {"id": call_id, "error": "malformed call: needs a target and an arguments object"}
        if target not in self.targets:
            return {"id": call_id, "error": "no such tool in your SDK"}
        if len(self.calls) >= self.limits.max_calls:
            self.over_budget = True  # not a call made: not listed, as with Monty
            limit = f"call limit reached: a run may make at most {self.limits.max_calls} tool calls"
            return {"id": call_id, "error": limit}
        start = time.perf_counter()
        record = len(self.calls)
        self.calls.append(CallRecord(target, False, 0.0))
        try:
            result = await self.call(target, cast(dict[str, object], arguments))
            answer: dict[str, Any] = {"id": call_id, "result": result}
        except ToolError as error:
            answer = {"id": call_id, "error": error.message}
        except ApprovalPending as pending:
            answer = {
                "id": call_id,
                "error": f"this call needs an admin's approval ({pending.approval_id}), and a runtime='python' "
                "script cannot pause for it; run scripts that make calls needing approval with the default "
                "runtime (monty), which pauses and resumes",
            }
        ms = round((time.perf_counter() - start) * 1000, 3)
        self.calls[record] = CallRecord(target, "result" in answer, ms)
        return answer

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        """Answer the runner's calls until it says it is done or hangs up."""
        reader = BufferedByteReceiveStream(stream)
        lock = anyio.Lock()

        async def reply(request: dict[str, Any]) -> None:
            answer = await self.answer(request)
            try:
                line = json.dumps(answer, ensure_ascii=False).encode() + b"\n"
            except (TypeError, ValueError) as error:
                line = json.dumps({"id": answer.get("id"), "error": f"result not JSON: {error}"}).encode() + b"\n"
            async with lock:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.send(line)

        async with anyio.create_task_group() as tasks:
            while True:
                try:
                    line = await reader.receive_until(b"\n", MAX_LINE)
                except (
                    anyio.EndOfStream,
                    anyio.IncompleteRead,
                    anyio.DelimiterNotFound,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,  # the runner's process ended and its side closed the stream
                ):
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    break
                if not isinstance(message, dict):
                    break
                request = cast(dict[str, Any], message)
                if "done" in request:
                    done = request["done"]
                    self.done = cast(dict[str, Any], done) if isinstance(done, dict) else None
                    break
                tasks.start_soon(reply, request)
