"""End to end: the official MCP client, in both protocol eras, through a real portal to real upstreams."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from portal.store import AuditRecord, UpstreamStatus
from tests.support import (
    alive,
    cmdline,
    descendants,
    everything_stdio,
    make_settings,
    python_server,
    running_portal,
    wait_for,
)

pytestmark = [pytest.mark.anyio, pytest.mark.npm]

MODES = ["legacy", "2026-07-28"]


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", MODES)
async def test_both_eras_reach_a_stdio_upstream_with_prefixed_names_progress_resources_and_prompts(
    tmp_path: Path, mode: str
) -> None:
    settings = make_settings(tmp_path, {"everything": everything_stdio()})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode=mode) as client:  # type: ignore[arg-type]
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"everything__echo", "everything__get-sum", "everything__trigger-long-running-operation"} <= tools
        assert all(name.startswith("everything__") for name in tools)

        echoed = await client.call_tool("everything__echo", {"message": "ahoy"})
        assert text_of(echoed) == "Echo: ahoy"

        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total))

        await client.call_tool(
            "everything__trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress
        )
        assert seen == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]

        resources = (await client.list_resources()).resources
        assert resources, "the upstream's resources are federated"
        first = str(resources[0].uri)
        read = await client.read_resource(first)
        assert str(read.contents[0].uri) == first

        prompt = await client.get_prompt("everything__simple-prompt")
        assert prompt.messages


async def test_stdio_and_http_upstreams_are_federated_side_by_side(tmp_path: Path, everything_http: str) -> None:
    settings = make_settings(tmp_path, {"local": everything_stdio(), "remote": {"url": everything_http}})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "local__echo" in names and "remote__echo" in names
        assert text_of(await client.call_tool("remote__get-sum", {"a": 2, "b": 3})) == "The sum of 2 and 3 is 5."
        assert text_of(await client.call_tool("local__echo", {"message": "x"})) == "Echo: x"
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="2026-07-28") as client:
        assert text_of(await client.call_tool("remote__echo", {"message": "y"})) == "Echo: y"


async def test_an_upstream_killed_mid_session_disappears_then_comes_back_while_the_other_keeps_working(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, {"a": everything_stdio(), "b": everything_stdio()})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        running_portal(settings) as portal,
        Client(portal.mcp_url, mode="legacy", message_handler=on_message) as client,
    ):
        await client.call_tool("a__echo", {"message": "before"})
        upstream_a = portal.gateway.upstreams["a"]
        victims = [
            p for p in descendants(os.getpid()) if cmdline(p).endswith("index.js") and "_launcher" not in cmdline(p)
        ]
        assert victims, "the stdio children are descendants of the portal"
        target = _child_of_upstream(upstream_a, victims)
        os.kill(target, signal.SIGKILL)

        await wait_for(lambda: upstream_a.state == "unhealthy", timeout=20)
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert not any(n.startswith("a__") for n in names)
        assert text_of(await client.call_tool("b__echo", {"message": "still here"})) == "Echo: still here"
        down = await client.call_tool("a__echo", {"message": "x"})
        assert down.is_error and "server 'a' is unhealthy" in text_of(down)

        await wait_for(lambda: upstream_a.state == "connected", timeout=30)
        await wait_for(lambda: "a__echo" in portal.gateway.catalog.tools, timeout=10)
        assert text_of(await client.call_tool("a__echo", {"message": "after"})) == "Echo: after"


def _log_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return None


def _child_of_upstream(upstream: Any, pids: list[int]) -> int:
    """The node process whose stderr is the upstream's log file."""
    log = str(Path(upstream._log_dir) / f"{upstream.name}.log")  # pyright: ignore[reportPrivateUsage]
    for pid in pids:
        if _log_of(pid) == log:
            return pid
    raise AssertionError(f"no child writes to {log}")


async def test_every_call_through_the_choke_point_writes_an_audit_record(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"everything": everything_stdio()})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        await client.call_tool("everything__echo", {"message": "secret-ish"})
        await client.call_tool("everything__get-sum", {"a": 1, "b": 2})
        with pytest.raises(Exception, match="unknown tool"):
            await client.call_tool("everything__nope", {})
        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()  # pyright: ignore[reportArgumentType]
    calls = [r for r in rows if r.method == "tools/call"]
    assert [(r.target, r.status) for r in calls] == [
        ("everything__echo", "ok"),
        ("everything__get-sum", "ok"),
        ("everything__nope", "unknown"),
    ]
    assert all(r.principal == "local" for r in calls)
    assert calls[0].upstream_target == "echo" and calls[0].server == "everything"
    assert calls[0].arguments_digest and "secret-ish" not in json.dumps([r.model_dump(mode="json") for r in rows])
    assert calls[0].latency_ms > 0 and calls[0].bytes_out > 0


async def test_a_stdio_child_gets_only_its_configured_environment_never_the_portals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "706f7274616c2d7365637265742d76616c75652d6f662d33322d627974657321"  # a valid vault key (32 bytes, hex)
    monkeypatch.setenv("DOCKYARD_SECRET_KEY", secret)
    server = everything_stdio() | {"env": {"GREETING": "hello"}}
    settings = make_settings(tmp_path, {"everything": server})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        env = json.loads(text_of(await client.call_tool("everything__get-env", {})))
    assert env["GREETING"] == "hello"
    assert "DOCKYARD_SECRET_KEY" not in env and secret not in json.dumps(env)
    assert set(env) <= {"GREETING", "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}


async def test_a_failing_upstream_is_unhealthy_and_never_blocks_the_others(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, {"broken": {"command": "/nonexistent/mcp-server"}, "everything": everything_stdio()}
    )
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        assert text_of(await client.call_tool("everything__echo", {"message": "ok"})) == "Echo: ok"
        broken = portal.gateway.upstreams["broken"]
        assert broken.state == "unhealthy" and "not found" in (broken.last_error or "")
        async with httpx.AsyncClient() as http:
            ready = (await http.get(f"{portal.url}/readyz")).json()
        assert ready["degraded"] == ["broken"] and ready["servers"]["everything"]["state"] == "connected"
        await wait_for(lambda: _status(portal, "broken") is not None)
        status = _status(portal, "broken")
        assert status is not None and status.state == "unhealthy" and "not found" in (status.last_error or "")


def _status(portal: Any, name: str) -> UpstreamStatus | None:
    with Session(portal.portal.engine) as session:
        return session.get(UpstreamStatus, name)


async def test_a_hanging_upstream_times_out_at_start_and_is_retried(tmp_path: Path) -> None:
    hang = {"command": "sleep", "args": ["600"], "connect_timeout": 0.5}
    settings = make_settings(tmp_path, {"hang": hang, "everything": everything_stdio()})
    async with running_portal(settings) as portal:
        hanging = portal.gateway.upstreams["hang"]
        assert hanging.state == "unhealthy" and "timed out" in (hanging.last_error or "")
        await wait_for(lambda: hanging.failures >= 2, timeout=10)
        assert "everything__echo" in portal.gateway.catalog.tools


async def test_the_number_of_stdio_children_is_capped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"one": everything_stdio(), "two": everything_stdio()}, max_stdio_children=1)
    async with running_portal(settings) as portal:
        states = sorted(u.state for u in portal.gateway.upstreams.values())
        assert states == ["connected", "unhealthy"]
        refused = next(u for u in portal.gateway.upstreams.values() if u.state == "unhealthy")
        assert "max_stdio_children" in (refused.last_error or "")


async def test_an_unprefixed_server_keeps_exact_names_and_a_clash_is_reported_not_merged(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {
            "first": everything_stdio() | {"prefix": False},
            "second": everything_stdio() | {"prefix": False},
        },
    )
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "echo" in names and not any("__" in n for n in names)
        assert portal.gateway.catalog.tools["echo"].server == "first"
        assert any("already provided by server 'first'" in c for c in portal.gateway.catalog.conflicts["second"])


async def test_a_changed_tool_definition_is_withheld_until_an_admin_accepts_it(tmp_path: Path) -> None:
    """SECURITY.md G3: rug-pull protection."""
    settings = make_settings(tmp_path, {"svc": python_server("interactive.py", "--stdio")})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        running_portal(settings) as portal,
        Client(portal.mcp_url, mode="legacy", message_handler=on_message) as client,
    ):
        assert text_of(await client.call_tool("svc__describe", {})) == "a thing"
        await client.call_tool("svc__rug_pull", {})
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "svc__describe" not in names
        held = await client.call_tool("svc__describe", {})
        assert held.is_error and "dockyard tools accept svc describe" in text_of(held)

        from portal.cli import main

        config = tmp_path / "dockyard.toml"
        config.write_text(
            f'[portal]\ndata_dir = "{settings.portal.data_dir}"\n[servers.svc]\ncommand = "true"\n', encoding="utf-8"
        )
        assert await anyio.to_thread.run_sync(main, ["-c", str(config), "tools", "accept", "svc", "describe"]) == 0
        await wait_for(lambda: "svc__describe" in portal.gateway.catalog.tools, timeout=10)
        described = portal.gateway.catalog.tools["svc__describe"].definition.description
        assert described is not None and "id_rsa" in described


@pytest.mark.parametrize("mode", ["legacy"])
async def test_elicitation_sampling_and_logs_from_an_upstream_reach_the_right_client(tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, {"svc": python_server("interactive.py", "--stdio")})
    logs: dict[str, list[str]] = {"ada": [], "bob": []}

    def client_for(name: str) -> Client:
        async def elicit(context: Any, params: Any) -> types.ElicitResult:
            return types.ElicitResult(action="accept", content={"name": name})

        async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=f"{name}-model"), model=name
            )

        async def log(params: types.LoggingMessageNotificationParams) -> None:
            logs[name].append(str(params.data))

        return Client(
            portal.mcp_url,
            mode=mode,  # type: ignore[arg-type]
            elicitation_callback=elicit,
            sampling_callback=sample,
            logging_callback=log,
        )

    async with running_portal(settings) as portal:
        async with client_for("ada") as ada, client_for("bob") as bob:
            results: dict[str, str] = {}

            async def ask(name: str, client: Client) -> None:
                results[name] = text_of(await client.call_tool("svc__ask_name", {}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, "ada", ada)
                tg.start_soon(ask, "bob", bob)
            assert results == {"ada": "Hello, ada!", "bob": "Hello, bob!"}
            assert text_of(await bob.call_tool("svc__summarize", {"text": "long"})) == "summary: bob-model"
            await ada.call_tool("svc__chatty", {"steps": 2})
            await wait_for(lambda: len(logs["ada"]) >= 2, timeout=5)
            assert logs["ada"] == ["step 1", "step 2"] and logs["bob"] == []


async def test_the_portal_killed_with_sigkill_leaves_no_stdio_child_behind(tmp_path: Path) -> None:
    port = 0
    from tests.support import free_port

    port = free_port()
    config = tmp_path / "dockyard.toml"
    everything = everything_stdio()
    config.write_text(
        f'[portal]\npublic_url = "http://127.0.0.1:{port}"\ndata_dir = "{tmp_path / "data"}"\n'
        '[auth]\nmode = "none"\n'
        f'[servers.a]\ncommand = "{everything["command"]}"\nargs = ["{everything["args"][0]}"]\n'
        f'[servers.b]\ncommand = "{everything["command"]}"\nargs = ["{everything["args"][0]}"]\n',
        encoding="utf-8",
    )
    import sys

    proc = await anyio.open_process(
        [sys.executable, "-m", "portal", "-c", str(config), "serve", "--log-level", "warning"],
        stdout=None,
        stderr=None,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/readyz")
                except httpx.TransportError:
                    return False
                return response.status_code == 200 and response.json()["tools"] == 26

            await wait_for(ready, timeout=60, interval=0.1)
        children = descendants(proc.pid)
        assert len([p for p in children if cmdline(p).endswith("index.js") and "_launcher" not in cmdline(p)]) == 2
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await wait_for(lambda: not any(alive(p) for p in children), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_foreign_origin_is_refused(tmp_path: Path) -> None:
    """SECURITY.md T1."""
    settings = make_settings(tmp_path, {})
    async with running_portal(settings) as portal, httpx.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {
            "Origin": "http://evil.example",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        response = await http.post(portal.mcp_url, json=body, headers=headers)
        assert response.status_code == 403
        rebinding = await http.post(
            portal.mcp_url, json=body, headers={**headers, "Origin": portal.url, "Host": "evil.example"}
        )
        assert rebinding.status_code in (403, 421)


async def test_metrics_count_calls_per_tool_and_readyz_and_healthz_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"everything": everything_stdio()})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode="legacy") as client:
        for _ in range(3):
            await client.call_tool("everything__echo", {"message": "m"})
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{portal.url}/metrics")).text
            assert (await http.get(f"{portal.url}/healthz")).json() == {"status": "ok"}
            assert (await http.get(f"{portal.url}/readyz")).status_code == 200
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("dockyard_calls_total{") and 'target="everything__echo"' in line and 'status="ok"' in line
    )
    assert line.endswith(" 3.0")
    assert 'dockyard_upstream_up{kind="stdio",server="everything"} 1.0' in metrics


@pytest.mark.parametrize("mode", MODES)
async def test_a_python_server_named_by_module_is_mounted_in_process(tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, {"inproc": {"module": "tests.servers.interactive:server"}})
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode=mode) as client:  # type: ignore[arg-type]
        assert portal.gateway.upstreams["inproc"].kind == "inprocess"
        assert "inproc__describe" in {t.name for t in (await client.list_tools()).tools}
        assert text_of(await client.call_tool("inproc__describe", {})) == "a thing"
    assert descendants(os.getpid()) == set() or all("interactive" not in cmdline(p) for p in descendants(os.getpid()))


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_call_is_cancelled_upstream_and_the_session_stays_usable(tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, {"svc": python_server("interactive.py", "--stdio")})
    marker = tmp_path / "cancelled"
    async with running_portal(settings) as portal, Client(portal.mcp_url, mode=mode) as client:  # type: ignore[arg-type]
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            started.set()

        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool("svc__wait_for_cancel", {"marker": str(marker)}, progress_callback=on_progress)

            tg.start_soon(call)
            with anyio.fail_after(10):
                await started.wait()
            tg.cancel_scope.cancel()
        await wait_for(marker.exists, timeout=10)
        assert text_of(await client.call_tool("svc__describe", {})) == "a thing"


async def test_a_remote_sse_server_is_federated(tmp_path: Path) -> None:
    from tests.support import EVERYTHING_JS, free_port, node

    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port), "HOME": os.environ.get("HOME", "/root")}
    proc = await anyio.open_process([node(), str(EVERYTHING_JS), "sse"], env=env, start_new_session=True)
    try:
        server = {"url": f"http://127.0.0.1:{port}/sse", "transport": "sse", "connect_timeout": 5.0}
        settings = make_settings(tmp_path, {"legacy": server})
        async with running_portal(settings, wait_ready=False) as portal:
            await wait_for(lambda: portal.gateway.upstreams["legacy"].connected, timeout=30)
            async with Client(portal.mcp_url, mode="2026-07-28") as client:
                assert text_of(await client.call_tool("legacy__echo", {"message": "sse"})) == "Echo: sse"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
