"""The egress proxy on its own, with a real TLS target: credentials for an HTTPS host travel only inside TLS."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

from servers.sandbox._proxy import Credential, EgressEvent, EgressProxy
from tests.servers.sandbox.conftest import SECRET

pytestmark = pytest.mark.anyio


@pytest.fixture
def tls_target(tmp_path: Path) -> Iterator[tuple[int, Path, list[dict[str, Any]]]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "headers": dict(self.headers.items())})
            body = b"secure hello\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), cert, seen
    finally:
        server.shutdown()
        server.server_close()


async def _through_proxy(proxy: EgressProxy, path: Path, request: bytes) -> bytes:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    response = b""
    async with anyio.create_task_group() as tg:
        tg.start_soon(proxy.serve, listener)
        with anyio.fail_after(10):
            stream = await anyio.connect_unix(path)
            async with stream:
                await stream.send(request)
                try:
                    while True:
                        response += await stream.receive()
                except anyio.EndOfStream:
                    pass
        tg.cancel_scope.cancel()
    return response


async def test_an_https_host_gets_its_headers_over_tls_replacing_the_boxs_own(
    tmp_path: Path, tls_target: tuple[int, Path, list[dict[str, Any]]]
) -> None:
    port, cert, seen = tls_target
    events: list[EgressEvent] = []
    proxy = EgressProxy(
        sandbox_id="t",
        principal="user:alice",
        allow=[f"127.0.0.1:{port}"],
        credentials=[Credential(host=f"127.0.0.1:{port}", headers={"Authorization": SECRET}, scheme="https")],
        on_event=events.append,
        tls_context=ssl.create_default_context(cafile=str(cert)),
    )
    response = await _through_proxy(
        proxy,
        tmp_path / "egress.sock",
        f"GET http://127.0.0.1:{port}/secure?q=1 HTTP/1.1\r\nHost: elsewhere\r\nauthorization: forged\r\n"
        "Proxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n".encode(),
    )
    assert response.startswith(b"HTTP/1.0 200") and response.endswith(b"secure hello\n")
    [request] = seen
    assert request["path"] == "/secure?q=1"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == SECRET
    assert headers["host"] == f"127.0.0.1:{port}"
    assert "proxy-authorization" not in headers
    assert SECRET.encode() not in response
    assert [(e.allowed, e.credential) for e in events] == [(True, True)]


async def test_a_tls_target_with_an_untrusted_certificate_is_refused(
    tmp_path: Path, tls_target: tuple[int, Path, list[dict[str, Any]]]
) -> None:
    port, _, seen = tls_target
    proxy = EgressProxy(
        sandbox_id="t",
        principal="user:alice",
        allow=[f"127.0.0.1:{port}"],
        credentials=[Credential(host=f"127.0.0.1:{port}", headers={"Authorization": SECRET}, scheme="https")],
        on_event=lambda e: None,
    )
    response = await _through_proxy(
        proxy, tmp_path / "egress.sock", f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n".encode()
    )
    assert response.startswith(b"HTTP/1.1 502") and b"TLS" in response
    assert seen == []


async def test_malformed_requests_get_a_clear_refusal(tmp_path: Path) -> None:
    proxy = EgressProxy(sandbox_id="t", principal="p", allow=["*"], on_event=lambda e: None)
    response = await _through_proxy(proxy, tmp_path / "a.sock", b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400") and b"absolute-form" in response
    response = await _through_proxy(proxy, tmp_path / "b.sock", b"CONNECT nowhere HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400") and b"host:port" in response
