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
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
import pydantic_monty as monty

from codemode._sdk import GeneratedSdk, SdkFunction, ToolCaller
from codemode._sessions import SCRIPT_NAME, SDK_TOOL_ERROR, Sessions

__all__ = ["CallRecord", "ExecuteResult", "Limits", "MontyExecutor", "ToolError"]

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

    status: Literal["ok", "type_error", "error"]
    value: object = None
    stdout: str = ""
    calls: tuple[CallRecord, ...] = ()
    truncated: bool = False
    error: str | None = None
    line: int | None = None
    type_errors: tuple[tuple[int, str], ...] = ()
    """``(line, message)`` of each type error, when ``status`` is ``"type_error"``."""


@dataclass
class _Run:
    call: ToolCaller
    limits: Limits
    calls: list[CallRecord] = field(default_factory=list[CallRecord])
    stdout: list[str] = field(default_factory=list[str])
    stdout_chars: int = 0
    truncated: bool = False
    over_budget: bool = False
    tool_errors: set[str] = field(default_factory=set[str])
    """The messages of the tool errors raised into the script, to name an uncaught one."""

    def printed(self, stream: Literal["stdout", "stderr"], text: str) -> None:
        room = self.limits.max_output_chars - self.stdout_chars
        if len(text) > room:
            text, self.truncated = text[: max(room, 0)], True
        self.stdout.append(text)
        self.stdout_chars += len(text)

    async def call_function(
        self, sdk_function: SdkFunction, args: tuple[object, ...], kwargs: dict[str, object], /
    ) -> object:
        """What an SDK function does in the script: map its arguments to the wire and call the hook."""
        if args:
            raise TypeError(f"{sdk_function.namespace}.{sdk_function.name}() takes keyword arguments only")
        if len(self.calls) >= self.limits.max_calls:
            self.over_budget = True
            limit = f"call limit reached: a run may make at most {self.limits.max_calls} tool calls"
            raise self.raised(ToolError(sdk_function.target, limit))
        wire = {p.name: p.wire_name for p in sdk_function.parameters}
        arguments = {wire.get(name, name): value for name, value in kwargs.items()}
        start = time.perf_counter()
        ok = False
        try:
            result = await self.call(sdk_function.target, arguments)
            ok = True
            return result
        except ToolError as error:
            raise self.raised(error) from None
        finally:
            self.calls.append(CallRecord(sdk_function.target, ok, round((time.perf_counter() - start) * 1000, 3)))

    def raised(self, error: ToolError) -> ToolError:
        self.tool_errors.add(str(error))
        return error

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
        if self._sessions is None:
            raise RuntimeError("the Monty executor is not running; enter `executor.running()` first")
        limits = limits or self.limits
        run = _Run(call, limits)
        checkout: monty.ResourceLimits = {
            "max_feed_duration_secs": limits.cpu_seconds,
            "max_memory": limits.memory_bytes,
            "max_suspensions": limits.max_calls + 100,
        }
        value: object = None
        outcome: ExecuteResult | None = None
        with anyio.move_on_after(limits.wall_seconds) as scope:
            async with self._sessions.session(sdk, checkout, run.call_function) as session:
                try:
                    value = await session.feed_run(code, print_callback=run.printed)
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
            return ExecuteResult(
                outcome.status,
                stdout=stdout,
                calls=calls,
                truncated=run.truncated,
                error=outcome.error,
                line=outcome.line,
                type_errors=outcome.type_errors,
            )
        result = _jsonable(value)
        truncated = run.truncated
        rendered = json.dumps(result, ensure_ascii=False)
        if len(rendered) > limits.max_output_chars:
            result, truncated = rendered[: limits.max_output_chars], True
        return ExecuteResult("ok", value=result, stdout=stdout, calls=calls, truncated=truncated)
