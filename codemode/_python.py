"""``runtime="python"``: a script runs in full CPython inside a sandbox box, its SDK calls coming back over a socket.

Each principal gets one box of the sandbox server's backend (bubblewrap by default), kept between runs
and stopped when idle: uid 65534, read-only root, no network, the portal's environment cleared. A run
binds a fresh Unix socket in the box's control directory and starts ``python3 -I -c`` with
:mod:`codemode._python_runner` through the box's agent; the runner connects and waits for the SDK's
source and the script, which the portal sends once the script has passed its type check (done while the
runner starts). The SDK inside the box is the same generated module the Monty runtime stubs, loaded with
a hook that sends ``{"id", "target", "arguments"}`` as a JSON line over that socket; the portal answers
each line by calling ``call(target, arguments)`` — the caller's :class:`~codemode.ToolCaller`, wired to
``gateway.call_tool(principal, ...)`` — for the principal who called ``execute``
(:mod:`codemode._python_session`). The socket is the script's only capability: no token, key or
credential enters the box, and it reaches only the tools in the SDK it was given, through the choke point.

Starting CPython is most of a run's cost, so after each run the next runner of that principal is started
in the background and waits, connected, for its script (for at most ``idle_stop`` seconds); the next run
takes it. A runner serves one script and exits, so no state of one script reaches the next in memory
(files the script writes in its box stay, for that principal's later scripts).

Limits are enforced outside the script: calls are counted here (the call past ``max_calls`` raises
``ToolError``); wall time by a deadline here (the runner is killed through the agent); memory by the
box's cgroup and the runner's ``RLIMIT_AS``; CPU by ``RLIMIT_CPU``; output by the agent and by a cut here.

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
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from codemode._executor import ExecuteResult, Limits, MontyExecutor
from codemode._python_check import check_python
from codemode._python_session import Session
from codemode._sdk import GeneratedSdk, ToolCaller
from portal.config import CodeModeSettings
from servers.sandbox import BackendUnavailableError, SandboxError, backend_from_name
from servers.sandbox._backend import CONTROL_DIR, ExecResult, Profile
from servers.sandbox._backend import Limits as BoxLimits
from servers.sandbox._manager import SandboxManager
from servers.sandbox._settings import SandboxSettings

__all__ = ["PythonRuntime", "PythonRuntimeError", "python_runtime"]

logger = logging.getLogger("codemode")

RUNNER = (Path(__file__).resolve().parent / "_python_runner.py").read_text()
"""The in-box runner's source, passed to ``python3 -I -c``."""
_BOX_NAME = "codemode-python"
_BOX_OVERHEAD_MB = 64
"""Memory of the box beyond one script's: the agent and a runner waiting for the next script."""
_START_SECONDS = 30.0
"""How long a runner may take to start and connect (a box that is not running yet starts first)."""
_EXIT_GRACE = 5.0
"""How long a runner may take to exit after it reported its outcome."""
_MAX_READY = 32
"""Runners kept waiting at once (each holds its principal's box up)."""


class PythonRuntimeError(Exception):
    """``runtime="python"`` cannot run here: the backend is unavailable or the box did not start."""


@dataclass(eq=False)
class _Runner:
    """A runner process in a principal's box: started, then connected to its socket, waiting for a script."""

    owner: str
    limits: Limits
    sdk: GeneratedSdk | None = None
    """The SDK loaded while it waits (sent as soon as it connects), if any."""
    connected: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    stream: anyio.abc.SocketStream | None = None
    stdout: bytearray = field(default_factory=bytearray)
    """What the process printed so far (as it arrives, so a process killed for its time keeps it)."""
    output: ExecResult | None = None
    error: PythonRuntimeError | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def kill(self) -> None:
        """Stop the runner: its agent connection closes, and the agent kills the process."""
        self.scope.cancel()

    async def started(self) -> None:
        """Wait until the runner is connected, or gone."""
        async with anyio.create_task_group() as tasks:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tasks.cancel_scope.cancel()

            tasks.start_soon(wait, self.connected)
            tasks.start_soon(wait, self.exited)


class PythonRuntime:
    """Runs scripts in full CPython, one sandbox box per principal; enter :meth:`running` before :meth:`run`.

    Args:
        data_dir: Where the boxes' state lives (``DATA_DIR/codemode-python``).
        backend: The sandbox backend: ``bubblewrap`` or ``docker``.
        backend_options: The backend's options (as in ``[servers.NAME.options.bubblewrap]``).
        limits: The default limits of a run.
        idle_stop: Seconds a runner waits for the next script, and a box without runs stays up after that.
        checker: The Monty executor whose type checker checks each script first (see
            :mod:`codemode._python_check`); None runs scripts unchecked.
        keep_ready: Start the next runner of a principal in the background after each run.
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
        keep_ready: bool = True,
    ) -> None:
        self.limits = limits or Limits(memory_bytes=256 * 1024 * 1024, cpu_seconds=30.0)
        self._data_dir = data_dir
        self._backend_name = backend
        self._backend_options = dict(backend_options or {})
        self._idle_stop = idle_stop
        self._checker = checker
        self._keep_ready = keep_ready
        self._manager: SandboxManager | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._unavailable: str | None = None
        self._locks: dict[str, anyio.Lock] = {}
        self._ready: dict[str, _Runner] = {}

    @asynccontextmanager
    async def running(self) -> AsyncGenerator[PythonRuntime]:
        """Keep the boxes' manager (and its idle reaper) up; runners and boxes stop when the block ends."""
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
        try:
            async with manager.running(), anyio.create_task_group() as tasks:
                self._manager, self._tasks = manager, tasks
                try:
                    yield self
                finally:
                    self._tasks = None
                    self._ready.clear()
                    tasks.cancel_scope.cancel()
        finally:
            self._manager = None

    async def settled(self) -> None:
        """Wait until the runners started in the background are connected (for benchmarks and tests)."""
        for runner in list(self._ready.values()):
            await runner.started()

    async def run(
        self, sdk: GeneratedSdk, code: str, call: ToolCaller, *, owner: str, limits: Limits | None = None
    ) -> ExecuteResult:
        """Run ``code`` in ``owner``'s box with every SDK call going to ``call``.

        Raises:
            PythonRuntimeError: The sandbox backend is unavailable (the message says why and what to do),
                or the box cannot be started.
        """
        limits = limits or self.limits
        self._running()
        for attempt in range(2):
            runner = self._take(owner, limits) if attempt == 0 else None
            runner = runner or self._start(owner, limits, idle=_START_SECONDS + limits.wall_seconds)
            try:
                outcome = await self._run_with(runner, sdk, code, call, limits)
            except BaseException:
                runner.kill()
                raise
            if outcome is not None and outcome.status == "type_error" and self._keep(owner, runner):
                return outcome  # the runner never got the script: it waits for the next one
            runner.kill()
            if outcome is not None:
                self._prepare(owner, limits, sdk)
                return outcome
        raise PythonRuntimeError("runtime 'python': the box's runner hung up before it got the script; try again")

    def _running(self) -> SandboxManager:
        if self._unavailable is not None:
            raise PythonRuntimeError(f"runtime 'python' is unavailable: {self._unavailable}")
        if self._manager is None:
            raise RuntimeError("the python runtime is not running; enter `runtime.running()` first")
        return self._manager

    # -- runners --------------------------------------------------------------------------------------

    def _take(self, owner: str, limits: Limits) -> _Runner | None:
        runner = self._ready.pop(owner, None)
        if runner is None:
            return None
        if runner.limits != limits or runner.exited.is_set():
            runner.kill()
            return None
        return runner

    def _keep(self, owner: str, runner: _Runner) -> bool:
        """Keep an unused runner ready for ``owner``'s next script, if it is alive and none is kept yet."""
        if not self._keep_ready or owner in self._ready or runner.exited.is_set() or runner.error is not None:
            return False
        self._ready[owner] = runner
        return True

    def _prepare(self, owner: str, limits: Limits, sdk: GeneratedSdk) -> None:
        if not self._keep_ready or self._tasks is None or owner in self._ready:
            return
        while len(self._ready) >= _MAX_READY:
            self._ready.pop(next(iter(self._ready))).kill()
        self._ready[owner] = self._start(owner, limits, idle=self._idle_stop, sdk=sdk)

    def _start(self, owner: str, limits: Limits, *, idle: float, sdk: GeneratedSdk | None = None) -> _Runner:
        if self._tasks is None or self._manager is None:
            raise RuntimeError("the python runtime is not running; enter `runtime.running()` first")
        runner = _Runner(owner, limits, sdk)
        self._tasks.start_soon(self._serve, self._manager, runner, idle)
        return runner

    async def _serve(self, manager: SandboxManager, runner: _Runner, idle: float) -> None:
        """Run one runner process to its end: box, socket, ``python3 -I -c RUNNER`` through the agent."""
        try:
            with runner.scope:
                await manager.backend.check()
                sandbox_id = await self._box_for(manager, runner.owner, runner.limits)
                async with manager.use(runner.owner, sandbox_id, policy_egress=()) as agent:
                    failure: SandboxError | None = None
                    name = f"code-{secrets.token_hex(8)}.sock"
                    path = manager.runtime_dir(sandbox_id) / "control" / name
                    listener = await anyio.create_unix_listener(path)
                    os.chmod(path, 0o666)  # the box connects as uid 65534
                    try:
                        async with listener, anyio.create_task_group() as tasks:

                            async def accept() -> None:
                                stream = await listener.accept()
                                await listener.aclose()  # one connection: nothing else in the box gets in
                                if runner.sdk is not None:
                                    await stream.send(_line(_sdk_fields(runner.sdk)))
                                runner.stream = stream
                                runner.connected.set()

                            tasks.start_soon(accept)
                            limit = runner.limits.max_output_chars * 4

                            async def printed(stream: str, chunk: bytes) -> None:
                                if stream == "stdout":
                                    runner.stdout += chunk[: max(limit - len(runner.stdout), 0)]

                            try:
                                runner.output = await agent.exec(
                                    ["python3", "-I", "-c", RUNNER, f"{CONTROL_DIR}/{name}"],
                                    timeout=idle,
                                    output_limit=limit,
                                    on_output=printed,
                                )
                            except SandboxError as error:
                                failure = error  # raised below, out of the task group, for `use` to see
                            tasks.cancel_scope.cancel()
                    finally:
                        with contextlib.suppress(OSError):
                            path.unlink()
                    if failure is not None:
                        raise failure
        except BackendUnavailableError as error:
            runner.error = PythonRuntimeError(f"runtime 'python' is unavailable: {error}")
        except SandboxError as error:
            runner.error = PythonRuntimeError(f"runtime 'python' could not start its sandbox: {error}")
        except PythonRuntimeError as error:
            runner.error = error
        finally:
            if self._ready.get(runner.owner) is runner:
                del self._ready[runner.owner]
            if runner.stream is not None:
                with anyio.CancelScope(shield=True):
                    await runner.stream.aclose()
            runner.exited.set()

    async def _box_for(self, manager: SandboxManager, owner: str, limits: Limits) -> str:
        lock = self._locks.setdefault(owner, anyio.Lock())
        async with lock:
            for record in manager.list(owner):
                if record.name == _BOX_NAME and record.profile.limits == _box_limits(limits):
                    return record.id
                await manager.destroy(owner, record.id)  # made under other limits: make it again
            profile = Profile(limits=_box_limits(limits))
            return (await manager.create(owner, name=_BOX_NAME, profile=profile)).id

    # -- one run --------------------------------------------------------------------------------------

    async def _run_with(
        self, runner: _Runner, sdk: GeneratedSdk, code: str, call: ToolCaller, limits: Limits
    ) -> ExecuteResult | None:
        """The run's outcome, or None when the runner hung up before it took the script (take another)."""
        type_errors: list[ExecuteResult] = []
        with anyio.move_on_after(_START_SECONDS + limits.wall_seconds) as starting:
            async with anyio.create_task_group() as tasks:
                if self._checker is not None:
                    checker = self._checker

                    async def check() -> None:
                        # While the runner starts: it waits for the script before it runs anything.
                        if errors := await check_python(checker, sdk, code):
                            type_errors.append(errors)

                    tasks.start_soon(check)
                await runner.started()
        if starting.cancelled_caught:
            raise PythonRuntimeError(f"runtime 'python': the box's Python did not start within {_START_SECONDS:g} s")
        if runner.error is not None:
            raise runner.error
        if type_errors:
            return type_errors[0]
        stream = runner.stream
        if stream is None:
            output = runner.output
            if output is not None and output.timed_out:
                return None  # a runner kept ready that waited too long: take a fresh one
            exit_code, stderr = (output.exit_code, output.stderr) if output is not None else (None, b"")
            return ExecuteResult("error", error=_died(exit_code, stderr, limits))
        session = Session(call, limits, frozenset(f.target for f in sdk.functions))
        script: dict[str, Any] = {
            "run": True,
            "code": code,
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
        }
        if runner.sdk is not sdk:
            script |= _sdk_fields(sdk)
        try:
            await stream.send(_line(script))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return None
        with anyio.move_on_after(limits.wall_seconds) as deadline:
            await session.serve(stream)
            with anyio.move_on_after(_EXIT_GRACE):
                await runner.exited.wait()
        if deadline.cancelled_caught or (runner.output is not None and runner.output.timed_out):
            runner.kill()
            await runner.exited.wait()
            stdout, truncated = _stdout(runner, limits)
            return ExecuteResult(
                "error",
                error=f"the run took longer than {limits.wall_seconds} s and was stopped",
                stdout=stdout,
                calls=tuple(session.calls),
                truncated=truncated,
            )
        return _outcome(session, runner, limits)


def _sdk_fields(sdk: GeneratedSdk) -> dict[str, Any]:
    return {"sdk": sdk.source, "namespaces": list(dict.fromkeys(f.namespace for f in sdk.functions))}


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode() + b"\n"


def _stdout(runner: _Runner, limits: Limits) -> tuple[str, bool]:
    """What the runner printed, cut to the limit, and whether it was cut."""
    text = runner.stdout.decode(errors="replace")
    agent_cut = runner.output is not None and runner.output.stdout_truncated
    return text[: limits.max_output_chars], agent_cut or len(text) > limits.max_output_chars


def _outcome(session: Session, runner: _Runner, limits: Limits) -> ExecuteResult:
    """The answer from what the runner reported and what it printed."""
    calls = tuple(session.calls)
    output = runner.output
    stdout_text, truncated = _stdout(runner, limits)
    done = session.done
    if done is None:
        exit_code, stderr = (output.exit_code, output.stderr) if output is not None else (None, b"")
        return ExecuteResult(
            "error", error=_died(exit_code, stderr, limits), stdout=stdout_text, calls=calls, truncated=truncated
        )
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
