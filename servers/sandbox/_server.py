"""The ``sandbox`` MCP server: its tools, and who is calling.

The caller is the principal the portal names in ``_meta["io.dockyard/caller"]`` (``user:alice``,
``service:bot`` or ``local``) with the egress allow-list its policy grants. The portal sends that key only
to servers it mounts in-process and never forwards a client's own ``_meta``; a server running alone
(``dockyard server sandbox --stdio``) has a single, trusted client, is ``local`` to it, and takes the
allow-list from its ``egress`` option.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, cast

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from servers.sandbox._backend import Backend, SandboxError, backend_from_name
from servers.sandbox._manager import Record, SandboxManager
from servers.sandbox._settings import SandboxSettings, parse_options

__all__ = ["CALLER_META", "create_server"]

CALLER_META = "io.dockyard/caller"
_MAX_CODE = 100_000

_SANDBOX_ID_ARG = Annotated[str, Field(description="Id of one of your sandboxes (from create or list).")]
_TIMEOUT_ARG = Annotated[
    float | None, Field(description="Seconds before the command is killed (default and maximum: wall_seconds).", gt=0)
]
_ENV_ARG = Annotated[dict[str, str] | None, Field(description="Extra environment for this command.")]
_CWD_ARG = Annotated[str | None, Field(description="Working directory (default /workspace).")]
_PATH_ARG = Annotated[
    str, Field(description="Path relative to /workspace (or absolute inside the sandbox).", min_length=1)
]

P = ParamSpec("P")
R = TypeVar("R")


class SandboxInfo(BaseModel):
    """A sandbox as the tools describe it."""

    id: str
    name: str
    owner: str
    memory_mb: int
    cpus: float
    pids: int
    wall_seconds: float
    disk_mb: int
    egress: list[str]
    env: dict[str, str]
    created_at: float
    last_used_at: float
    running: bool


class ExecOutput(BaseModel):
    """The outcome of a command."""

    exit_code: int | None = Field(description="Exit status (128+N for signal N); null when killed at its timeout.")
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_seconds: float
    egress_blocked: list[str] = Field(
        default_factory=list[str],
        description="Requests the egress proxy refused while the command ran ('METHOD host:port: reason').",
    )


class FileContent(BaseModel):
    """A file read from a sandbox."""

    path: str
    encoding: Literal["utf-8", "base64"]
    content: str
    size: int


class FileEntry(BaseModel):
    """One entry of a directory listing."""

    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float


class ProcessOut(BaseModel):
    """A background process."""

    id: str
    command: list[str]
    pid: int
    running: bool
    exit_code: int | None
    started_at: float
    log_bytes: int


class LogChunk(BaseModel):
    """Output of a background process (stdout and stderr interleaved) from ``offset``."""

    process: ProcessOut
    offset: int = Field(description="Where this chunk starts; above the asked offset when older output was dropped.")
    next_offset: int = Field(description="Pass this as offset to read on.")
    output: str


class EgressDecision(BaseModel):
    """One request that went through (or was stopped by) the sandbox's egress proxy."""

    time: float
    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    credential_added: bool


def _caller(ctx: Context, settings: SandboxSettings) -> tuple[str, tuple[str, ...]]:
    meta = cast(Mapping[str, Any], ctx.request_context.meta or {})
    caller = meta.get(CALLER_META)
    if isinstance(caller, dict):
        data = cast(dict[str, Any], caller)
        principal = data.get("principal")
        egress = data.get("egress") or []
        if isinstance(principal, str) and principal and isinstance(egress, list):
            return principal, tuple(str(e) for e in cast(list[Any], egress))
    return "local", settings.egress


def _tool_errors(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn a :class:`SandboxError` into a tool failure the model can read (``isError: true``)."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except SandboxError as error:
            raise ToolError(str(error)) from None

    return wrapper


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def create_server(options: Mapping[str, Any] | None = None, *, data_dir: Path | None = None) -> MCPServer[Any]:
    """The sandbox server, configured by the ``options`` table of its ``[servers.NAME]`` entry.

    Args:
        options: See :mod:`servers.sandbox._settings` and the README's Sandbox section.
        data_dir: The portal's data directory; sandboxes live in ``data_dir/sandboxes``.

    Raises:
        ValueError: An option is invalid, or the backend is unknown or cannot be loaded.
    """
    settings = parse_options(options)
    try:
        backend: Backend = backend_from_name(settings.backend, settings.backend_options)
    except SandboxError as error:
        raise ValueError(str(error)) from None
    manager = SandboxManager(settings, backend, root=(data_dir or Path(".dockyard")) / "sandboxes")
    return build_server(manager)


def build_server(manager: SandboxManager) -> MCPServer[Any]:  # noqa: C901 - one closure per tool
    """The MCP server over an existing manager (tests share one manager between servers)."""
    settings = manager.settings

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        async with manager.running():
            yield {}

    server: MCPServer[Any] = MCPServer(
        "sandbox",
        instructions=(
            "Isolated computers for running shell commands and Python. Create a sandbox, then run commands, "
            "read and write files under its workspace (/workspace, kept between calls), and start background "
            "processes. The network is off unless the sandbox was created with egress hosts; then HTTP(S) "
            "goes through a proxy (HTTP_PROXY is set) that admits only those hosts. Call http:// URLs of "
            "hosts with configured credentials: the proxy adds them and upgrades to HTTPS."
        ),
        lifespan=lifespan,
    )

    async def info(record: Record) -> SandboxInfo:
        limits = record.profile.limits
        return SandboxInfo(
            id=record.id,
            name=record.name,
            owner=record.owner,
            memory_mb=limits.memory_mb,
            cpus=limits.cpus,
            pids=limits.pids,
            wall_seconds=limits.wall_seconds,
            disk_mb=limits.disk_mb,
            egress=list(record.profile.egress),
            env=dict(record.profile.env),
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            running=await manager.backend.is_running(record.id),
        )

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Create a sandbox", read_only_hint=False, destructive_hint=False, open_world_hint=False
        ),
    )
    @_tool_errors
    async def create(
        ctx: Context,
        name: Annotated[str, Field(description="A label for you; need not be unique.", max_length=100)] = "",
        memory_mb: Annotated[int | None, Field(description="Memory limit in MiB (default from config).")] = None,
        cpus: Annotated[float | None, Field(description="CPU share in cores.")] = None,
        pids: Annotated[int | None, Field(description="Most processes and threads at once.")] = None,
        wall_seconds: Annotated[
            float | None, Field(description="Default and longest time one command may run.")
        ] = None,
        disk_mb: Annotated[int | None, Field(description="Workspace size in MiB.")] = None,
        env: Annotated[
            dict[str, str] | None, Field(description="Environment of every command (never put secrets here).")
        ] = None,
        egress: Annotated[
            list[str] | None,
            Field(
                description="Hosts the sandbox may reach through the proxy: 'api.github.com', '*.example.com', "
                "'host:port'. Default: everything your policy grants; [] for no network."
            ),
        ] = None,
    ) -> SandboxInfo:
        """Create a new, empty sandbox you own: a Linux computer with Python and a persistent /workspace.

        It has no network unless egress hosts are allowed. It starts on first use and is destroyed after a long
        idle time.
        """
        principal, policy = _caller(ctx, settings)
        profile = manager.profile(
            limits={
                "memory_mb": memory_mb,
                "cpus": cpus,
                "pids": pids,
                "wall_seconds": wall_seconds,
                "disk_mb": disk_mb,
            },
            env=env,
            egress=egress,
            policy_egress=policy,
        )
        await manager.backend.check()
        return await info(await manager.create(principal, name=name, profile=profile))

    @server.tool(
        name="list",
        annotations=types.ToolAnnotations(title="List your sandboxes", read_only_hint=True, open_world_hint=False),
    )
    @_tool_errors
    async def list_sandboxes(ctx: Context) -> list[SandboxInfo]:
        """List the sandboxes you own."""
        principal, _ = _caller(ctx, settings)
        return [await info(r) for r in manager.list(principal)]

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Destroy a sandbox",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )
    @_tool_errors
    async def destroy(ctx: Context, sandbox_id: _SANDBOX_ID_ARG) -> str:
        """Destroy one of your sandboxes: stop its processes and delete its files for good."""
        principal, _ = _caller(ctx, settings)
        await manager.destroy(principal, sandbox_id)
        return f"sandbox {sandbox_id} destroyed"

    async def _run(
        ctx: Context,
        sandbox_id: str,
        argv: list[str],
        *,
        stdin: bytes | None,
        env: dict[str, str] | None,
        cwd: str | None,
        timeout: float | None,
    ) -> ExecOutput:
        principal, policy = _caller(ctx, settings)
        record = manager.get(principal, sandbox_id)
        limits = record.profile.limits
        if timeout is not None and timeout > limits.wall_seconds:
            raise ToolError(
                f"timeout {timeout:g}s is above this sandbox's wall_seconds limit of {limits.wall_seconds:g}s"
            )
        chunks = 0

        async def on_output(stream: str, chunk: bytes) -> None:
            nonlocal chunks
            chunks += 1
            await ctx.report_progress(chunks, message=f"{stream}: {_text(chunk)[-2000:]}")

        began = time.time()
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            result = await agent.exec(
                argv,
                stdin=stdin,
                env=env,
                cwd=cwd,
                timeout=timeout or limits.wall_seconds,
                output_limit=limits.output_bytes,
                on_output=on_output,
            )
        return ExecOutput(
            exit_code=result.exit_code,
            stdout=_text(result.stdout),
            stderr=_text(result.stderr),
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            timed_out=result.timed_out,
            duration_seconds=round(result.duration, 4),
            egress_blocked=[
                f"{e.method} {e.host}:{e.port}: {e.reason}"
                for e in manager.events(principal, sandbox_id)
                if not e.allowed and e.time >= began
            ],
        )

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Run a shell command", read_only_hint=False, destructive_hint=False, open_world_hint=True
        ),
    )
    @_tool_errors
    async def exec(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        command: Annotated[str, Field(description="A shell command line, run with /bin/sh -c.", min_length=1)],
        stdin: Annotated[str | None, Field(description="Text fed to the command's standard input.")] = None,
        env: _ENV_ARG = None,
        cwd: _CWD_ARG = None,
        timeout: _TIMEOUT_ARG = None,
    ) -> ExecOutput:
        """Run a shell command in your sandbox and return its exit code and output.

        Output is streamed as progress notifications while it runs; each stream keeps at most the sandbox's
        output limit (the rest is dropped and flagged as truncated). Files in /workspace persist between calls.
        """
        return await _run(
            ctx, sandbox_id, ["/bin/sh", "-c", command],
            stdin=stdin.encode() if stdin is not None else None, env=env, cwd=cwd, timeout=timeout,
        )  # fmt: skip

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Run Python code", read_only_hint=False, destructive_hint=False, open_world_hint=True
        ),
    )
    @_tool_errors
    async def run_python(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        code: Annotated[str, Field(description="Python 3 source, run as a script.", min_length=1)],
        timeout: _TIMEOUT_ARG = None,
    ) -> ExecOutput:
        """Run Python code in your sandbox (python3, standard library); print what you want to see."""
        if len(code.encode()) > _MAX_CODE:
            raise ToolError(
                f"code has more than {_MAX_CODE} bytes: write it to a file with write_file and run "
                "'python3 FILE' with exec"
            )
        return await _run(ctx, sandbox_id, ["python3", "-c", code], stdin=None, env=None, cwd=None, timeout=timeout)

    @server.tool(
        annotations=types.ToolAnnotations(title="Read a file", read_only_hint=True, open_world_hint=False),
    )
    @_tool_errors
    async def read_file(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        path: _PATH_ARG,
        encoding: Annotated[Literal["utf-8", "base64"], Field(description="'base64' for binary files.")] = "utf-8",
    ) -> FileContent:
        """Read a file of your sandbox (up to the sandbox's file size limit)."""
        principal, policy = _caller(ctx, settings)
        limit = manager.get(principal, sandbox_id).profile.limits.file_bytes
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            data = await agent.read_file(path, limit=limit)
        if encoding == "utf-8":
            try:
                content = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ToolError(f"{path} is not UTF-8 text; read it with encoding='base64'") from None
        else:
            content = base64.b64encode(data).decode()
        return FileContent(path=path, encoding=encoding, content=content, size=len(data))

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Write a file", read_only_hint=False, destructive_hint=False, open_world_hint=False
        ),
    )
    @_tool_errors
    async def write_file(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        path: _PATH_ARG,
        content: Annotated[str, Field(description="The file's content (text, or base64 with encoding='base64').")],
        encoding: Annotated[Literal["utf-8", "base64"], Field(description="How content is encoded.")] = "utf-8",
        append: Annotated[bool, Field(description="Append instead of replacing.")] = False,
    ) -> str:
        """Write a file in your sandbox, creating parent directories (replaces an existing file)."""
        principal, policy = _caller(ctx, settings)
        limit = manager.get(principal, sandbox_id).profile.limits.file_bytes
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error:
                raise ToolError("content is not valid base64") from None
        else:
            data = content.encode()
        if len(data) > limit:
            raise ToolError(f"content has {len(data)} bytes, more than this sandbox's file limit of {limit}")
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            size = await agent.write_file(path, data, append=append)
        return f"wrote {len(data)} bytes to {path} (now {size} bytes)"

    @server.tool(
        annotations=types.ToolAnnotations(title="List files", read_only_hint=True, open_world_hint=False),
    )
    @_tool_errors
    async def list_files(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        path: Annotated[str, Field(description="Directory relative to /workspace.")] = ".",
    ) -> list[FileEntry]:
        """List a directory of your sandbox."""
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            entries = await agent.list_files(path)
        return [FileEntry.model_validate(e) for e in entries]

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Delete a file",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    @_tool_errors
    async def delete_file(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        path: _PATH_ARG,
        recursive: Annotated[bool, Field(description="Delete a directory and everything in it.")] = False,
    ) -> str:
        """Delete a file (or, with recursive, a directory) of your sandbox."""
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            await agent.delete(path, recursive=recursive)
        return f"deleted {path}"

    def process_out(p: Any) -> ProcessOut:
        return ProcessOut(
            id=p.id, command=p.command, pid=p.pid, running=p.running, exit_code=p.exit_code,
            started_at=p.started_at, log_bytes=p.log_bytes,
        )  # fmt: skip

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Start a background process", read_only_hint=False, destructive_hint=False, open_world_hint=True
        ),
    )
    @_tool_errors
    async def start_process(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        command: Annotated[str, Field(description="A shell command line, run with /bin/sh -c.", min_length=1)],
        env: _ENV_ARG = None,
        cwd: _CWD_ARG = None,
    ) -> ProcessOut:
        """Start a long-running command (a server, a watcher) in the background; read its output with process_logs.

        It runs until it exits, you stop it, or the sandbox's box stops (idle, destroyed, portal restart).
        """
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            return process_out(await agent.spawn(["/bin/sh", "-c", command], env=env, cwd=cwd))

    @server.tool(
        annotations=types.ToolAnnotations(
            title="List background processes", read_only_hint=True, open_world_hint=False
        ),
    )
    @_tool_errors
    async def list_processes(ctx: Context, sandbox_id: _SANDBOX_ID_ARG) -> list[ProcessOut]:
        """List the background processes of your sandbox, running or finished."""
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            return [process_out(p) for p in await agent.processes()]

    @server.tool(
        annotations=types.ToolAnnotations(title="Read a process's output", read_only_hint=True, open_world_hint=False),
    )
    @_tool_errors
    async def process_logs(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        process_id: Annotated[str, Field(description="Id from start_process, like 'p1'.")],
        offset: Annotated[int, Field(description="Byte offset to read from (next_offset of the last call).", ge=0)] = 0,
        limit: Annotated[int, Field(description="Most bytes to return.", ge=1, le=1024 * 1024)] = 65536,
    ) -> LogChunk:
        """Read the output (stdout and stderr) of a background process; the last 1 MiB is kept."""
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            data, start, next_offset, process = await agent.logs(process_id, offset=offset, limit=limit)
        return LogChunk(process=process_out(process), offset=start, next_offset=next_offset, output=_text(data))

    @server.tool(
        annotations=types.ToolAnnotations(
            title="Stop a background process",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    @_tool_errors
    async def stop_process(
        ctx: Context,
        sandbox_id: _SANDBOX_ID_ARG,
        process_id: Annotated[str, Field(description="Id from start_process, like 'p1'.")],
    ) -> ProcessOut:
        """Stop a background process (SIGTERM to its process group, then SIGKILL)."""
        principal, policy = _caller(ctx, settings)
        async with manager.use(principal, sandbox_id, policy_egress=policy) as agent:
            return process_out(await agent.kill(process_id))

    @server.tool(
        annotations=types.ToolAnnotations(title="Show egress decisions", read_only_hint=True, open_world_hint=False),
    )
    @_tool_errors
    async def egress_log(ctx: Context, sandbox_id: _SANDBOX_ID_ARG) -> list[EgressDecision]:
        """Recent requests of your sandbox through its egress proxy, allowed and blocked (since the box started)."""
        principal, _ = _caller(ctx, settings)
        return [
            EgressDecision(
                time=e.time,
                method=e.method,
                host=e.host,
                port=e.port,
                allowed=e.allowed,
                reason=e.reason,
                credential_added=e.credential,
            )
            for e in manager.events(principal, sandbox_id)
        ]

    return server
