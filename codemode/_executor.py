"""Run model-written Python against a generated SDK, in Monty (``pydantic-monty``).

Each server's namespace is a Monty external module whose functions are host calls: the executor maps
their keyword arguments to wire arguments and hands ``(target, arguments)`` to the caller's
:class:`~codemode.ToolCaller`, which the portal wires to its choke point. Before anything runs, the
script is type-checked against the SDK's stubs. Monty gives the script no filesystem, network or
environment: only the SDK's functions reach outside.

A tool call that fails raises :class:`ToolError` in the host; the script sees it as ``ToolError`` and may
catch it. Monty 1.4.0 has no user-defined exception classes (a ``class`` cannot inherit) and a host
exception crosses as its nearest builtin ancestor, so inside the script ``ToolError`` is ``OSError`` —
the family CPython gives failures of calls to the outside (``ConnectionError``, ``TimeoutError``) and one
Monty raises for nothing a script can do in a sandbox without files, network or environment, except a
denied file access (``PermissionError``). ``except ToolError`` therefore catches failed SDK calls and not
the script's own ``KeyError``, ``ValueError``, ``RuntimeError`` and so on; ``except Exception`` catches it
too. Its message is ``"<tool>: <what went wrong>"``. Errors of the script itself come back as an
:class:`ExecuteResult` with ``status`` ``"type_error"`` or ``"error"`` and the script's line, never as
exceptions; an uncaught tool failure is reported as ``ToolError: <tool>: <message>``.

The executor drives the interpreter itself, one external call at a time (Monty's snapshots), so a call
that must wait for an admin's approval (the hook raises :class:`ApprovalPending`) stops the run *at that
call*: :meth:`MontyExecutor.run` answers ``status="paused"`` with a :class:`PausedState` — the
interpreter's snapshot, the calls made and the output so far, the results of calls in flight that already
came back — and :meth:`MontyExecutor.resume` continues from it, later and in another process, making
that one call again and none of the earlier ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import anyio
import pydantic_monty as monty

from codemode._sdk import GeneratedSdk, SdkFunction, ToolCaller
from codemode._sessions import SCRIPT_NAME, SDK_TOOL_ERROR, Sessions

__all__ = ["ApprovalPending", "CallRecord", "ExecuteResult", "Limits", "MontyExecutor", "PausedState", "ToolError"]

_TYPE_LINE = re.compile(rf"^{re.escape(SCRIPT_NAME)}:(\d+):\d+: (.*)$", re.M)


class ToolError(OSError):
    """A tool call failed: the tool answered with an error, or the call was refused.

    Raised by a :class:`~codemode.ToolCaller` (and by the executor itself when the call budget is spent);
    inside the script it is ``ToolError`` (an ``OSError`` there, see the module docstring), which the
    script may catch.

    Args:
        tool: The tool's name as the portal exposes it (the function's target).
        message: What went wrong.
    """

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message

    def __reduce__(self) -> tuple[type[ToolError], tuple[str, str]]:
        return type(self), (self.tool, self.message)


class ApprovalPending(Exception):
    """Raised by a :class:`~codemode.ToolCaller` when the call is held for an admin's approval.

    Args:
        approval_id: The approval the call waits for.
        message: What the caller should know (who approves, until when).
    """

    def __init__(self, approval_id: str, message: str) -> None:
        super().__init__(message)
        self.approval_id = approval_id
        self.message = message


@dataclass(frozen=True, slots=True)
class PausedState:
    """What :meth:`MontyExecutor.resume` needs to continue a paused run; ``state`` is JSON."""

    snapshot: bytes
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one ``execute`` may use."""

    cpu_seconds: float = 5.0
    """Time the script itself may run, not counting the time its tool calls take."""
    wall_seconds: float = 60.0
    """Time the whole run may take, tool calls included."""
    memory_bytes: int = 64 * 1024 * 1024
    max_calls: int = 50
    """Tool calls per run; the call past it raises ``ToolError`` and the run fails."""
    max_output_chars: int = 20_000
    """Characters of captured stdout, and of the result rendered as JSON, returned to the caller."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One SDK call the script made."""

    tool: str
    """The tool's name as the portal exposes it (the function's target)."""
    ok: bool
    ms: float


@dataclass(frozen=True, slots=True)
class ExecuteResult:
    """The outcome of one run.

    ``value`` is the value of the script's last expression, as JSON (values JSON cannot hold become their
    ``repr``). With ``status`` other than ``"ok"``, ``error`` says what went wrong and ``line`` where.
    """

    status: Literal["ok", "type_error", "error", "paused"]
    value: object = None
    stdout: str = ""
    calls: tuple[CallRecord, ...] = ()
    truncated: bool = False
    error: str | None = None
    line: int | None = None
    type_errors: tuple[tuple[int, str], ...] = ()
    """``(line, message)`` of each type error, when ``status`` is ``"type_error"``."""
    approval_id: str | None = None
    """With ``status="paused"``: the approval the run waits for (``error`` says what to do)."""
    paused: PausedState | None = None
    """With ``status="paused"``: what :meth:`MontyExecutor.resume` continues from."""


_Settled = dict[str, Any]
"""A call's answer as Monty takes it: ``{"return_value": ...}`` or ``{"exc_type": ..., "message": ...}``."""


_FUTURE: monty.ExternalFuture = {"future": ...}
"""The answer to a call the script will await: Monty asks for its result where the script awaits it."""


class _Paused(Exception):
    def __init__(self, pending: ApprovalPending, snapshot: bytes, state: dict[str, Any]) -> None:
        super().__init__(pending.message)
        self.pending = pending
        self.state = PausedState(snapshot, state)


@dataclass
class _Run:
    call: ToolCaller
    limits: Limits
    functions: dict[str, SdkFunction]
    """``namespace.name`` → function, as snapshots name them."""
    calls: list[CallRecord] = field(default_factory=list[CallRecord])
    stdout: list[str] = field(default_factory=list[str])
    stdout_chars: int = 0
    truncated: bool = False
    over_budget: bool = False
    tool_errors: set[str] = field(default_factory=set[str])
    """The messages of the tool errors raised into the script, to name an uncaught one."""
    in_flight: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict[int, tuple[str, dict[str, Any]]])
    """Calls the script started and awaits, by Monty's call id: ``(namespace.name, keyword arguments)``."""
    settled: dict[int, _Settled] = field(default_factory=dict[int, _Settled])
    """Answers of calls in flight that came back while another one of them was held (kept across a pause)."""

    def printed(self, stream: Literal["stdout", "stderr"], text: str) -> None:
        room = self.limits.max_output_chars - self.stdout_chars
        if len(text) > room:
            text, self.truncated = text[: max(room, 0)], True
        self.stdout.append(text)
        self.stdout_chars += len(text)

    async def drive(self, snapshot: monty.AsyncSnapshot | monty.MontyComplete) -> object:
        """Run the script to its end, answering each SDK call; raises :class:`_Paused` at a held call."""
        while not isinstance(snapshot, monty.MontyComplete):
            if isinstance(snapshot, monty.AsyncFunctionSnapshot):
                name = str(snapshot.function_name)
                if snapshot.args:
                    error = f"{name}() takes keyword arguments only"
                    snapshot = await snapshot.resume({"exc_type": "TypeError", "message": error})
                    continue
                self.in_flight[snapshot.call_id] = (name, dict(snapshot.kwargs))
                snapshot = await snapshot.resume(_FUTURE)
            elif isinstance(snapshot, monty.AsyncFutureSnapshot):
                answers: dict[int, _Settled] = {}
                for call_id in snapshot.pending_call_ids:
                    try:
                        answers[call_id] = self.settled.pop(call_id, None) or await self.answer(call_id)
                    except ApprovalPending as pending:
                        self.settled.update(answers)
                        raise _Paused(pending, snapshot.dump(), self.paused_state()) from None
                snapshot = await snapshot.resume(cast(Any, answers))
            else:  # a name the script reads that nothing defines: Monty raises NameError
                snapshot = await cast(Any, snapshot).resume()
        return snapshot.output

    async def answer(self, call_id: int) -> _Settled:
        """Make one SDK call: map its arguments to the wire and call the hook."""
        name, kwargs = self.in_flight[call_id]
        function = self.functions.get(name)
        if function is None:
            return {"exc_type": SDK_TOOL_ERROR, "message": self.raised(ToolError(name, "no such SDK function now"))}
        if len(self.calls) >= self.limits.max_calls:
            self.over_budget = True
            limit = f"call limit reached: a run may make at most {self.limits.max_calls} tool calls"
            return {"exc_type": SDK_TOOL_ERROR, "message": self.raised(ToolError(function.target, limit))}
        wire = {p.name: p.wire_name for p in function.parameters}
        arguments = {wire.get(key, key): value for key, value in kwargs.items()}
        start = time.perf_counter()
        try:
            result = await self.call(function.target, arguments)
        except ToolError as error:
            answer: _Settled = {"exc_type": SDK_TOOL_ERROR, "message": self.raised(error)}
        else:
            answer = {"return_value": result}
        del self.in_flight[call_id]
        ok = "return_value" in answer
        self.calls.append(CallRecord(function.target, ok, round((time.perf_counter() - start) * 1000, 3)))
        return answer

    def raised(self, error: ToolError) -> str:
        self.tool_errors.add(str(error))
        return str(error)

    def paused_state(self) -> dict[str, Any]:
        return {
            "calls": [[c.tool, c.ok, c.ms] for c in self.calls],
            "stdout": "".join(self.stdout),
            "truncated": self.truncated,
            "tool_errors": sorted(self.tool_errors),
            "in_flight": {str(k): [name, kwargs] for k, (name, kwargs) in self.in_flight.items()},
            "settled": {str(k): v for k, v in self.settled.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take up a paused run's bookkeeping (see :meth:`paused_state`)."""
        self.calls = [CallRecord(tool, ok, ms) for tool, ok, ms in state["calls"]]
        self.stdout = [state["stdout"]]
        self.stdout_chars = len(state["stdout"])
        self.truncated = state["truncated"]
        self.tool_errors = set(state["tool_errors"])
        self.in_flight = {int(k): (name, kwargs) for k, (name, kwargs) in state["in_flight"].items()}
        self.settled = {int(k): v for k, v in state["settled"].items()}

    def describe(self, error: monty.MontyRuntimeError) -> str:
        """``Type: message`` of an uncaught error, with a failed SDK call named ``ToolError``."""
        text = error.display("type-msg")
        kind, _, message = text.partition(": ")
        return f"ToolError: {message}" if kind == SDK_TOOL_ERROR and message in self.tool_errors else text


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    return repr(value)


class MontyExecutor:
    """Runs scripts in a pool of Monty workers; enter :meth:`running` before :meth:`run`.

    Args:
        limits: The default limits of a run.
        max_processes: Workers running scripts at once.
        keep_ready: After each run, prepare the next session for the same SDK in the background (see
            :mod:`codemode._sessions`), so the next run skips the prelude and most of the type checker's
            warm-up; it keeps one worker busy while idle.
    """

    def __init__(
        self, *, limits: Limits | None = None, max_processes: int | None = None, keep_ready: bool = True
    ) -> None:
        self.limits = limits or Limits()
        self._max_processes = max_processes
        self._keep_ready = keep_ready
        self._sessions: Sessions | None = None

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[MontyExecutor]:
        """Keep the worker pool up for the duration of the block."""
        capacity = self._max_processes or os.cpu_count() or 1  # Monty's default: the CPU count
        # A session kept ready holds a worker, so keep a second one warm for the run that needs another.
        warm = 2 if self._keep_ready and capacity > 1 else 1
        async with (
            monty.AsyncMonty(min_processes=warm, max_processes=self._max_processes) as pool,
            anyio.create_task_group() as tasks,
        ):
            self._sessions = Sessions(pool, tasks, capacity=capacity, keep_ready=self._keep_ready)
            try:
                yield self
            finally:
                self._sessions = None
                tasks.cancel_scope.cancel()

    async def settled(self) -> None:
        """Wait until the session prepared in the background for the next run, if any, is ready.

        Runs never need to wait for this (one that comes first waits for the session, or prepares its
        own); benchmarks and tests use it to measure a run that finds its session ready, as one does after
        a model's pause.
        """
        if self._sessions is not None:
            await self._sessions.settled()

    async def run(
        self, sdk: GeneratedSdk, code: str, call: ToolCaller, *, limits: Limits | None = None
    ) -> ExecuteResult:
        """Type-check ``code`` against ``sdk``, then run it with every SDK call going to ``call``.

        Raises:
            RuntimeError: The executor is not running (see :meth:`running`).
        """
        sessions = self._running()
        limits = limits or self.limits
        run = _Run(call, limits, _by_name(sdk))

        async def start() -> object:
            async with sessions.session(sdk, _checkout_limits(limits)) as session:
                return await run.drive(await session.feed_start(code, print_callback=run.printed))

        return await self._outcome(run, start)

    async def resume(
        self, sdk: GeneratedSdk, paused: PausedState, call: ToolCaller, *, limits: Limits | None = None
    ) -> ExecuteResult:
        """Continue a run that paused at a held call: that call is made again, no earlier one is.

        ``sdk`` is the caller's SDK now; a function the script still awaits that it no longer has raises
        ``ToolError`` in the script.

        Raises:
            RuntimeError: The executor is not running (see :meth:`running`).
        """
        sessions = self._running()
        limits = limits or self.limits
        run = _Run(call, limits, _by_name(sdk))
        run.restore(paused.state)

        async def start() -> object:
            async with sessions.fresh(sdk, _checkout_limits(limits)) as session:
                snapshot = await session.load_snapshot(paused.snapshot, print_callback=run.printed)
                return await run.drive(snapshot)

        return await self._outcome(run, start)

    @asynccontextmanager
    async def session(self, sdk: GeneratedSdk) -> AsyncGenerator[monty.AsyncMontySession]:
        """A session for ``sdk`` under the default limits, as a run gets it (the one kept ready when it fits).

        The namespaces are imported, ``ToolError = OSError``, and type checking is on.

        For feeding code of one's own: ``runtime="python"`` type-checks scripts in one without running them.

        Raises:
            RuntimeError: The executor is not running (see :meth:`running`).
        """
        async with self._running().session(sdk, _checkout_limits(self.limits)) as session:
            yield session

    def _running(self) -> Sessions:
        if self._sessions is None:
            raise RuntimeError("the Monty executor is not running; enter `executor.running()` first")
        return self._sessions

    async def _outcome(self, run: _Run, start: Callable[[], Awaitable[object]]) -> ExecuteResult:
        limits = run.limits
        value: object = None
        outcome: ExecuteResult | None = None
        with anyio.move_on_after(limits.wall_seconds) as scope:
            try:
                value = await start()
            except _Paused as paused:
                outcome = ExecuteResult(
                    "paused", error=paused.pending.message, approval_id=paused.pending.approval_id, paused=paused.state
                )
            except monty.MontyTypingError as error:
                found = tuple((int(m[1]), m[2]) for m in _TYPE_LINE.finditer(error.display()))
                text = error.display().strip()
                outcome = ExecuteResult(
                    "type_error", error=text, line=found[0][0] if found else None, type_errors=found
                )
            except monty.MontySyntaxError as error:
                frames = error.traceback()
                line = frames[-1].line if frames else None
                outcome = ExecuteResult("error", error=error.display("type-msg"), line=line)
            except monty.MontyRuntimeError as error:
                frames = error.traceback()
                line = frames[-1].line if frames else None
                outcome = ExecuteResult("error", error=run.describe(error), line=line)
        if scope.cancelled_caught:
            outcome = ExecuteResult("error", error=f"the run took longer than {limits.wall_seconds} s and was stopped")
        if outcome is None and run.over_budget:
            outcome = ExecuteResult("error", error=f"call limit reached: at most {limits.max_calls} tool calls")
        stdout = "".join(run.stdout)
        calls = tuple(run.calls)
        if outcome is not None:
            return dataclasses.replace(outcome, stdout=stdout, calls=calls, truncated=run.truncated)
        result = _jsonable(value)
        truncated = run.truncated
        rendered = json.dumps(result, ensure_ascii=False)
        if len(rendered) > limits.max_output_chars:
            result, truncated = rendered[: limits.max_output_chars], True
        return ExecuteResult("ok", value=result, stdout=stdout, calls=calls, truncated=truncated)


def _by_name(sdk: GeneratedSdk) -> dict[str, SdkFunction]:
    return {f"{f.namespace}.{f.name}": f for f in sdk.functions}


def _checkout_limits(limits: Limits) -> monty.ResourceLimits:
    # Each SDK call suspends the interpreter twice: at the call, and where the script awaits it.
    return {
        "max_feed_duration_secs": limits.cpu_seconds,
        "max_memory": limits.memory_bytes,
        "max_suspensions": 2 * limits.max_calls + 100,
    }
