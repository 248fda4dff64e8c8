"""The sandbox server's tools through a real portal: the official MCP client over HTTP, and principals
calling the gateway directly. The bubblewrap backend (the default) serves them."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from portal.channel import NULL_CHANNEL
from portal.config import settings_from_mapping
from portal.errors import ConfigError
from portal.principal import Principal
from portal.store import AuditRecord
from tests.policy.conftest import write_files
from tests.servers.sandbox.conftest import SECRET, Target
from tests.support import RunningPortal, running_portal, wait_for

pytestmark = pytest.mark.anyio

ALICE = Principal("alice", kind="user")
BOB = Principal("bob", kind="user")

POLICY = """
    version: 1
    roles: {dev: {}, net: {}, owner: {}}
    principals:
      local: {roles: [owner]}
      users: {alice: {roles: [dev, net]}, bob: {roles: [dev]}}
    rules:
      - {name: everything, effect: allow, roles: [owner, dev]}
    egress:
      - name: alice-reaches-the-target
        roles: [net]
        servers: [sandbox]
        hosts: ["127.0.0.1:PORT"]
"""


def _settings(tmp_path: Path, target: Target, **options: Any) -> Any:
    policy = POLICY.replace("PORT", str(target.port))
    raw: dict[str, Any] = {
        "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 5.0},
        "auth": {"mode": "none"},
        "policy": {"dir": str(write_files(tmp_path / "policies", main=policy))},
        "servers": {
            "sandbox": {
                "builtin": "sandbox",
                "options": {
                    "limits": {"memory_mb": 256, "wall_seconds": 20, "disk_mb": 64, "output_bytes": 4096},
                    "credentials": [
                        {"host": f"127.0.0.1:{target.port}", "scheme": "http", "headers": {"Authorization": "${TOKEN}"}}
                    ],
                    **options,
                },
            }
        },
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ={**os.environ, "TOKEN": SECRET})


@asynccontextmanager
async def sandbox_portal(settings: Any) -> AsyncIterator[RunningPortal]:
    """A running portal whose catalog already lists the sandbox tools (ready can precede the first rebuild)."""
    async with running_portal(settings) as portal:
        await wait_for(lambda: any(t.name == "sandbox__create" for t in portal.gateway.list_tools(ALICE)))
        yield portal


@pytest.fixture
async def portal(tmp_path: Path, target: Target) -> AsyncIterator[RunningPortal]:
    async with sandbox_portal(_settings(tmp_path, target)) as portal:
        yield portal


async def call(portal: RunningPortal, who: Principal, tool: str, **arguments: Any) -> types.CallToolResult:
    result = await portal.gateway.call_tool(who, f"sandbox__{tool}", arguments, channel=NULL_CHANNEL)
    assert isinstance(result, types.CallToolResult)
    return result


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_tools_are_listed_with_schemas_and_honest_annotations(portal: RunningPortal) -> None:
    async with Client(portal.mcp_url) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    names = {n.removeprefix("sandbox__") for n in tools}
    assert names >= {
        "create", "list", "destroy", "exec", "run_python", "read_file", "write_file", "list_files",
        "delete_file", "start_process", "list_processes", "process_logs", "stop_process", "egress_log",
    }  # fmt: skip
    destructive = {n.removeprefix("sandbox__") for n, t in tools.items() if t.annotations.destructive_hint}  # type: ignore[union-attr]
    assert destructive == {"destroy", "delete_file"}
    assert tools["sandbox__list"].annotations.read_only_hint  # type: ignore[union-attr]
    assert tools["sandbox__exec"].output_schema is not None


async def test_a_session_runs_commands_streams_output_and_keeps_files(portal: RunningPortal) -> None:
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with Client(portal.mcp_url) as client:
        created = await client.call_tool("sandbox__create", {"name": "work"})
        assert not created.is_error, created
        sid = created.structured_content["id"]  # type: ignore[index]
        ran = await client.call_tool(
            "sandbox__exec",
            {"sandbox_id": sid, "command": "echo first; echo oops >&2; echo data > kept.txt; exit 7"},
            progress_callback=on_progress,
        )
        out = ran.structured_content
        assert out is not None
        assert (out["exit_code"], out["stdout"], out["stderr"]) == (7, "first\n", "oops\n")
        assert any("first" in m for m in messages) and any("oops" in m for m in messages)

        again = await client.call_tool("sandbox__exec", {"sandbox_id": sid, "command": "cat kept.txt; pwd; id -u"})
        assert again.structured_content["stdout"] == "data\n/workspace\n65534\n"  # type: ignore[index]

        big = await client.call_tool(
            "sandbox__exec", {"sandbox_id": sid, "command": "head -c 100000 /dev/zero | tr '\\0' x"}
        )
        assert big.structured_content["stdout_truncated"] is True  # type: ignore[index]
        assert len(big.structured_content["stdout"]) == 4096  # type: ignore[index]

        slow = await client.call_tool("sandbox__exec", {"sandbox_id": sid, "command": "sleep 30", "timeout": 0.5})
        assert slow.structured_content["timed_out"] is True  # type: ignore[index]
        assert slow.structured_content["exit_code"] is None  # type: ignore[index]
        too_long = await client.call_tool("sandbox__exec", {"sandbox_id": sid, "command": "true", "timeout": 999})
        assert too_long.is_error and "wall_seconds" in text(too_long)

        py = await client.call_tool("sandbox__run_python", {"sandbox_id": sid, "code": "print(sum(range(10)))"})
        assert py.structured_content["stdout"] == "45\n"  # type: ignore[index]

        destroyed = await client.call_tool("sandbox__destroy", {"sandbox_id": sid})
        assert not destroyed.is_error
        listed = await client.call_tool("sandbox__list", {})
        assert listed.structured_content == {"result": []}


async def test_files_are_binary_safe_and_size_limited(portal: RunningPortal) -> None:
    sid = (await call(portal, ALICE, "create")).structured_content["id"]  # type: ignore[index]
    blob = bytes(range(256)) * 4
    wrote = await call(
        portal,
        ALICE,
        "write_file",
        sandbox_id=sid,
        path="bin/blob",
        content=base64.b64encode(blob).decode(),
        encoding="base64",
    )
    assert not wrote.is_error, text(wrote)
    read = await call(portal, ALICE, "read_file", sandbox_id=sid, path="bin/blob", encoding="base64")
    assert base64.b64decode(read.structured_content["content"]) == blob  # type: ignore[index]
    as_text = await call(portal, ALICE, "read_file", sandbox_id=sid, path="bin/blob")
    assert as_text.is_error and "base64" in text(as_text)
    listing = await call(portal, ALICE, "list_files", sandbox_id=sid, path="bin")
    assert listing.structured_content == {
        "result": [
            {
                "name": "blob",
                "type": "file",
                "size": 1024,
                "mode": 0o644,
                "mtime": listing.structured_content["result"][0]["mtime"],
            }
        ]  # type: ignore[index]
    }
    await call(portal, ALICE, "exec", sandbox_id=sid, command="head -c 9000000 /dev/zero > huge")
    huge = await call(portal, ALICE, "read_file", sandbox_id=sid, path="huge")
    assert huge.is_error and "limit" in text(huge)
    missing = await call(portal, ALICE, "read_file", sandbox_id=sid, path="nope.txt")
    assert missing.is_error and "No such file" in text(missing)
    deleted = await call(portal, ALICE, "delete_file", sandbox_id=sid, path="bin", recursive=True)
    assert not deleted.is_error
    gone = await call(portal, ALICE, "list_files", sandbox_id=sid)
    assert [e["name"] for e in gone.structured_content["result"]] == ["huge"]  # type: ignore[index]


async def test_background_processes_run_between_calls_and_can_be_stopped(portal: RunningPortal) -> None:
    sid = (await call(portal, ALICE, "create")).structured_content["id"]  # type: ignore[index]
    started = await call(
        portal, ALICE, "start_process", sandbox_id=sid, command="echo up; while true; do sleep 0.05; echo tick; done"
    )
    pid = started.structured_content["id"]  # type: ignore[index]
    await call(portal, ALICE, "exec", sandbox_id=sid, command="true")  # another call; the process lives on

    async def ticked() -> bool:
        logs = await call(portal, ALICE, "process_logs", sandbox_id=sid, process_id=pid)
        return "tick" in logs.structured_content["output"]  # type: ignore[index]

    with anyio.fail_after(20):
        while not await ticked():
            await anyio.sleep(0.05)
    listed = await call(portal, ALICE, "list_processes", sandbox_id=sid)
    assert [p["running"] for p in listed.structured_content["result"]] == [True]  # type: ignore[index]
    stopped = await call(portal, ALICE, "stop_process", sandbox_id=sid, process_id=pid)
    assert stopped.structured_content["running"] is False  # type: ignore[index]
    logs = await call(portal, ALICE, "process_logs", sandbox_id=sid, process_id=pid, offset=3)
    assert logs.structured_content["output"].startswith("tick\n")  # type: ignore[index]
    unknown = await call(portal, ALICE, "stop_process", sandbox_id=sid, process_id="p99")
    assert unknown.is_error and "p99" in text(unknown)


async def test_sandboxes_belong_to_their_principal(portal: RunningPortal) -> None:
    sid = (await call(portal, ALICE, "create", name="alice's")).structured_content["id"]  # type: ignore[index]
    assert (await call(portal, ALICE, "list")).structured_content["result"][0]["owner"] == "user:alice"  # type: ignore[index]
    assert (await call(portal, BOB, "list")).structured_content == {"result": []}
    for tool, extra in (
        ("exec", {"command": "true"}),
        ("read_file", {"path": "x"}),
        ("write_file", {"path": "x", "content": "bob was here"}),
        ("start_process", {"command": "true"}),
        ("egress_log", {}),
        ("destroy", {}),
    ):
        result = await call(portal, BOB, tool, sandbox_id=sid, **extra)
        assert result.is_error and f"no sandbox {sid!r}" in text(result), (tool, text(result))
    assert (await call(portal, ALICE, "exec", sandbox_id=sid, command="ls")).structured_content["stdout"] == ""  # type: ignore[index]


async def test_egress_follows_the_callers_policy_and_the_credential_stays_outside(
    portal: RunningPortal, target: Target
) -> None:
    created = await call(portal, ALICE, "create")
    assert created.structured_content["egress"] == [f"127.0.0.1:{target.port}"]  # type: ignore[index]
    sid = created.structured_content["id"]  # type: ignore[index]
    fetched = await call(
        portal, ALICE, "run_python", sandbox_id=sid,
        code=f"import urllib.request, os\nprint(urllib.request.urlopen('http://127.0.0.1:{target.port}/api').read().decode())\n"
        "print(sorted(os.environ))",
    )  # fmt: skip
    assert "hello from the target" in fetched.structured_content["stdout"], fetched  # type: ignore[index]
    assert target.requests[0]["headers"]["Authorization"] == SECRET
    assert SECRET not in str(fetched.structured_content)
    log = await call(portal, ALICE, "egress_log", sandbox_id=sid)
    assert [(e["host"], e["allowed"], e["credential_added"]) for e in log.structured_content["result"]] == [  # type: ignore[index]
        ("127.0.0.1", True, True)
    ]

    blocked = await call(
        portal, ALICE, "run_python", sandbox_id=sid,
        code="import urllib.request\ntry:\n    urllib.request.urlopen('http://example.com/')\n"
        "except Exception as e:\n    print(e)",
    )  # fmt: skip
    assert blocked.structured_content["egress_blocked"] == [  # type: ignore[index]
        "GET example.com:80: example.com:80 is not in this sandbox's egress allow-list"
    ]
    await portal.gateway.audit.flush()  # a blocked request is audited like any refusal
    with Session(portal.portal.engine) as session:
        audited = session.exec(select(AuditRecord).where(AuditRecord.method == "egress")).all()
    assert [(r.principal, r.target, r.status, r.decision, r.server) for r in audited] == [
        ("user:alice", "example.com:80", "denied", "deny:egress", "sandbox")
    ]

    refused = await call(portal, BOB, "create", egress=[f"127.0.0.1:{target.port}"])
    assert refused.is_error and "not allowed for you" in text(refused)
    offline = await call(portal, BOB, "create")
    assert offline.structured_content["egress"] == []  # type: ignore[index]


async def test_sandboxes_and_their_files_survive_a_portal_restart(tmp_path: Path, target: Target) -> None:
    settings = _settings(tmp_path, target)
    async with sandbox_portal(settings) as first:
        sid = (await call(first, ALICE, "create", name="durable")).structured_content["id"]  # type: ignore[index]
        await call(first, ALICE, "write_file", sandbox_id=sid, path="notes.txt", content="still here")
    async with sandbox_portal(settings) as second:
        listed = await call(second, ALICE, "list")
        assert [s["name"] for s in listed.structured_content["result"]] == ["durable"]  # type: ignore[index]
        read = await call(second, ALICE, "read_file", sandbox_id=sid, path="notes.txt")
        assert read.structured_content["content"] == "still here"  # type: ignore[index]


async def test_bad_options_and_misplaced_options_are_clear_config_errors(tmp_path: Path, target: Target) -> None:
    async with running_portal(_settings(tmp_path, target, backend="vmware"), wait_ready=False) as portal:
        upstream = portal.gateway.upstreams["sandbox"]
        with anyio.fail_after(20):
            while upstream.last_error is None:
                await anyio.sleep(0.02)
        assert "servers.sandbox.options" in upstream.last_error and "backend" in upstream.last_error
    with pytest.raises(ConfigError, match="'options' only applies"):
        settings_from_mapping(
            {"servers": {"x": {"command": "true", "options": {"a": 1}}}}, source="<t>", base_dir=tmp_path, environ={}
        )
    with pytest.raises(ConfigError, match="NOPE"):
        settings_from_mapping(
            {"servers": {"x": {"builtin": "sandbox", "options": {"env": {"A": "${NOPE}"}}}}},
            source="<t>", base_dir=tmp_path, environ={},
        )  # fmt: skip
