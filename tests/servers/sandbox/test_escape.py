"""The escape suite: each way out of a box the issue names, tried for real against every backend.

Every test runs once per backend (the ``backend`` fixture). Each attempt must fail, and the host (the
portal's process) must stay healthy afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from servers.sandbox._backend import (
    Profile,
    SandboxError,
    SandboxNotFoundError,
    SandboxRequestError,
    SandboxStateError,
)
from servers.sandbox._manager import SandboxManager
from tests.servers.sandbox.conftest import SECRET, Box, Target, host_is_healthy, make_box

pytestmark = pytest.mark.anyio


@pytest.fixture
def host_secret(tmp_path: Path) -> Iterator[Path]:
    """A host file next to the sandboxes (like the portal's vault key) and a secret in the portal's env."""
    secret = tmp_path / "vault.key"
    secret.write_text("host-secret-4c3b2a")
    secret.chmod(0o644)  # readable by anyone on the host: only the mount namespace keeps it out
    os.environ["DOCKYARD_ESCAPE_SECRET"] = "env-secret-1a2b3c"
    try:
        yield secret
    finally:
        os.environ.pop("DOCKYARD_ESCAPE_SECRET", None)


async def test_host_files_outside_the_sandbox_cannot_be_read(box: Box, host_secret: Path, tmp_path: Path) -> None:
    """Attempts to read host files: a world-readable file beside the data dir, /etc/shadow, the repo, /root,
    via /proc/1/root, and by walking up from the workspace."""
    _, out = await box.sh(
        f"cat {host_secret}; cat /etc/shadow; ls /root; ls {Path.cwd()}; cat /proc/1/root{host_secret}; "
        f"cat ../../{host_secret}; find / -xdev -name vault.key 2>/dev/null; true"
    )
    assert "host-secret" not in out
    assert "root:" not in out
    _, out = await box.sh(f"test -e {host_secret} || test -e {tmp_path} && echo VISIBLE || echo hidden")
    assert out.strip() == "hidden"
    await host_is_healthy(tmp_path)


async def test_host_files_cannot_be_written(box: Box, host_secret: Path, tmp_path: Path) -> None:
    """Attempts to write the system directories, the root, /etc and a host path; only /workspace and /tmp
    take writes, and the host file is unchanged."""
    _, out = await box.sh(
        "for p in /usr/bin/evil /etc/evil /evil /bin/evil /run/dockyard/agent.py; do "
        "  (echo x > $p) 2>/dev/null && echo WROTE $p; done; "
        f"mkdir -p {tmp_path} 2>/dev/null && echo pwned > {host_secret} 2>/dev/null; "
        "echo ok > /workspace/fine && echo ok > /tmp/fine && echo writable"
    )
    assert "WROTE" not in out
    assert "writable" in out
    assert host_secret.read_text() == "host-secret-4c3b2a"
    assert not Path("/usr/bin/evil").exists()
    assert not Path("/evil").exists()
    await host_is_healthy(tmp_path)


async def test_the_portals_environment_and_vault_are_not_visible(box: Box, host_secret: Path, tmp_path: Path) -> None:
    """Attempts to read the portal's environment (env, every /proc/*/environ, /proc/*/cmdline) and its data
    directory (where the database and vault live)."""
    _, out = await box.sh(
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '; "
        f"ls -la {box.manager.root} {box.manager.root.parent} 2>&1; true"
    )
    assert "env-secret" not in out
    assert "DOCKYARD_ESCAPE_SECRET" not in out
    assert SECRET not in out
    assert "No such file" in out
    await host_is_healthy(tmp_path)


async def test_host_loopback_ports_cannot_be_reached(box: Box, target: Target, tmp_path: Path) -> None:
    """Attempts TCP connections to a real server on the host's 127.0.0.1, to localhost, and to ::1."""
    _, out = await box.python(
        "import socket\n"
        f"for host in ('127.0.0.1', 'localhost', '::1', '0.0.0.0'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {target.port}), timeout=3).close()\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('BLOCKED', host, e)\n"
    )
    assert "CONNECTED" not in out, out
    assert out.count("BLOCKED") == 4
    assert target.requests == []
    await host_is_healthy(tmp_path)


async def test_private_ranges_and_the_metadata_address_cannot_be_reached(box: Box, tmp_path: Path) -> None:
    """Attempts TCP connections to private (10/8, 172.16/12, 192.168/16), link-local (the cloud metadata
    address 169.254.169.254) and public addresses: the box has no route anywhere."""
    _, out = await box.python(
        "import socket\n"
        "for host in ('10.0.0.1', '172.17.0.1', '192.168.1.1', '169.254.169.254', '1.1.1.1', '8.8.8.8'):\n"
        "    try:\n"
        "        socket.create_connection((host, 80), timeout=3).close()\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('BLOCKED', host, e)\n"
    )
    assert "CONNECTED" not in out, out
    assert out.count("BLOCKED") == 6
    await host_is_healthy(tmp_path)


async def test_dns_cannot_be_resolved_without_the_proxy(box: Box, tmp_path: Path) -> None:
    """Attempts name resolution (getaddrinfo of public names) and a raw DNS query over UDP to public and
    private resolvers."""
    _, out = await box.python(
        "import socket\n"
        "for name in ('example.com', 'github.com'):\n"
        "    try:\n"
        "        print('RESOLVED', name, socket.getaddrinfo(name, 443))\n"
        "    except OSError as e:\n"
        "        print('no dns', name, e)\n"
        "query = bytes.fromhex('abcd01000001000000000000076578616d706c6503636f6d0000010001')\n"
        "for server in ('8.8.8.8', '1.1.1.1', '10.0.0.2', '127.0.0.53'):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    s.settimeout(0.5)\n"
        "    try:\n"
        "        s.sendto(query, (server, 53))\n"
        "        print('ANSWER', server, s.recv(512))\n"
        "    except OSError as e:\n"
        "        print('no dns', server, e)\n"
    )
    assert "RESOLVED" not in out and "ANSWER" not in out, out
    assert out.count("no dns") == 6
    await host_is_healthy(tmp_path)


async def test_a_fork_bomb_is_contained(box: Box, tmp_path: Path) -> None:
    """Attempts a fork bomb (every process forks forever); the process limit stops it, the command's
    wall-clock limit ends it, and the box and the host work afterwards."""
    with anyio.fail_after(60):
        code, out = await box.python(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", timeout=3
        )
    assert code is None  # killed at its timeout, with every fork of it
    code, out = await box.sh("echo still here")
    assert out.strip() == "still here"
    await host_is_healthy(tmp_path)


async def test_a_background_fork_bomb_is_contained_and_the_box_recovers(box: Box, tmp_path: Path) -> None:
    """Attempts a fork bomb as a background process, which no command timeout ends: the process limit holds
    it, and the next call gets a working box (restarted if the bomb starved its agent)."""
    agent = await box.agent()
    bomb = await agent.spawn(
        ["python3", "-c", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"]
    )
    with anyio.fail_after(60):
        while True:
            try:
                _, out = await box.sh("echo alive", timeout=5)
            except SandboxStateError:
                continue  # the bomb starved the agent of threads: the box is restarted
            except SandboxRequestError:  # no process left to run a command with: stop the bomb, as a user would
                with contextlib.suppress(SandboxError):
                    await (await box.agent()).kill(bomb.id)
                continue
            if out.strip() == "alive":
                break
    await host_is_healthy(tmp_path)


async def test_a_memory_bomb_is_contained(box: Box, tmp_path: Path) -> None:
    """Attempts to allocate (and touch) 2 GiB in a box limited to 128 MiB, in memory and in /tmp (tmpfs)."""
    with anyio.fail_after(60):
        code, out = await box.python("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n")
    assert code != 0
    assert code in (137, 1), out  # OOM-killed (SIGKILL) or MemoryError
    code, out = await box.sh("head -c 300000000 /dev/zero > /tmp/fill; echo exit=$?")
    assert "exit=0" not in out
    code, out = await box.sh("echo still here")
    assert out.strip() == "still here"
    await host_is_healthy(tmp_path)


async def test_filling_the_disk_stops_at_the_workspace_limit(box: Box, tmp_path: Path) -> None:
    """Attempts to fill the disk: writes far past the 64 MiB workspace, and many small files; the host's free
    space does not move by more than the workspace's size."""
    before = shutil.disk_usage(tmp_path).free
    with anyio.fail_after(60):
        _, out = await box.sh("head -c 400000000 /dev/zero > /workspace/fill; echo exit=$?")
    assert "exit=0" not in out
    assert "No space left" in out or "File too large" in out, out
    _, out = await box.sh("du -sm /workspace")
    assert int(out.split()[0]) <= 64
    _, out = await box.sh(
        "i=0; while [ $i -lt 20000 ] && echo x > /workspace/f$i 2>/dev/null; do i=$((i+1)); done; echo $i"
    )
    assert shutil.disk_usage(tmp_path).free > before - 96 * 1024 * 1024
    await box.sh("rm -rf /workspace/*")
    _, out = await box.sh("echo recovered > /workspace/ok && cat /workspace/ok")
    assert out.strip() == "recovered"
    await host_is_healthy(tmp_path)


async def test_a_command_cannot_run_past_its_wall_clock(box: Box, tmp_path: Path) -> None:
    """Attempts to outlive the command's timeout: a sleep, a process that ignores SIGTERM, and a child that
    detaches into its own session; all are gone once the call returns."""
    with anyio.fail_after(15):
        code, out = await box.sh("trap '' TERM; (setsid sleep 1000 &) ; sleep 1000", timeout=1)
    assert code is None
    code, out = await box.sh("ps -eo comm 2>/dev/null || ls /proc | grep -c '^[0-9]'")
    assert "sleep" not in out.replace("ps", ""), out
    await host_is_healthy(tmp_path)


async def test_host_processes_cannot_be_signalled_or_traced(box: Box, tmp_path: Path) -> None:
    """Attempts to kill and ptrace a host process by its pid, and to kill every process it can (kill -9 -1);
    the host process survives (the box may die: it is restarted on the next call)."""
    victim = subprocess.Popen(["sleep", "300"])
    try:
        _, out = await box.python(
            "import ctypes, os, signal\n"
            f"pid = {victim.pid}\n"
            "try:\n    os.kill(pid, signal.SIGKILL)\n    print('KILLED')\n"
            "except OSError as e:\n    print('kill failed', e)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.ptrace(16, pid, 0, 0)\n"
            "print('PTRACED' if r == 0 else f'ptrace failed {ctypes.get_errno()}')\n"
        )
        assert "KILLED" not in out and "PTRACED" not in out, out
        with contextlib.suppress(SandboxStateError):  # the agent dies too
            await box.sh("kill -9 -1; sleep 1")
        assert victim.poll() is None
        assert os.getpid() and victim.poll() is None
        _, out = await box.sh("echo back")  # the manager restarts a box whose processes were all killed
        assert out.strip() == "back"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    await host_is_healthy(tmp_path)


async def test_mounting_and_new_namespaces_are_refused(box: Box, tmp_path: Path) -> None:
    """Attempts to mount a tmpfs, remount / read-write, bind-mount /proc, and get root in a new user namespace."""
    _, out = await box.sh(
        "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m && echo MOUNTED; "
        "mount -o remount,rw / && echo REMOUNTED; mount --bind /proc /tmp/m && echo BOUND; "
        "unshare -r id && echo UNSHARED; unshare -m true && echo UNSHARED; "
        "python3 -c 'import ctypes; l = ctypes.CDLL(None); "
        'print("UNSHARE_OK" if l.unshare(0x10000000) == 0 else "unshare refused")\'; '
        "true"
    )
    for word in ("MOUNTED", "REMOUNTED", "BOUND", "UNSHARED", "UNSHARE_OK"):
        assert word not in out, out
    _, out = await box.sh("id -u; grep CapEff /proc/self/status")
    assert out.split()[0] == "65534"
    assert out.split()[-1] == "0000000000000000"
    await host_is_healthy(tmp_path)


async def test_another_principals_sandbox_cannot_be_touched(box: Box, tmp_path: Path) -> None:
    """Attempts, as another principal, to find, use, read and destroy alice's sandbox, and from inside bob's
    box to see alice's files."""
    await box.sh("echo alice-private > /workspace/diary")
    manager = box.manager
    bob = await make_box(manager, "user:bob")
    assert [r.id for r in manager.list("user:bob")] == [bob.record.id]
    with pytest.raises(SandboxNotFoundError):
        manager.get("user:bob", box.record.id)
    with pytest.raises(SandboxNotFoundError):
        async with manager.use("user:bob", box.record.id, policy_egress=()):
            pass
    with pytest.raises(SandboxNotFoundError):
        await manager.destroy("user:bob", box.record.id)
    _, out = await bob.sh(
        "cat /workspace/diary; grep -rs alice-private /workspace /tmp /run /home /var /root /mnt /srv /opt /etc; true"
    )
    assert "alice-private" not in out.replace("grep -rs alice-private", "")
    _, out = await box.sh("cat /workspace/diary")
    assert out.strip() == "alice-private"
    await host_is_healthy(tmp_path)


async def test_the_control_directory_cannot_fill_the_host(box: Box, tmp_path: Path) -> None:
    """Attempts to fill the host's disk through the one other writable mount, the agent's control directory."""
    _, out = await box.sh(
        "head -c 50000000 /dev/zero > /run/dockyard/control/fill; echo exit=$?; rm -f /run/dockyard/control/fill"
    )
    assert "exit=0" not in out
    assert "No space left" in out, out
    _, out = await box.sh("echo still here")
    assert out.strip() == "still here"
    await host_is_healthy(tmp_path)


async def test_a_profiles_environment_never_reaches_the_host_side(manager: SandboxManager, tmp_path: Path) -> None:
    """Attempts to make the portal run the box's own programs as root when it next starts the box: PATH and
    LD_PRELOAD in the sandbox's environment point at its workspace, which holds a fake prlimit, setpriv, sh..."""
    record = await manager.create("user:alice", profile=Profile(limits=manager.settings.defaults))
    host_workspace = manager.workspace_dir(record.id)
    record.profile = Profile(  # as if created with it (the id is not known before)
        limits=record.profile.limits,
        env={"PATH": f"{host_workspace}:/usr/bin:/bin", "LD_PRELOAD": f"{host_workspace}/evil.so"},
    )
    box = Box(manager, record, "user:alice")
    # run on the host, it leaves PWNED-0 beside itself: in the host side of the box's /workspace
    fake = b'#!/bin/sh\ntouch "$(dirname "$0")/PWNED-$(id -u)"\nexec /usr/bin/$(basename "$0") "$@"\n'
    agent = await box.agent()
    for tool in ("prlimit", "setpriv", "sh", "bwrap", "docker", "mount", "umount", "mkfs.ext4"):
        await agent.write_file(tool, fake, mode=0o755)
    await manager.stop(record.id)
    _, out = await box.sh("ls /workspace")  # starts the box again through the host side
    assert "PWNED" not in out, out
    assert "prlimit" in out
    await host_is_healthy(tmp_path)
