"""``runtime="python"``: a script runs in full CPython inside a sandbox box, its SDK calls coming back over a socket.

Each principal gets one box of the sandbox server's backend (bubblewrap by default), kept between runs
and stopped when idle: uid 65534, read-only root, no network, the portal's environment cleared. A run
binds a fresh Unix socket in the box's control directory, starts ``python3 -I -c`` with
:mod:`codemode._python_runner` through the box's agent, and hands it the SDK's source and the script on
stdin. The SDK inside the box is the same generated module the Monty runtime stubs, loaded with a hook
that sends ``{"id", "target", "arguments"}`` as a JSON line over that socket; the portal answers each
line by calling ``call(target, arguments)`` — the caller's :class:`~codemode.ToolCaller`, wired to
``gateway.call_tool(principal, ...)`` — for the principal who called ``execute``. The socket is the
script's only capability: no token, key or credential enters the box, and it reaches only the tools in
the SDK it was given, through the choke point.

Limits are enforced outside the script: calls are counted here (the call past ``max_calls`` raises
``ToolError``); wall time by the agent and by a deadline here; memory by the box's cgroup and the
runner's ``RLIMIT_AS``; CPU by ``RLIMIT_CPU``; output by the agent and by a cut here.

A call held for approval cannot pause a CPython process the way a Monty snapshot can (nothing survives a
restart), so it fails: the script gets a ``ToolError`` saying to run scripts that need approval with the
default runtime. The approval request stays, so an admin still sees what was asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from codemode._executor import ApprovalPending, CallRecord, ExecuteResult, Limits, MontyExecutor, ToolError
from codemode._python_check import check_python
from codemode._sdk import GeneratedSdk, ToolCaller
from portal.config import CodeModeSettings
from servers.sandbox import BackendUnavailableError, SandboxError, backend_from_name
from servers.sandbox._backend import CONTROL_DIR, Profile
from servers.sandbox._backend import Limits as BoxLimits
from servers.sandbox._manager import SandboxManager
from servers.sandbox._settings import SandboxSettings

__all__ = ["PythonRuntime", "PythonRuntimeError", "python_runtime"]

logger = logging.getLogger("codemode")

RUNNER = (Path(__file__).resolve().parent / "_python_runner.py").read_text()
"""The in-box runner's source, passed to ``python3 -I -c``."""
_BOX_NAME = "codemode-python"
_MAX_LINE = 64 * 1024 * 1024
_BOX_OVERHEAD_MB = 64
"""Memory of the box beyond one script's: the agent and the Python that starts the script."""


class PythonRuntimeError(Exception):
    """``runtime="python"`` cannot run here: the backend is unavailable or the box did not start."""


@dataclass
class _Session:
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
            self.over_budget = True
            self.calls.append(CallRecord(target, False, 0.0))
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
                    line = await reader.receive_until(b"\n", _MAX_LINE)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError):
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


class PythonRuntime:
    """Runs scripts in full CPython, one sandbox box per principal; enter :meth:`running` before :meth:`run`.

    Args:
        data_dir: Where the boxes' state lives (``DATA_DIR/codemode-python``).
        backend: The sandbox backend: ``bubblewrap`` or ``docker``.
        backend_options: The backend's options (as in ``[servers.NAME.options.bubblewrap]``).
        limits: The default limits of a run.
        idle_stop: Seconds without a run before a principal's box is stopped.
        checker: The Monty executor whose type checker checks each script first (see
            :mod:`codemode._python_check`); None runs scripts unchecked.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        backend: str = "bubblewrap",
        backend_options: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
        idle_stop: float = 300.0,
        checker: MontyExecutor | None = None,
    ) -> None:
        self.limits = limits or Limits(memory_bytes=256 * 1024 * 1024, cpu_seconds=30.0)
        self._data_dir = data_dir
        self._backend_name = backend
        self._backend_options = dict(backend_options or {})
        self._idle_stop = idle_stop
        self._checker = checker
        self._manager: SandboxManager | None = None
        self._unavailable: str | None = None
        self._locks: dict[str, anyio.Lock] = {}

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[PythonRuntime]:
        """Keep the boxes' manager (and its idle reaper) up; boxes stop when the block ends."""
        try:
            backend = backend_from_name(self._backend_name, self._backend_options)
        except BackendUnavailableError as error:
            self._unavailable = str(error)
            yield self
            return
        settings = SandboxSettings(
            backend=self._backend_name,
            backend_options=self._backend_options,
            idle_stop=self._idle_stop,
            max_per_owner=1,
        )
        manager = SandboxManager(settings, backend, root=self._data_dir / "codemode-python")
        async with manager.running():
            self._manager = manager
            try:
                yield self
            finally:
                self._manager = None

    async def run(
        self, sdk: GeneratedSdk, code: str, call: ToolCaller, *, owner: str, limits: Limits | None = None
    ) -> ExecuteResult:
        """Run ``code`` in ``owner``'s box with every SDK call going to ``call``.

        Raises:
            PythonRuntimeError: The sandbox backend is unavailable (the message says why and what to do),
                or the box cannot be started.
        """
        limits = limits or self.limits
        manager = self._running()
        try:
            await manager.backend.check()
            sandbox_id = await self._box_for(manager, owner, limits)
            async with manager.use(owner, sandbox_id, policy_egress=()) as agent:
                return await self._run_in(agent, manager.runtime_dir(sandbox_id) / "control", sdk, code, call, limits)
        except BackendUnavailableError as error:
            raise PythonRuntimeError(f"runtime 'python' is unavailable: {error}") from None
        except SandboxError as error:
            raise PythonRuntimeError(f"runtime 'python' could not start its sandbox: {error}") from None

    def _running(self) -> SandboxManager:
        if self._unavailable is not None:
            raise PythonRuntimeError(f"runtime 'python' is unavailable: {self._unavailable}")
        if self._manager is None:
            raise RuntimeError("the python runtime is not running; enter `runtime.running()` first")
        return self._manager

    async def _box_for(self, manager: SandboxManager, owner: str, limits: Limits) -> str:
        lock = self._locks.setdefault(owner, anyio.Lock())
        async with lock:
            for record in manager.list(owner):
                if record.name == _BOX_NAME and record.profile.limits == _box_limits(limits):
                    return record.id
                await manager.destroy(owner, record.id)  # made under other limits: make it again
            profile = Profile(limits=_box_limits(limits))
            return (await manager.create(owner, name=_BOX_NAME, profile=profile)).id

    async def _run_in(
        self, agent: Any, control_dir: Path, sdk: GeneratedSdk, code: str, call: ToolCaller, limits: Limits
    ) -> ExecuteResult:
        checked = anyio.Event()
        type_errors: list[ExecuteResult] = []

        async def check() -> None:
            # While the box's Python starts: the runner waits for the verdict before it runs anything.
            try:
                if self._checker is not None and (errors := await check_python(self._checker, sdk, code)):
                    type_errors.append(errors)
            finally:
                checked.set()

        name = f"code-{secrets.token_hex(8)}.sock"
        session = _Session(call, limits, frozenset(f.target for f in sdk.functions))
        payload = {
            "sdk": sdk.source,
            "namespaces": list(dict.fromkeys(f.namespace for f in sdk.functions)),
            "code": code,
            "socket": f"{CONTROL_DIR}/{name}",
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
        }
        path = control_dir / name
        listener = await anyio.create_unix_listener(path)
        os.chmod(path, 0o666)  # the box connects as uid 65534
        output: Any = None
        stopped = False
        try:
            async with listener, anyio.create_task_group() as tasks:

                async def accept() -> None:
                    stream = await listener.accept()
                    await listener.aclose()  # one connection per run: nothing else in the box gets this socket
                    async with stream:
                        await checked.wait()
                        await stream.send(json.dumps({"run": not type_errors}).encode() + b"\n")
                        if not type_errors:
                            await session.serve(stream)

                tasks.start_soon(check)
                tasks.start_soon(accept)
                with anyio.move_on_after(limits.wall_seconds + 2) as scope:
                    output = await agent.exec(
                        ["python3", "-I", "-c", RUNNER],
                        stdin=json.dumps(payload, ensure_ascii=False).encode(),
                        timeout=limits.wall_seconds,
                        output_limit=limits.max_output_chars * 4,
                    )
                stopped = scope.cancelled_caught
                tasks.cancel_scope.cancel()
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        if type_errors:
            return type_errors[0]
        calls = tuple(session.calls)
        if stopped or output is None or output.timed_out:
            return ExecuteResult(
                "error", error=f"the run took longer than {limits.wall_seconds} s and was stopped", calls=calls
            )
        stdout_text = output.stdout.decode(errors="replace")
        truncated = bool(output.stdout_truncated) or len(stdout_text) > limits.max_output_chars
        stdout_text = stdout_text[: limits.max_output_chars]
        done = session.done
        if done is None:
            return ExecuteResult(
                "error", error=_died(output.exit_code, output.stderr, limits), stdout=stdout_text, calls=calls,
                truncated=truncated,
            )  # fmt: skip
        if session.over_budget:
            return ExecuteResult(
                "error", error=f"call limit reached: at most {limits.max_calls} tool calls", stdout=stdout_text,
                calls=calls, truncated=truncated,
            )  # fmt: skip
        if done.get("status") != "ok":
            line = done.get("line")
            return ExecuteResult(
                "error", error=str(done.get("error")), line=line if isinstance(line, int) else None,
                stdout=stdout_text, calls=calls, truncated=truncated,
            )  # fmt: skip
        value = done.get("value")
        rendered = json.dumps(value, ensure_ascii=False)
        if len(rendered) > limits.max_output_chars:
            value, truncated = rendered[: limits.max_output_chars], True
        return ExecuteResult("ok", value=value, stdout=stdout_text, calls=calls, truncated=truncated)


def _box_limits(limits: Limits) -> BoxLimits:
    memory_mb = limits.memory_bytes // (1024 * 1024) + _BOX_OVERHEAD_MB
    return BoxLimits(memory_mb=memory_mb, pids=64, disk_mb=64, tmp_mb=64, wall_seconds=limits.wall_seconds)


def _died(exit_code: int | None, stderr: bytes, limits: Limits) -> str:
    """Why the runner ended without reporting: killed for memory, for CPU time, or something else."""
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if exit_code == 128 + 9:
        return (
            f"the script's Python process was killed, most likely for using more than "
            f"{limits.memory_bytes // (1024 * 1024)} MB of memory"
        )
    if exit_code == 128 + 24:
        return f"the script used more than {limits.cpu_seconds:g} s of CPU time and was stopped"
    return f"the script's Python process ended (exit {exit_code}) without a result: {tail[0] or 'no message'}"


def python_runtime(
    settings: CodeModeSettings, *, data_dir: Path, checker: MontyExecutor | None
) -> PythonRuntime | None:
    """The runtime the ``[codemode]`` table describes, or None when it turns ``runtime="python"`` off."""
    if settings.python_backend == "none":
        return None
    limits = Limits(
        cpu_seconds=settings.python_cpu_seconds,
        wall_seconds=settings.python_wall_seconds,
        memory_bytes=settings.python_memory_mb * 1024 * 1024,
        max_calls=settings.python_max_calls,
        max_output_chars=settings.python_max_output_chars,
    )
    return PythonRuntime(
        data_dir=data_dir,
        backend=settings.python_backend,
        backend_options=settings.python_backend_options,
        limits=limits,
        checker=checker,
    )
