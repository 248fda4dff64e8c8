"""The host side of the sandbox agent protocol (see ``_agent.py``): one connection per request.

The agent's socket lives in a directory the box can write, so the box could swap ``agent.sock`` for a
symlink to some host socket. The client therefore never follows a path the box controls: it opens the
directory it created, opens ``agent.sock`` there with ``O_PATH | O_NOFOLLOW``, checks it is a socket and
connects through ``/proc/self/fd/N``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from servers.sandbox._backend import (
    ExecResult,
    OutputCallback,
    ProcessInfo,
    ProcessNotFoundError,
    SandboxFileError,
    SandboxRequestError,
    SandboxStateError,
)

__all__ = ["KILL_GRACE", "AgentClient"]

KILL_GRACE = 5.0
"""Seconds the host waits past a command's timeout before it stops trusting the agent."""
_MAX_FRAME = 64 * 1024 * 1024


class AgentClient:
    """Talks to the agent of one box through ``control_dir / "agent.sock"``."""

    def __init__(self, control_dir: Path) -> None:
        self.control_dir = control_dir

    async def _connect(self) -> SocketStream:
        try:
            dir_fd = os.open(self.control_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as error:
            raise SandboxStateError(f"sandbox control directory {self.control_dir} is missing: {error}") from None
        try:
            fd = os.open("agent.sock", os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            raise SandboxStateError("the sandbox agent is not listening (no agent.sock)") from None
        finally:
            os.close(dir_fd)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                raise SandboxStateError("the sandbox's agent.sock is not a socket")
            return await anyio.connect_unix(f"/proc/self/fd/{fd}")
        except OSError as error:
            raise SandboxStateError(f"cannot reach the sandbox agent: {error}") from None
        finally:
            os.close(fd)

    @staticmethod
    async def _send(stream: SocketStream, request: Mapping[str, Any]) -> None:
        data = json.dumps(request).encode()
        await stream.send(struct.pack(">I", len(data)) + data)

    @staticmethod
    async def _receive(reader: BufferedByteReceiveStream) -> dict[str, Any]:
        try:
            (size,) = struct.unpack(">I", await reader.receive_exactly(4))
            if size > _MAX_FRAME:
                raise SandboxStateError(f"the sandbox agent sent a frame of {size} bytes")
            frame = json.loads(await reader.receive_exactly(size))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            raise SandboxStateError("the sandbox agent closed the connection (the box may have died)") from None
        except ValueError:
            raise SandboxStateError("the sandbox agent sent a malformed frame") from None
        if not isinstance(frame, dict):
            raise SandboxStateError("the sandbox agent sent a malformed frame")
        return cast(dict[str, Any], frame)

    async def request(self, request: Mapping[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        """Send one request and return its ``ok`` answer.

        Raises:
            SandboxStateError: The agent is unreachable, slow or confused.
            SandboxRequestError: The agent refused the request.
            SandboxFileError: A file operation failed.
            ProcessNotFoundError: No such background process.
        """
        answer: dict[str, Any] = {}
        with anyio.move_on_after(timeout) as scope:
            stream = await self._connect()
            async with stream:
                await self._send(stream, request)
                answer = await self._receive(BufferedByteReceiveStream(stream))
        if scope.cancelled_caught:
            raise SandboxStateError(f"the sandbox agent did not answer {request.get('op')!r} within {timeout:g}s")
        return _checked(answer)

    async def ping(self) -> None:
        """Return once the agent answers.

        Raises:
            SandboxStateError: It does not.
        """
        await self.request({"op": "ping"}, timeout=5.0)

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float,
        output_limit: int,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """Run a command to completion (or its timeout), streaming its output to ``on_output``.

        Raises:
            SandboxStateError: The agent is gone, or did not stop the command within ``KILL_GRACE`` of the
                timeout (the caller should stop the box).
        """
        out = {"stdout": bytearray(), "stderr": bytearray()}
        stream = await self._connect()
        async with stream:
            await self._send(
                stream,
                {
                    "op": "exec",
                    "argv": list(argv),
                    "stdin": base64.b64encode(stdin).decode() if stdin is not None else None,
                    "env": dict(env or {}),
                    "cwd": cwd,
                    "timeout": timeout,
                    "output_limit": output_limit,
                },
            )
            reader = BufferedByteReceiveStream(stream)
            frame: dict[str, Any] = {}
            with anyio.move_on_after(timeout + KILL_GRACE) as scope:
                while True:
                    frame = await self._receive(reader)
                    kind = frame.get("t")
                    if kind == "out":
                        name = "stderr" if frame.get("s") == "stderr" else "stdout"
                        chunk = base64.b64decode(frame.get("d") or "")
                        room = output_limit - len(out[name])  # never trust the agent's own accounting
                        out[name] += chunk[: max(room, 0)]
                        if on_output is not None and chunk:
                            await on_output(name, chunk)
                    elif kind == "exit":
                        break
                    else:
                        _checked(frame)
                        raise SandboxStateError(f"the sandbox agent sent an unexpected frame {kind!r}")
            if scope.cancelled_caught:
                raise SandboxStateError(f"the command did not stop within {timeout + KILL_GRACE:g}s of its start")
        code = frame.get("code")
        return ExecResult(
            exit_code=code if isinstance(code, int) else None,
            stdout=bytes(out["stdout"]),
            stderr=bytes(out["stderr"]),
            stdout_truncated=bool(frame.get("stdout_truncated")),
            stderr_truncated=bool(frame.get("stderr_truncated")),
            timed_out=bool(frame.get("timed_out")),
            duration=float(frame.get("duration") or 0.0),
        )

    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> ProcessInfo:
        """Start a background process."""
        answer = await self.request({"op": "spawn", "argv": list(argv), "env": dict(env or {}), "cwd": cwd})
        return _process(answer["process"])

    async def processes(self) -> list[ProcessInfo]:
        """The background processes started in this box (running or exited)."""
        answer = await self.request({"op": "ps"})
        return [_process(p) for p in answer["processes"]]

    async def logs(self, process_id: str, *, offset: int, limit: int) -> tuple[bytes, int, int, ProcessInfo]:
        """Output of a background process from ``offset``: (data, its real offset, next offset, process)."""
        answer = await self.request({"op": "logs", "id": process_id, "offset": offset, "limit": limit})
        data = base64.b64decode(answer["d"])[:limit]
        return data, int(answer["offset"]), int(answer["next"]), _process(answer["process"])

    async def kill(self, process_id: str) -> ProcessInfo:
        """Stop a background process (SIGTERM to its group, SIGKILL after a grace period)."""
        return _process((await self.request({"op": "kill", "id": process_id}))["process"])

    async def read_file(self, path: str, *, limit: int) -> bytes:
        """The bytes of a file under the workspace (relative paths) or anywhere the box can read."""
        answer = await self.request({"op": "read", "path": path, "limit": limit})
        data = base64.b64decode(answer["d"])
        if len(data) > limit:
            raise SandboxFileError(f"{path} is larger than {limit} bytes")
        return data

    async def write_file(self, path: str, data: bytes, *, append: bool = False, mode: int = 0o644) -> int:
        """Write (or append to) a file, creating parent directories; returns the file's new size."""
        answer = await self.request(
            {"op": "write", "path": path, "d": base64.b64encode(data).decode(), "append": append, "mode": mode}
        )
        return int(answer["size"])

    async def list_files(self, path: str) -> list[dict[str, Any]]:
        """Entries of a directory: name, type (file/dir/symlink/other), size, mtime, mode."""
        return list((await self.request({"op": "list", "path": path}))["entries"])

    async def delete(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file, or a directory tree with ``recursive``."""
        await self.request({"op": "delete", "path": path, "recursive": recursive})


def _checked(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("t") == "ok":
        return answer
    if answer.get("t") == "error":
        message = str(answer.get("message"))
        kind = answer.get("kind")
        if kind == "file":
            raise SandboxFileError(message)
        if kind == "process":
            raise ProcessNotFoundError(message)
        raise SandboxRequestError(message)
    raise SandboxStateError(f"the sandbox agent sent an unexpected answer {answer.get('t')!r}")


def _process(raw: Any) -> ProcessInfo:
    data = cast(dict[str, Any], raw)
    code = data.get("exit_code")
    return ProcessInfo(
        id=str(data["id"]),
        command=[str(a) for a in data["command"]],
        pid=int(data["pid"]),
        running=bool(data["running"]),
        exit_code=code if isinstance(code, int) else None,
        started_at=float(data["started_at"]),
        log_bytes=int(data.get("log_bytes") or 0),
    )
