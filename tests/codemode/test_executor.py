"""The Monty executor: scripts run against the SDK, with type checks, limits and no way out of the sandbox."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import AsyncIterator

import anyio
import mcp_types as types
import pytest

from codemode import CallRecord, GeneratedSdk, Limits, MontyExecutor, ToolError, generate_sdk

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _tool(name: str, properties: dict[str, object], required: list[str]) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"The {name} tool.",
        input_schema={"type": "object", "properties": properties, "required": required},
    )


SDK: GeneratedSdk = generate_sdk(
    {
        "calc": [_tool("get-sum", {"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"])],
        "text": [
            _tool("echo", {"message": {"type": "string"}}, ["message"]),
            _tool("lines", {"from": {"type": "integer"}}, []),
        ],
    }
)


class Hook:
    """A call hook that answers like small tools would, and fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def __call__(self, target: str, arguments: dict[str, object], /) -> object:
        self.calls.append((target, arguments))
        if target == "calc__get-sum":
            a, b = arguments["a"], arguments["b"]
            assert isinstance(a, int | float) and isinstance(b, int | float)
            return {"sum": a + b}
        if arguments.get("message") == "fail":
            raise ToolError(target, "no")
        if target == "text__lines":
            return [f"line {i}" for i in range(1000)]
        return f"Echo: {arguments.get('message')}"


@pytest.fixture
async def executor() -> AsyncIterator[MontyExecutor]:
    async with MontyExecutor(limits=Limits(cpu_seconds=2.0, max_calls=5, max_output_chars=2000)).running() as running:
        yield running


async def test_the_value_of_the_last_expression_and_the_output_come_back_with_the_calls(
    executor: MontyExecutor,
) -> None:
    hook = Hook()
    code = 'total = await calc.get_sum(a=2, b=3)\nprint("sum is", total["sum"])\n{"twice": total["sum"] * 2}\n'
    result = await executor.run(SDK, code, hook)
    assert result.status == "ok", result.error
    assert result.value == {"twice": 10}
    assert result.stdout == "sum is 5\n"
    assert [(c.tool, c.ok) for c in result.calls] == [("calc__get-sum", True)]
    assert result.calls[0].ms >= 0 and not result.truncated
    assert hook.calls == [("calc__get-sum", {"a": 2, "b": 3})]


async def test_python_names_are_sent_under_their_wire_names(executor: MontyExecutor) -> None:
    hook = Hook()
    result = await executor.run(SDK, "rows = await text.lines(from_=3)\nlen(rows)", hook)
    assert result.value == 1000
    assert hook.calls == [("text__lines", {"from": 3})]


async def test_a_failing_tool_call_raises_a_tool_error_the_script_can_catch(executor: MontyExecutor) -> None:
    code = 'try:\n    await text.echo(message="fail")\nexcept ToolError as error:\n    print("caught:", error)\n"after"'
    result = await executor.run(SDK, code, Hook())
    assert result.status == "ok"
    assert result.value == "after"
    assert result.stdout == "caught: text__echo: no\n"
    assert result.calls == (CallRecord("text__echo", False, result.calls[0].ms),)


CATCH_SPECIFICALLY = """\
caught = []
for message in ["fail", "ok"]:
    try:
        if message == "ok":
            {}["missing"]
        await text.echo(message=message)
    except ToolError as error:
        caught.append(["tool", str(error)])
    except KeyError as error:
        caught.append(["key", str(error)])
try:
    raise RuntimeError("the script's own")
except ToolError:
    caught.append(["wrong", "a RuntimeError is not a ToolError"])
except RuntimeError as error:
    caught.append(["runtime", str(error)])
try:
    await text.echo(message="fail")
except Exception as error:
    caught.append(["exception", str(error)])
caught
"""


async def test_except_tool_error_catches_failed_calls_and_not_the_scripts_own_errors(
    executor: MontyExecutor,
) -> None:
    result = await executor.run(SDK, CATCH_SPECIFICALLY, Hook())
    assert result.status == "ok", result.error
    assert result.value == [
        ["tool", "text__echo: no"],
        ["key", "'missing'"],
        ["runtime", "the script's own"],
        ["exception", "text__echo: no"],
    ]


async def test_the_type_check_knows_tool_error_as_an_exception_class(executor: MontyExecutor) -> None:
    code = "def describe(error: ToolError) -> str:\n    return str(error)\n\nn: ToolError = 3\n"
    result = await executor.run(SDK, code, Hook())
    assert result.status == "type_error"
    assert [line for line, _ in result.type_errors] == [4]


async def test_an_uncaught_tool_error_fails_the_run_at_the_scripts_line(executor: MontyExecutor) -> None:
    result = await executor.run(SDK, 'x = 1\nawait text.echo(message="fail")\n', Hook())
    assert result.status == "error" and result.line == 2
    assert result.error == "ToolError: text__echo: no"


async def test_an_os_error_the_script_raises_itself_is_not_reported_as_a_tool_error(executor: MontyExecutor) -> None:
    result = await executor.run(SDK, 'x = 1\nraise OSError("mine")\n', Hook())
    assert result.status == "error" and result.line == 2
    assert result.error == "OSError: mine"


def test_a_tool_error_carries_the_tool_and_the_message_in_the_host() -> None:
    error = ToolError("github__create_issue", "Not Found")
    assert (error.tool, error.message, str(error)) == (
        "github__create_issue",
        "Not Found",
        "github__create_issue: Not Found",
    )
    assert isinstance(error, Exception)
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.tool, copied.message) == (error.tool, error.message)


async def test_type_errors_come_back_with_line_numbers_and_nothing_runs(executor: MontyExecutor) -> None:
    hook = Hook()
    code = 'await text.echo(message="hi")\nawait calc.get_sum(a=1)\nn: int = "x"\n'
    result = await executor.run(SDK, code, hook)
    assert result.status == "type_error"
    assert [line for line, _ in result.type_errors] == [2, 3]
    assert "`b`" in result.type_errors[0][1]
    assert result.line == 2 and hook.calls == []


async def test_a_runtime_error_reports_the_scripts_own_line(executor: MontyExecutor) -> None:
    result = await executor.run(SDK, "items = [1, 2]\n\nvalue = items[5]\n", Hook())
    assert result.status == "error"
    assert result.line == 3
    assert result.error == "IndexError: list index out of range"


async def test_a_script_that_runs_too_long_is_stopped(executor: MontyExecutor) -> None:
    result = await executor.run(SDK, "n = 0\nwhile True:\n    n += 1\n", Hook(), limits=Limits(cpu_seconds=0.5))
    assert result.status == "error"
    assert result.error is not None and "TimeoutError" in result.error


async def test_the_call_budget_stops_the_run_even_if_the_script_catches_the_error(executor: MontyExecutor) -> None:
    code = "for i in range(10):\n    try:\n        await calc.get_sum(a=i, b=i)\n    except ToolError:\n        pass\n"
    result = await executor.run(SDK, code, Hook())
    assert result.status == "error"
    assert result.error is not None and "call limit" in result.error
    assert len(result.calls) == 5


async def test_output_past_the_limit_is_cut_and_flagged(executor: MontyExecutor) -> None:
    printed = await executor.run(SDK, 'print("x" * 5000)\n1', Hook())
    assert printed.status == "ok" and printed.truncated
    assert len(printed.stdout) == 2000
    big = await executor.run(SDK, "rows = await text.lines()\nrows", Hook())
    assert big.truncated and isinstance(big.value, str) and len(big.value) == 2000


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.getenv('HOME')",
        "import os\nos.environ['PATH']",
        "from pathlib import Path\nPath('/etc/passwd').read_text()",
        "from pathlib import Path\nPath('/tmp/dockyard-escape').write_text('x')",
        "import socket",
        "import subprocess",
        "__import__('os')",
    ],
)
async def test_the_script_has_no_filesystem_network_or_environment(executor: MontyExecutor, code: str) -> None:
    result = await executor.run(SDK, code, Hook())
    assert result.status in ("error", "type_error"), result
    assert result.value is None


async def test_running_without_entering_the_pool_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        await MontyExecutor().run(SDK, "1", Hook())


async def test_a_run_whose_tool_call_never_returns_is_stopped_at_the_wall_clock_limit(executor: MontyExecutor) -> None:
    never = anyio.Event()

    async def stuck(target: str, arguments: dict[str, object], /) -> object:
        await never.wait()
        return None

    with anyio.fail_after(10):
        result = await executor.run(SDK, 'await text.echo(message="hi")', stuck, limits=Limits(wall_seconds=0.3))
    assert result.status == "error"
    assert result.error == "the run took longer than 0.3 s and was stopped"
    after = await executor.run(SDK, "1 + 1", Hook())
    assert after.value == 2, "the pool keeps serving after a stopped run"


async def test_each_run_starts_from_a_fresh_session_even_when_one_was_prepared(executor: MontyExecutor) -> None:
    first = await executor.run(SDK, "leak = 41\nleak", Hook())
    assert first.value == 41
    for _ in range(2):  # the second and third runs take the session prepared after the one before
        again = await executor.run(SDK, "leak + 1", Hook())
        assert again.status == "type_error", again
        assert again.line == 1 and "leak" in (again.error or "")


async def test_the_calls_of_a_prepared_session_go_to_the_hook_of_the_run_that_took_it(
    executor: MontyExecutor,
) -> None:
    await executor.run(SDK, "1", Hook())  # leaves a session prepared for SDK
    hooks = [Hook() for _ in range(4)]

    async def one(i: int) -> None:
        result = await executor.run(SDK, f'await text.echo(message="run {i}")', hooks[i])
        assert result.value == f"Echo: run {i}", result

    await one(0)
    async with anyio.create_task_group() as tasks:  # at once: one takes the prepared session, the rest their own
        for i in range(1, 4):
            tasks.start_soon(one, i)
    assert [hook.calls for hook in hooks] == [[("text__echo", {"message": f"run {i}"})] for i in range(4)]


async def test_without_keep_ready_every_run_prepares_its_own_session() -> None:
    async with MontyExecutor(keep_ready=False).running() as running:
        for n in range(2):
            result = await running.run(SDK, f"total = await calc.get_sum(a={n}, b=1)\ntotal", Hook())
            assert result.value == {"sum": n + 1}


async def test_runs_stopped_while_their_session_is_being_prepared_give_it_back(executor: MontyExecutor) -> None:
    hurried = dataclasses.replace(executor.limits, wall_seconds=0.001)  # same session limits, no time to wait
    with anyio.fail_after(20):
        for _ in range(4):
            await executor.run(SDK, "1", Hook())  # leaves a session being prepared for SDK
            stopped = await executor.run(SDK, "1", Hook(), limits=hurried)
            assert stopped.status == "error" and "was stopped" in (stopped.error or "")
        after = await executor.run(SDK, "2 + 2", Hook())
    assert after.value == 4, "no worker was lost to the stopped runs"
