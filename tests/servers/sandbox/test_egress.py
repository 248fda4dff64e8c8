"""The egress proxy with each backend: a real HTTP server on the host's loopback is the allow-listed target.

The target is allow-listed as ``127.0.0.1:PORT`` for the proxy, while a direct connection from the box to
that port must fail; the proxy adds ``Authorization: SECRET`` for it, which must reach the target and appear
nowhere in the box (environment, /proc, files) or in the portal's logs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from servers.sandbox._manager import SandboxManager
from servers.sandbox._proxy import host_allowed
from tests.servers.sandbox.conftest import SECRET, Box, Target, make_box

pytestmark = pytest.mark.anyio

_FETCH = """
import json, urllib.error, urllib.request
try:
    with urllib.request.urlopen({url!r}, timeout=10) as r:
        print("STATUS", r.status, r.read().decode(), json.dumps(dict(r.headers)))
except urllib.error.HTTPError as e:
    print("STATUS", e.code, e.read().decode(), json.dumps(dict(e.headers)))
"""

_TUNNEL = """
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n")
head = s.recv(4096)
print("TUNNEL", head.split(b"\\r\\n")[0].decode())
if b" 200 " in head:
    s.sendall(b"GET /tunnelled HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode())
"""


async def _egress_box(manager: SandboxManager, *hosts: str) -> Box:
    return await make_box(manager, "user:alice", egress=hosts)


async def test_an_allowed_host_gets_the_credential_that_the_box_never_sees(
    manager: SandboxManager, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    box = await _egress_box(manager, f"127.0.0.1:{target.port}")
    _, out = await box.python(_FETCH.format(url=f"http://127.0.0.1:{target.port}/hello?x=1"))
    assert "STATUS 200 hello from the target" in out, out
    assert [r["path"] for r in target.requests] == ["/hello?x=1"]
    assert target.requests[0]["headers"]["Authorization"] == SECRET
    assert SECRET not in out

    _, direct = await box.python(
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {target.port}), timeout=3)\n"
        "    print('CONNECTED')\nexcept OSError as e:\n    print('BLOCKED', e)\n"
    )
    assert "BLOCKED" in direct and "CONNECTED" not in direct

    _, everything = await box.sh(
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; "
        # the secret is assembled by the shell, so this command line does not contain it
        f'S={SECRET[:8]}; grep -rsl -- "$S{SECRET[8:]}" /workspace /tmp /run /etc 2>/dev/null; '
        "ls -la /run/dockyard/egress; true"
    )
    assert SECRET not in everything
    assert "HTTP_PROXY=http://127.0.0.1:3128" in everything
    assert SECRET not in caplog.text
    for log in manager.runtime_dir(box.record.id).rglob("*.log"):
        assert SECRET not in log.read_text(errors="replace")
    [event] = manager.events("user:alice", box.record.id)
    assert event.allowed and event.credential and event.host == "127.0.0.1"


async def test_hosts_outside_the_allow_list_are_refused_and_recorded(
    manager: SandboxManager, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandbox.egress")
    box = await _egress_box(manager, f"127.0.0.1:{target.port}")
    _, out = await box.python(_FETCH.format(url="http://example.com/"))
    assert "STATUS 403" in out and "not in this sandbox's egress allow-list" in out, out
    _, out = await box.python(_TUNNEL.format(target="github.com:443"))
    assert "TUNNEL HTTP/1.1 403 Forbidden" in out, out
    _, out = await box.python(_FETCH.format(url=f"http://127.0.0.1:{target.port + 1 if target.port < 65535 else 1}/"))
    assert "STATUS 403" in out, out
    blocked = [e for e in manager.events("user:alice", box.record.id) if not e.allowed]
    assert [(e.method, e.host) for e in blocked][:2] == [("GET", "example.com"), ("CONNECT", "github.com")]
    assert "github.com:443 blocked" in caplog.text
    assert target.requests == []


async def test_a_name_that_resolves_to_the_hosts_loopback_is_refused(manager: SandboxManager, target: Target) -> None:
    """A public-looking allow-list entry cannot be pointed at the host's own services (DNS rebinding)."""
    box = await _egress_box(manager, f"localhost:{target.port}")
    _, out = await box.python(_FETCH.format(url=f"http://localhost:{target.port}/"))
    assert "STATUS 403" in out and "non-public address" in out, out
    assert target.requests == []


async def test_a_tunnel_to_an_allowed_host_carries_no_credential(manager: SandboxManager, target: Target) -> None:
    box = await _egress_box(manager, f"127.0.0.1:{target.port}")
    _, out = await box.python(_TUNNEL.format(target=f"127.0.0.1:{target.port}"))
    assert "TUNNEL HTTP/1.1 200" in out and "hello from the target" in out, out
    assert [r["path"] for r in target.requests] == ["/tunnelled"]
    assert "Authorization" not in target.requests[0]["headers"]


async def test_a_host_the_policy_no_longer_grants_is_refused_from_the_next_call(
    manager: SandboxManager, target: Target
) -> None:
    box = await _egress_box(manager, f"127.0.0.1:{target.port}")
    async with manager.use("user:alice", box.record.id, policy_egress=()) as agent:
        result = await agent.exec(
            ["python3", "-c", _FETCH.format(url=f"http://127.0.0.1:{target.port}/")], timeout=15, output_limit=65536
        )
    assert b"STATUS 403" in result.stdout
    assert target.requests == []


async def test_a_box_without_egress_has_no_proxy_at_all(box: Box) -> None:
    _, out = await box.sh("ls /run/dockyard; env | grep -i _proxy; true")
    assert "egress" not in out
    assert "HTTP_PROXY" not in out


@pytest.mark.parametrize(
    ("patterns", "host", "port", "allowed"),
    [
        (["api.github.com"], "api.github.com", 443, True),
        (["api.github.com"], "API.GitHub.com.", 80, True),
        (["api.github.com"], "api.github.com", 8443, False),
        (["api.github.com"], "evil-api.github.com", 443, False),
        (["*.example.com"], "a.b.example.com", 443, True),
        (["*.example.com"], "example.com", 443, False),
        (["*.example.com"], "example.com.evil.net", 443, False),
        (["127.0.0.1:8080"], "127.0.0.1", 8080, True),
        (["127.0.0.1:8080"], "127.0.0.1", 8081, False),
        (["[::1]:8080"], "::1", 8080, True),
        (["*"], "anything.net", 443, True),
        ([], "api.github.com", 443, False),
    ],
)
def test_allow_list_patterns(patterns: list[str], host: str, port: int, allowed: bool) -> None:
    assert host_allowed(patterns, host, port) is allowed


async def test_the_proxy_socket_is_the_only_thing_in_the_egress_directory(
    manager: SandboxManager, target: Target
) -> None:
    box = await _egress_box(manager, f"127.0.0.1:{target.port}")
    egress = manager.runtime_dir(box.record.id) / "egress"
    assert sorted(p.name for p in egress.iterdir()) == ["egress.sock"]
    with anyio.fail_after(5):
        _, out = await box.sh("touch /run/dockyard/egress/x 2>&1; rm /run/dockyard/egress/egress.sock 2>&1; true")
    assert "Read-only" in out
    assert Path(egress / "egress.sock").exists()
