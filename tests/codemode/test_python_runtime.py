"""``execute(runtime="python")`` end to end: full CPython in a bubblewrap box, its SDK calls through the portal.

Everything goes through a real portal with the official MCP client and real bubblewrap boxes. The box is
adversarial ground: a script looks for the portal's environment, the network and tools its caller may not
see, and finds none of them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from sqlmodel import Session, select

from portal.config import Settings, settings_from_mapping
from portal.store import AuditRecord
from tests.codemode import shelf_server
from tests.policy.conftest import write_files
from tests.portal import bank_server
from tests.support import everything_stdio, make_settings, running_portal

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)"),
]

POLICY = """
    version: 1
    roles: {owner: {}}
    principals:
      local: {roles: [owner]}
    rules:
      - {name: everything, effect: allow, roles: [owner]}
      - {name: no-toggling, effect: deny, roles: [owner], tools: [shelf__toggle_lending]}
      - {name: transfers-need-approval, effect: require_approval, roles: [owner], tools: [bank__transfer]}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def empty_ledger() -> None:
    bank_server.LEDGER.clear()


def settings_for(tmp_path: Path, **codemode: Any) -> Settings:
    raw = {
        "portal": {"data_dir": str(tmp_path / "data"), "health_interval": 1.0},
        "auth": {"mode": "none"},
        "policy": {"dir": str(write_files(tmp_path / "policies", main=POLICY))},
        "codemode": codemode,
        "servers": {
            "bank": {"module": "tests.portal.bank_server:server"},
            "shelf": {"module": "tests.codemode.shelf_server:server"},
        },
    }
    return settings_from_mapping(raw, source="<test>", base_dir=tmp_path, environ=os.environ)


async def execute(client: Client, code: str, runtime: str = "python") -> dict[str, Any]:
    result = await client.call_tool("execute", {"code": code, "runtime": runtime})
    assert result.structured_content is not None, result.content
    assert result.is_error == (result.structured_content["status"] != "ok")
    return result.structured_content


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


CHAIN = """\
import sqlite3
import statistics
import sys
from dataclasses import dataclass


@dataclass
class Item:
    title: str

    def label(self) -> str:
        return self.title.lower()


class Book(Item):
    def label(self) -> str:
        return "book:" + super().label()


class Refused(ToolError):
    pass


db = sqlite3.connect(":memory:")
db.execute("create table books (title text, letters int)")
books = (await shelf.list_books())["result"]
for title in books:
    db.execute("insert into books values (?, ?)", (str(title), len(str(title))))
(longest,) = db.execute("select title from books order by letters desc limit 1").fetchone()
balance = (await bank.balance())["result"]
try:
    await bank.transfer(to="eve", amount=10)
except ToolError as error:
    refusal = [type(error).__name__, isinstance(error, OSError), error.tool, "default runtime" in error.message]
try:
    raise Refused("bank__transfer", "a subclass of ToolError, raised by the script itself")
except ToolError as error:
    refusal.append(type(error).__name__)
print("books:", len(books), file=sys.stderr)
{
    "longest": Book(longest).label(),
    "mean": statistics.mean(len(str(t)) for t in books),
    "balance": balance,
    "refusal": refusal,
}
"""


async def test_a_script_uses_sqlite_statistics_and_subclasses_while_chaining_sdk_calls(tmp_path: Path) -> None:
    async with running_portal(settings_for(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        body = await execute(client, CHAIN)
        assert body["status"] == "ok", (body.get("error"), body.get("line"))
        assert body["value"] == {
            "longest": "book:ulysses",
            "mean": 5,
            "balance": 100,
            "refusal": ["ToolError", True, "bank__transfer", True, "Refused"],
        }
        assert body["stdout"] == "books: 3\n"
        assert body["truncated"] is False and body["calls_total"] == 3
        assert [(c["tool"], c["ok"]) for c in body["calls"]] == [
            ("shelf__list_books", True),
            ("bank__balance", True),
            ("bank__transfer", False),
        ]
        assert all(isinstance(c["ms"], float) for c in body["calls"])
        assert bank_server.LEDGER == [], "a call that needs approval never reaches the upstream from python"

        # The same script in the default runtime: Monty has neither sqlite3 nor class inheritance.
        monty = await execute(client, CHAIN, runtime="monty")
        assert monty["status"] != "ok"

        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()  # pyright: ignore[reportArgumentType]
        calls = [(r.target, r.principal) for r in rows if r.method == "tools/call"]
        assert calls[:3] == [("shelf__list_books", "local"), ("bank__balance", "local"), ("bank__transfer", "local")]


async def test_errors_come_back_with_the_script_s_own_line(tmp_path: Path) -> None:
    async with running_portal(settings_for(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        typo = await execute(client, "import statistics\nx = 1\nawait bank.transfer(to='eve', amount='ten')\n")
        assert typo["status"] == "type_error" and typo["line"] == 3, typo
        assert "amount" in typo["error"] or "int" in typo["error"]
        assert typo["calls"] == [], "nothing runs when the script does not type-check"

        crash = await execute(client, "books = await shelf.list_books()\n\n{}['missing']\n")
        assert crash["status"] == "error" and crash["line"] == 3
        assert crash["error"] == "KeyError: 'missing'"
        assert [c["tool"] for c in crash["calls"]] == ["shelf__list_books"]

        uncaught = await execute(client, "x = 1\nawait bank.transfer(to='eve', amount=1)\n")
        assert uncaught["line"] == 2 and uncaught["error"].startswith("ToolError: bank__transfer: ")

        syntax = await execute(client, "x = (\n")
        assert syntax["status"] == "error" and syntax["error"].startswith("SyntaxError")

        # Runners are started ahead of time, but each serves one script: nothing in memory carries over.
        await execute(client, "import os\nos.environ['LEFT_BEHIND'] = '1'\nprint('set')\n")
        fresh = await execute(client, "import os\n'LEFT_BEHIND' in os.environ\n")
        assert fresh["status"] == "ok" and fresh["value"] is False


SNOOP = """\
import os
import socket
from pathlib import Path

environs = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/environ") if os.access(p, os.R_OK)]
sockets = {}
for path in Path("/run/dockyard/control").glob("code-*.sock"):
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
        sockets[path.name] = "connected"
    except OSError as error:
        sockets[path.name] = type(error).__name__
    finally:
        probe.close()
tried = {}
for host, port in [("127.0.0.1", PORT), ("1.1.1.1", 80), ("example.com", 443)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        tried[host] = "connected"
    except OSError as error:
        tried[host] = type(error).__name__
{
    "env": dict(os.environ),
    "procs": b"\\n".join(environs).decode(errors="replace"),
    "uid": os.getuid(),
    "tried": tried,
    "sockets": sockets,
    "root_writable": os.access("/usr", os.W_OK),
}
"""


async def test_the_script_sees_no_portal_environment_no_network_and_no_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"s3cret-{secrets.token_hex(8)}"
    monkeypatch.setenv("DOCKYARD_PLANTED_SECRET", secret)
    async with running_portal(settings_for(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        assert os.environ["DOCKYARD_PLANTED_SECRET"] == secret  # the portal's own process has it
        port = int(portal.url.rsplit(":", 1)[1].split("/")[0])
        body = await execute(client, SNOOP.replace("PORT", str(port)))
        assert body["status"] == "ok", (body.get("error"), body.get("line"))
        value = body["value"]
        assert secret not in str(body)
        assert "DOCKYARD_PLANTED_SECRET" not in value["env"] and "DOCKYARD_PLANTED_SECRET" not in value["procs"]
        assert set(value["env"]) <= {"PATH", "HOME", "LANG", "USER", "PWD", "DOCKYARD_JOB"}
        assert value["uid"] == 65534 and value["root_writable"] is False
        # Its own run's socket is there, but takes no second connection: the runner holds the only one.
        assert list(value["sockets"].values()) == ["ConnectionRefusedError"]
        assert value["tried"] == {
            "127.0.0.1": "ConnectionRefusedError",  # the box's own loopback, not the portal's
            "1.1.1.1": "OSError",  # no route: the box has no network at all
            "example.com": "gaierror",  # and no resolver
        }


FORGE = """\
hook = bank.balance.__globals__["_call"]
answers = []
for target in ["shelf__toggle_lending", "bank__nonexistent", "shelf__list_books"]:
    try:
        answers.append(await hook(target, {}))
    except ToolError as error:
        answers.append(error.message)
answers
"""


async def test_a_script_cannot_call_a_tool_its_caller_may_not_see(tmp_path: Path) -> None:
    tools_before = [t.name for t in await shelf_server.server.list_tools()]
    async with running_portal(settings_for(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        hidden = await execute(client, "await shelf.toggle_lending()\n")
        assert hidden["status"] == "type_error" and "toggle_lending" in hidden["error"]

        # Past the SDK, straight to the socket's hook: the portal answers only for the caller's own tools.
        forged = await execute(client, FORGE)
        assert forged["status"] == "ok", (forged.get("error"), forged.get("line"))
        assert forged["value"] == [
            "no such tool in your SDK",
            "no such tool in your SDK",
            {"result": ["Dune", "Emma", "Ulysses"]},
        ]
        assert [(c["tool"], c["ok"]) for c in forged["calls"]] == [("shelf__list_books", True)]
        await portal.gateway.audit.flush()
        with Session(portal.portal.engine) as session:
            rows = session.exec(select(AuditRecord)).all()  # pyright: ignore[reportArgumentType]
        assert not [r for r in rows if r.target == "shelf__toggle_lending"]
    assert [t.name for t in await shelf_server.server.list_tools()] == tools_before


async def test_limits_on_calls_output_time_and_memory_are_enforced(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        python_max_calls=3,
        python_max_output_chars=1000,
        python_wall_seconds=6,
        python_cpu_seconds=1,
        python_memory_mb=96,
    )
    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code") as client:
        calls = await execute(client, "for i in range(10):\n    await bank.balance()\n")
        assert calls["status"] == "error" and "call limit" in calls["error"]
        assert [c["ok"] for c in calls["calls"]] == [True, True, True]

        loud = await execute(client, "print('x' * 5000)\n'y' * 5000\n")
        assert loud["status"] == "ok" and loud["truncated"] is True
        assert loud["stdout"] == "x" * 1000 and len(loud["value"]) == 1000

        spin = await execute(client, "n = 0\nwhile True:\n    n += 1\n")
        assert spin["status"] == "error" and spin["line"] in (2, 3), spin["error"]
        assert spin["error"].startswith("CpuTimeExceeded")

        sleepy = await execute(client, "import time\nprint('started')\ntime.sleep(60)\n")
        assert sleepy["status"] == "error" and "longer than 6" in sleepy["error"]
        assert sleepy["stdout"] == "started\n", "what it printed before it was stopped is kept"

        hungry = await execute(client, "x = 1\nblob = bytearray(512 * 1024 * 1024)\n")
        assert hungry["status"] == "error" and hungry["error"].startswith("MemoryError") and hungry["line"] == 2

        killed = await execute(client, "import os\nprint('bye', flush=True)\nos.kill(os.getpid(), 9)\n")
        assert killed["status"] == "error" and "killed" in killed["error"] and killed["stdout"] == "bye\n", killed

        after = await execute(client, "await bank.balance()\n")
        assert after["status"] == "ok" and after["value"] == {"result": 100}, "the box outlives a script's failure"


async def test_a_missing_backend_or_a_switched_off_runtime_is_a_clear_error(tmp_path: Path) -> None:
    missing = settings_for(tmp_path / "a", python_backend_options={"bwrap": "/nonexistent/bwrap"})
    async with running_portal(missing) as portal, Client(f"{portal.url}/mcp/code") as client:
        result = await client.call_tool("execute", {"code": "1", "runtime": "python"})
        assert result.is_error
        assert "runtime 'python' is unavailable" in text_of(result) and "apt-get install bubblewrap" in text_of(result)
        assert (await execute(client, "1 + 1", runtime="monty"))["value"] == 2, "the default runtime still works"

    off = settings_for(tmp_path / "b", python_backend="none")
    async with running_portal(off) as portal, Client(f"{portal.url}/mcp/code") as client:
        result = await client.call_tool("execute", {"code": "1", "runtime": "python"})
        assert result.is_error and 'python_backend = "none"' in text_of(result)
        bad = await client.call_tool("execute", {"code": "1", "runtime": "ruby"})
        assert bad.is_error and "'runtime' must be 'monty' or 'python'" in text_of(bad)


@pytest.mark.npm
async def test_the_readme_python_runtime_example_prints_what_it_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split('### `runtime="python"`', 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    settings = make_settings(tmp_path, {"everything": everything_stdio()})
    async with running_portal(settings) as portal:
        source = block.replace("http://127.0.0.1:8000", portal.url)
        await anyio.to_thread.run_sync(exec, compile(source, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == ["ok 12 5"]


async def test_scripts_of_one_caller_run_at_the_same_time(tmp_path: Path) -> None:
    async with running_portal(settings_for(tmp_path)) as portal, Client(f"{portal.url}/mcp/code") as client:
        results: dict[int, dict[str, Any]] = {}

        async def one(n: int) -> None:
            code = f"import statistics\nb = (await bank.balance())['result']\nstatistics.mean([b, {n}])\n"
            results[n] = await execute(client, code)

        async with anyio.create_task_group() as tasks:
            for n in (0, 100, 200):
                tasks.start_soon(one, n)
        assert {n: body["value"] for n, body in results.items()} == {0: 50, 100: 100, 200: 150}
