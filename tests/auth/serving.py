"""Serve a small ASGI app on a free loopback port inside the test's event loop (uvicorn, as in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

from tests.support import free_socket


@asynccontextmanager
async def serving(app: Any = None, *, build: Callable[[str], Any] | None = None) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:PORT`` while ``app`` (or ``build(that URL)``) is served there."""
    sock = free_socket()
    port = int(sock.getsockname()[1])
    if build is not None:
        app = build(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(30):
                while not server.started:
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
