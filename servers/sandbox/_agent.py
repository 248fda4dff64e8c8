"""The sandbox agent: runs *inside* a box, as uid 65534, and does what the host asks over a Unix socket.

Standard library only (it runs on the box's ``python3``, not the portal's); started as
``python3 -I -S /run/dockyard/agent.py``. It listens on ``/run/dockyard/control/agent.sock``; each
connection carries one request and its answer. Frames are a 4-byte big-endian length and a JSON object;
bytes travel base64-encoded.

Requests (``op``) and their answers:

* ``ping`` → ``{"t": "ok"}``.
* ``exec`` {argv, stdin?, env, cwd, timeout, output_limit} → any number of
  ``{"t": "out", "s": "stdout"|"stderr", "d": b64}``, then ``{"t": "exit", "code", "timed_out",
  "stdout_truncated", "stderr_truncated", "duration"}``. Output past ``output_limit`` (per stream) is read
  and dropped. The command runs in its own process group, killed when it runs past ``timeout`` or when
  the host closes the connection.
* ``spawn`` {argv, env, cwd} → ``{"t": "ok", "process": {...}}``; output goes to an in-memory ring
  buffer of ``LOG_BYTES``.
* ``ps`` → ``{"t": "ok", "processes": [...]}``; ``logs`` {id, offset, limit} → ``{"t": "ok", "d", "offset",
  "next", "process"}``; ``kill`` {id} → ``{"t": "ok", "process"}``.
* ``read`` {path, limit}, ``write`` {path, d, mode, append}, ``list`` {path}, ``delete`` {path, recursive}.

Errors come back as ``{"t": "error", "kind": "file"|"process"|"request", "message"}``.

Every process a request starts carries ``DOCKYARD_JOB`` in its environment. When a command ends, the agent
kills every process of the box that belongs to no live job (a command's or a running background
process's): nothing a command started outlives it, however it detached, unless it was started with
``spawn``.

When ``/run/dockyard/egress/egress.sock`` exists, the agent also forwards TCP connections to
``127.0.0.1:3128`` onto that socket, the only way out of the box.
"""

import base64
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

CONTROL = "/run/dockyard/control/agent.sock"
EGRESS = "/run/dockyard/egress/egress.sock"
EGRESS_PORT = 3128
LOG_BYTES = 1024 * 1024
MAX_FRAME = 64 * 1024 * 1024
KILL_GRACE = 0.5
JOB_MARK = "DOCKYARD_JOB"


class RequestError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def send(conn, obj):
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack(">I", len(data)) + data)


def recv_exact(conn, n):
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(conn):
    (size,) = struct.unpack(">I", recv_exact(conn, 4))
    if size > MAX_FRAME:
        raise RequestError("request", f"frame of {size} bytes is too large")
    return json.loads(recv_exact(conn, size))


def b64(data):
    return base64.b64encode(data).decode("ascii")


def kill_group(proc):
    # Repeat: a fork bomb in the group may fork while the first signal is delivered.
    for _ in range(20):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return


def exit_code(returncode):
    return 128 - returncode if returncode < 0 else returncode


def base_env(extra, job):
    env = dict(os.environ)
    env.update(extra or {})
    env[JOB_MARK] = job
    return env


def job_of(pid):
    """The job a process was started for (its DOCKYARD_JOB), or None when unreadable or missing."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(JOB_MARK.encode() + b"="):
            return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def ancestors(pid):
    found = set()
    while pid and pid not in found:
        found.add(pid)
        pid = parent_of(pid)
    return found


class Background:
    """A background process and the tail of its output."""

    def __init__(self, pid_id, argv, proc):
        self.id = pid_id
        self.argv = argv
        self.proc = proc
        self.started_at = time.time()
        self.buffer = bytearray()
        self.start = 0  # offset of buffer[0] in the whole output
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                break
            with self.lock:
                self.buffer += chunk
                excess = len(self.buffer) - LOG_BYTES
                if excess > 0:
                    del self.buffer[:excess]
                    self.start += excess
        self.proc.wait()

    def total(self):
        return self.start + len(self.buffer)

    def info(self):
        code = self.proc.poll()
        return {
            "id": self.id,
            "command": self.argv,
            "pid": self.proc.pid,
            "running": code is None,
            "exit_code": None if code is None else exit_code(code),
            "started_at": self.started_at,
            "log_bytes": self.total(),
        }


class Agent:
    def __init__(self):
        self.processes = {}
        self.counter = 0
        self.spawned = 0
        self.execs = set()
        self.lock = threading.Lock()

    def sweep(self):
        """Kill every process that belongs to no live job.

        That is what a finished command left behind, however it detached (new session, new group, double
        fork), and anything that hid its job mark.
        """
        me = os.getpid()
        protected = ancestors(me)
        with self.lock:
            live = set(self.execs) | {p.id for p in self.processes.values() if p.proc.poll() is None}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in protected or parent_of(pid) in (me, None):
                continue  # the agent, its ancestors, and the leaders of jobs (tracked by their Popen)
            if job_of(pid) not in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def handle(self, conn):
        try:
            with conn:
                try:
                    request = recv(conn)
                    op = request.get("op")
                    method = getattr(self, "op_" + str(op), None)
                    if method is None:
                        raise RequestError("request", f"unknown op {op!r}")
                    method(conn, request)
                except RequestError as error:
                    send(conn, {"t": "error", "kind": error.kind, "message": str(error)})
                except OSError as error:
                    send(conn, {"t": "error", "kind": "file", "message": f"{error.strerror or error}"})
        except (EOFError, OSError, ValueError):
            pass

    def op_ping(self, conn, request):
        send(conn, {"t": "ok", "pid": os.getpid()})

    def _popen(self, request, job, **kwargs):
        argv = request.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise RequestError("request", "argv must be a non-empty list of strings")
        try:
            return argv, subprocess.Popen(
                argv,
                env=base_env(request.get("env"), job),
                cwd=request.get("cwd") or "/workspace",
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
        except OSError as error:
            raise RequestError("request", f"cannot run {argv[0]!r}: {error.strerror or error}") from None

    def op_exec(self, conn, request):
        stdin_data = base64.b64decode(request["stdin"]) if request.get("stdin") else None
        limit = int(request.get("output_limit") or LOG_BYTES)
        timeout = float(request.get("timeout") or 60)
        started = time.monotonic()
        with self.lock:
            self.counter += 1
            job = f"e{self.counter}"
            self.execs.add(job)
        try:
            self._exec(conn, request, job, stdin_data, limit, timeout, started)
        finally:
            with self.lock:
                self.execs.discard(job)
            self.sweep()

    def _exec(self, conn, request, job, stdin_data, limit, timeout, started):
        _, proc = self._popen(
            request,
            job,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        if stdin_data is not None:
            threading.Thread(target=self._feed, args=(proc, stdin_data), daemon=True).start()
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        sel.register(conn, selectors.EVENT_READ, "host")
        kept = {"stdout": 0, "stderr": 0}
        truncated = {"stdout": False, "stderr": False}
        timed_out = False
        deadline = started + timeout
        try:
            while len(sel.get_map()) > 1:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(min(remaining, 1.0)):
                    if key.data == "host":
                        kill_group(proc)  # the host hung up: it no longer wants this command
                        return
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    room = limit - kept[key.data]
                    if room < len(chunk):
                        truncated[key.data] = True
                        chunk = chunk[: max(room, 0)]
                    if chunk:
                        kept[key.data] += len(chunk)
                        send(conn, {"t": "out", "s": key.data, "d": b64(chunk)})
            if not timed_out:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            kill_group(proc)  # also reaps whatever the command left running in its group
            sel.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            stdout.close()
            stderr.close()
        send(
            conn,
            {
                "t": "exit",
                "code": None if timed_out else exit_code(proc.returncode),
                "timed_out": timed_out,
                "stdout_truncated": truncated["stdout"],
                "stderr_truncated": truncated["stderr"],
                "duration": time.monotonic() - started,
            },
        )

    @staticmethod
    def _feed(proc, data):
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:
            pass

    def op_spawn(self, conn, request):
        with self.lock:
            self.spawned += 1
            job = f"p{self.spawned}"
            self.execs.add(job)  # live before it starts, so a sweep never takes its first children
        try:
            argv, proc = self._popen(
                request, job, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            with self.lock:
                process = Background(job, argv, proc)
                self.processes[process.id] = process
        finally:
            with self.lock:
                self.execs.discard(job)
        send(conn, {"t": "ok", "process": process.info()})

    def _process(self, request):
        process = self.processes.get(request.get("id"))
        if process is None:
            raise RequestError("process", f"no background process {request.get('id')!r}")
        return process

    def op_ps(self, conn, request):
        send(conn, {"t": "ok", "processes": [p.info() for p in list(self.processes.values())]})

    def op_logs(self, conn, request):
        process = self._process(request)
        offset = max(int(request.get("offset") or 0), 0)
        limit = int(request.get("limit") or LOG_BYTES)
        with process.lock:
            begin = max(offset, process.start)
            data = bytes(process.buffer[begin - process.start : begin - process.start + limit])
        send(conn, {"t": "ok", "d": b64(data), "offset": begin, "next": begin + len(data), "process": process.info()})

    def op_kill(self, conn, request):
        process = self._process(request)
        if process.proc.poll() is None:
            try:
                os.killpg(process.proc.pid, signal.SIGTERM)
                process.proc.wait(timeout=float(request.get("grace") or KILL_GRACE))
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                pass
            kill_group(process.proc)
            process.proc.wait()
        self.sweep()  # whatever the process left running outside its group
        send(conn, {"t": "ok", "process": process.info()})

    @staticmethod
    def _path(request):
        path = request.get("path")
        if not isinstance(path, str) or not path or "\x00" in path:
            raise RequestError("file", "path must be a non-empty string")
        return os.path.join("/workspace", path)

    def op_read(self, conn, request):
        path = self._path(request)
        limit = int(request["limit"])
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RequestError("file", f"{path} is not a regular file")
            if info.st_size > limit:
                raise RequestError("file", f"{path} has {info.st_size} bytes, more than the limit of {limit}")
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise RequestError("file", f"{path} has more than the limit of {limit} bytes")
        send(conn, {"t": "ok", "d": b64(data), "size": len(data)})

    def op_write(self, conn, request):
        path = self._path(request)
        data = base64.b64decode(request.get("d") or "")
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if request.get("append") else os.O_TRUNC)
        fd = os.open(path, flags, int(request.get("mode") or 0o644))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        send(conn, {"t": "ok", "size": os.stat(path).st_size})

    def op_list(self, conn, request):
        path = self._path(request)
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                info = entry.stat(follow_symlinks=False)
                kind = (
                    "dir"
                    if stat.S_ISDIR(info.st_mode)
                    else "file"
                    if stat.S_ISREG(info.st_mode)
                    else "symlink"
                    if stat.S_ISLNK(info.st_mode)
                    else "other"
                )
                entries.append(
                    {
                        "name": entry.name,
                        "type": kind,
                        "size": info.st_size,
                        "mtime": info.st_mtime,
                        "mode": stat.S_IMODE(info.st_mode),
                    }
                )
        entries.sort(key=lambda e: e["name"])
        send(conn, {"t": "ok", "entries": entries})

    def op_delete(self, conn, request):
        path = self._path(request)
        if os.path.normpath(path) == "/workspace":
            raise RequestError("file", "refusing to delete the workspace itself")
        if os.path.isdir(path) and not os.path.islink(path):
            if not request.get("recursive"):
                raise RequestError("file", f"{path} is a directory; pass recursive=true to delete it")
            shutil.rmtree(path)
        else:
            os.unlink(path)
        send(conn, {"t": "ok"})


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def forward(client):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(EGRESS)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve_egress(listener):
    while True:
        client, _ = listener.accept()
        threading.Thread(target=forward, args=(client,), daemon=True).start()


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.umask(0o022)
    if os.path.exists(EGRESS):
        proxy = f"http://127.0.0.1:{EGRESS_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            os.environ[name] = proxy
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ""
        egress = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        egress.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        egress.bind(("127.0.0.1", EGRESS_PORT))
        egress.listen(64)
        threading.Thread(target=serve_egress, args=(egress,), daemon=True).start()
    agent = Agent()
    try:
        os.unlink(CONTROL)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(CONTROL + ".new")
    listener.listen(64)
    os.rename(CONTROL + ".new", CONTROL)  # the host never sees a socket that does not listen yet
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # Let go of the host's files (the backend's log): nothing in the box may write to them from now on.
    devnull = os.open("/dev/null", os.O_WRONLY)
    try:
        log = os.open("/tmp/dockyard-agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        log = devnull
    os.dup2(devnull, 1)
    os.dup2(log, 2)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=agent.handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
