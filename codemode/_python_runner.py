"""Runs one Code Mode script with full CPython inside a sandbox box (``runtime="python"``).

Standard library only: it runs on the box's ``python3`` as ``python3 -I -c SOURCE SOCKET``, never
imported by the portal; ``SOCKET`` is the in-box path of the portal's socket for this run. It starts
(imports, connects) before there is a script, so a runner can wait ready for the next one.

Protocol on the socket, JSON lines both ways:

* portal → runner, optionally first: ``{"sdk", "namespaces"}``, the generated SDK's source and its
  namespaces, to load while there is no script yet;
* portal → runner: ``{"run": true, "code", "cpu_seconds", "memory_bytes"}`` — the script (which passed its
  type check) and its limits, with ``sdk`` and ``namespaces`` unless they were sent before — or
  ``{"run": false}``: exit without running anything;
* runner → portal: ``{"id": N, "target": T, "arguments": {...}}`` for each SDK call (several may be in
  flight), then ``{"done": {"status", "value", "error", "line"}}`` once the script is over;
* portal → runner: ``{"id": N, "result": ...}`` or ``{"id": N, "error": "message"}`` — the latter raises
  ``ToolError(T, message)`` in the script.

The script's own stdout is the process's stdout (the portal reads it through the sandbox agent). Its
statements run in order; the value of a final expression statement is the run's value.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import json
import math
import os
import resource
import signal
import sys
import threading
import time
import types
from typing import Any, NoReturn, cast

SCRIPT = "script.py"
_MAX_LINE = 64 * 1024 * 1024
_FLUSH_SECONDS = 0.05


class ToolError(OSError):
    """An SDK call failed: the tool answered with an error, or the portal refused the call."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool
        self.message = message


class CpuTimeExceeded(TimeoutError):
    """The script used up its CPU time."""


class Portal:
    """The script's line to the portal: one connection, calls matched to answers by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0

    async def call(self, target: str, arguments: dict[str, object]) -> object:
        self.next_id += 1
        call_id = self.next_id
        line = json.dumps({"id": call_id, "target": target, "arguments": arguments}) + "\n"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        self.writer.write(line.encode())
        await self.writer.drain()
        answer = await future
        if "error" in answer:
            raise ToolError(target, str(answer["error"]))
        return answer.get("result")

    async def listen(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                answer = cast(dict[str, Any], json.loads(line))
                future = self.pending.pop(answer.get("id", 0), None)
                if future is not None and not future.done():
                    future.set_result(answer)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_result({"error": "the portal closed the connection"})

    async def finish(self, outcome: dict[str, object]) -> None:
        self.writer.write((json.dumps({"done": outcome}) + "\n").encode())
        await self.writer.drain()
        self.writer.close()


def jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in cast(list[object], value)]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in cast(dict[object, object], value).items()}
    return repr(value)


def script_line(error: BaseException) -> int | None:
    """The line of the script where ``error`` happened (its innermost frame in the script)."""
    if isinstance(error, SyntaxError) and error.filename == SCRIPT:
        return error.lineno
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SCRIPT:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe(error: BaseException) -> str:
    name = "ToolError" if isinstance(error, ToolError) else type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name


def flush_often() -> None:
    """Flush stdout every few milliseconds, so what the script printed survives it being killed."""
    while True:
        time.sleep(_FLUSH_SECONDS)
        sys.stdout.flush()


async def run_script(code: str, scope: dict[str, Any]) -> object:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(code, SCRIPT)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    result: object = eval(compile(tree, SCRIPT, "exec", flags=flags), scope)
    if asyncio.iscoroutine(result):
        await cast(Any, result)
    if last is None:
        return None
    result = eval(compile(ast.Expression(cast(ast.Expr, last).value), SCRIPT, "eval", flags=flags), scope)
    if asyncio.iscoroutine(result):
        result = await cast(Any, result)
    return result


def limit(payload: dict[str, Any]) -> None:
    """Apply the run's CPU and memory limits (CPU counted from now: starting up is not the script's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime + float(payload["cpu_seconds"]))
    signal.signal(signal.SIGXCPU, _out_of_cpu)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(payload["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


async def main(socket_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=_MAX_LINE)
    portal = Portal(reader, writer)
    sdk: types.ModuleType | None = None
    namespaces: list[str] = []
    while True:
        line = await reader.readline()
        payload: dict[str, Any] = cast(dict[str, Any], json.loads(line)) if line else {"run": False}
        if "sdk" in payload:
            sdk = types.ModuleType("dockyard_sdk")
            exec(compile(payload["sdk"], "<dockyard_sdk>", "exec"), sdk.__dict__)
            namespaces = [str(name) for name in payload["namespaces"]]
        if "run" in payload:
            break
    if not payload["run"] or sdk is None:
        return
    limit(payload)
    listening = asyncio.ensure_future(portal.listen())
    sdk.__dict__["_call"] = portal.call
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, "ToolError": ToolError}
    for namespace in namespaces:
        scope[namespace] = getattr(sdk, namespace)
        sys.modules[namespace] = getattr(sdk, namespace)  # so `import <namespace>` works as in Monty
    stderr, sys.stderr = sys.stderr, sys.stdout  # what the script prints to stderr joins stdout, as in Monty
    threading.Thread(target=flush_often, daemon=True).start()
    try:
        value = await run_script(payload["code"], scope)
        outcome: dict[str, object] = {"status": "ok", "value": jsonable(value)}
    except BaseException as error:  # the script's every failure is reported, with its line
        if isinstance(error, asyncio.CancelledError):
            raise
        outcome = {"status": "error", "error": describe(error), "line": script_line(error)}
    sys.stderr = stderr
    sys.stdout.flush()
    try:
        json.dumps(outcome)
    except ValueError:  # a value JSON cannot hold (a float NaN inside) becomes its repr
        outcome["value"] = repr(outcome.get("value"))
    await portal.finish(outcome)
    listening.cancel()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the outcome is sent: skip the interpreter's teardown, the portal waits for the exit


def _out_of_cpu(signum: int, frame: object) -> NoReturn:
    raise CpuTimeExceeded("the script used up its CPU time")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
