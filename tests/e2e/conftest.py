from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.support import EVERYTHING_JS, free_port, node


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def everything_http() -> Iterator[str]:
    """The npm reference server over Streamable HTTP, as a real separate process."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port), "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.Popen(
        [node(), str(EVERYTHING_JS), "streamableHttp"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    async def wait_listening() -> None:
        with anyio.fail_after(30):
            async with httpx.AsyncClient() as http:
                while True:
                    try:
                        await http.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                        return
                    except httpx.TransportError:
                        if proc.poll() is not None:
                            pytest.fail("server-everything (streamableHttp) exited at start")
                        await anyio.sleep(0.05)

    try:
        anyio.run(wait_listening)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
