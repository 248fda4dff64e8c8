"""The SDK generated from four real servers' catalogs: every tool, both directions, and pyright strict.

Reverse: any valid instance of a tool's input schema can be passed to its function (the values conform
to the parameters' annotations) and is sent exactly as it was. Forward: any value the annotations admit
is sent as arguments that validate against the schema's structure (value constraints such as ``minimum``
and ``pattern`` live in the docstrings; types cannot say them).
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codemode import generate_sdk
from tests.codemode.catalogs import SERVERS, load_catalogs
from tests.codemode.conftest import LoadedSdk
from tests.codemode.jsonvalues import conforms, instances, structural, validator, values_of
from tests.codemode.sdkcheck import call_source, example, kwargs_for, pyright, run_now

TOOLS = [(server, tool.name) for server, tools in load_catalogs().items() for tool in tools]
EXAMPLES = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tool(catalogs: dict[str, list[types.Tool]], server: str, name: str) -> types.Tool:
    return next(tool for tool in catalogs[server] if tool.name == name)


def test_the_saved_catalogs_hold_the_four_servers_with_their_tools(catalogs: dict[str, list[types.Tool]]) -> None:
    assert {name: len(tools) for name, tools in catalogs.items()} == {
        "everything": 13,
        "filesystem": 14,
        "github": 26,
        "playwright": 25,
    }
    assert set(catalogs) == set(SERVERS)


def test_every_tool_of_every_server_becomes_one_function(real_sdk: LoadedSdk) -> None:
    assert [(f.server, f.tool.name) for f in real_sdk.sdk.functions] == TOOLS
    for function in real_sdk.sdk.functions:
        assert inspect.iscoroutinefunction(real_sdk.callable(function.server, function.tool.name))
        assert function.target == f"{function.server}__{function.tool.name}"
        assert function.name.isidentifier()


@pytest.mark.parametrize(("server", "name"), TOOLS, ids=[f"{s}.{n}" for s, n in TOOLS])
@EXAMPLES
@given(data=st.data())
def test_any_valid_arguments_pass_through_the_function_unchanged(
    real_sdk: LoadedSdk, catalogs: dict[str, list[types.Tool]], server: str, name: str, data: st.DataObject
) -> None:
    tool = _tool(catalogs, server, name)
    function = real_sdk.sdk.function(server, name)
    instance = data.draw(instances(tool.input_schema))
    kwargs = kwargs_for(function, instance)
    signature = inspect.signature(real_sdk.callable(server, name))
    for key, value in kwargs.items():
        annotation = signature.parameters[key].annotation if key in signature.parameters else None
        if annotation is not None:
            assert conforms(value, annotation, real_sdk.namespace), (key, value, annotation)
    real_sdk.recorder.calls.clear()
    run_now(real_sdk.callable(server, name)(**kwargs))
    assert real_sdk.recorder.calls == [(function.target, instance)]


@pytest.mark.parametrize(("server", "name"), TOOLS, ids=[f"{s}.{n}" for s, n in TOOLS])
@EXAMPLES
@given(data=st.data())
def test_any_arguments_the_types_admit_are_valid_for_the_schema(
    real_sdk: LoadedSdk, catalogs: dict[str, list[types.Tool]], server: str, name: str, data: st.DataObject
) -> None:
    tool = _tool(catalogs, server, name)
    signature = inspect.signature(real_sdk.callable(server, name))
    kwargs: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        if parameter.default is inspect.Parameter.empty or data.draw(st.booleans()):
            kwargs[parameter.name] = data.draw(values_of(parameter.annotation, real_sdk.namespace))
    real_sdk.recorder.calls.clear()
    run_now(real_sdk.callable(server, name)(**kwargs))
    [(_, arguments)] = real_sdk.recorder.calls
    validator(structural(tool.input_schema)).validate(arguments)


def test_omitted_arguments_are_not_sent_and_none_is_sent_as_null(real_sdk: LoadedSdk) -> None:
    emulate = real_sdk.callable("playwright", "browser_emulate_media")
    run_now(emulate(colorScheme="dark", media=None))
    assert real_sdk.recorder.calls[-1] == ("playwright__browser_emulate_media", {"colorScheme": "dark", "media": None})
    run_now(emulate())
    assert real_sdk.recorder.calls[-1] == ("playwright__browser_emulate_media", {})


def test_a_required_key_with_a_default_is_sent_with_it_when_left_out(real_sdk: LoadedSdk) -> None:
    # Playwright's zod schemas list `scale` as required and give it a default.
    run_now(real_sdk.callable("playwright", "browser_take_screenshot")(type="png"))
    assert real_sdk.recorder.calls[-1][1] == {"type": "png", "scale": "css"}


def test_structured_results_come_back_as_the_hook_returns_them(real_sdk: LoadedSdk) -> None:
    real_sdk.recorder.result = {"content": "hello"}
    try:
        assert run_now(real_sdk.callable("filesystem", "read_text_file")(path="a.txt")) == {"content": "hello"}
    finally:
        real_sdk.recorder.result = None


GOOD_EXTRAS = """
async def results() -> None:
    text = await filesystem.read_text_file(path="notes.md", head=3)
    print(text["content"].upper())
    media = await filesystem.read_media_file(path="logo.png")
    for block in media["content"]:
        if block["type"] == "resource":
            print(block["resource"]["uri"])
        else:
            print(block["mimeType"])
    weather = await everything.get_structured_content(location="New York")
    print(weather["temperature"] + 1.5)
    print(await everything.get_sum(a=1, b=2.5))
    await playwright.browser_emulate_media(colorScheme=None, media="print")
    await github.create_pull_request_review(
        owner="o", repo="r", pull_number=1, body="b", event="COMMENT",
        comments=[{"path": "a.py", "line": 3, "body": "nit"}, {"path": "b.py", "position": 1, "body": "ok"}],
    )
"""

BAD_CALLS = [
    "await filesystem.read_text_file()",  # a required parameter left out
    'await filesystem.read_text_file(path="a", tail=None)',  # null where the schema does not allow it
    'await filesystem.read_text_file(path="a", lines=3)',  # no such parameter
    'await everything.get_sum(a="1", b=2)',  # a string for a number
    'await playwright.browser_emulate_media(colorScheme="blue")',  # not one of the enum's values
    'await playwright.browser_take_screenshot(type="gif")',  # the parameter named `type`, a bad value
    'await github.create_pull_request_review(owner="o", repo="r", pull_number=1, body="b", event="LGTM")',
    'await github.push_files(owner="o", repo="r", branch="b", message="m", files=[{"path": "a"}])',  # no content
    '(await filesystem.read_text_file(path="a"))["text"]',  # not a key of the result
]


def test_the_generated_module_and_calls_with_real_arguments_type_check_in_strict_mode(
    real_sdk: LoadedSdk, catalogs: dict[str, list[types.Tool]], tmp_path: Path
) -> None:
    (tmp_path / "sdk.py").write_text(real_sdk.sdk.source)
    imports = "from sdk import OMIT, everything, filesystem, github, playwright\n"
    calls: list[str] = []
    for function in real_sdk.sdk.functions:
        schema = function.tool.input_schema
        for full in (False, True):
            instance = example(schema, full=full)
            validator(schema).validate(instance)
            calls.append(call_source(function, instance))
    calls.append("await filesystem.read_text_file(path='a', head=OMIT)")
    body = textwrap.indent("\n".join(calls), "    ")
    (tmp_path / "good.py").write_text(f"{imports}\n\nasync def calls() -> None:\n{body}\n{GOOD_EXTRAS}")
    bad = "\n".join(f"async def bad_{i}() -> None:\n    {line}\n" for i, line in enumerate(BAD_CALLS))
    (tmp_path / "bad.py").write_text(f"{imports.replace('OMIT, ', '')}\n\n{bad}")

    errors = pyright(tmp_path)

    assert errors.get("sdk.py") is None, errors.get("sdk.py")
    assert errors.get("good.py") is None, errors.get("good.py")
    bad_lines = {line for line, _ in errors.get("bad.py", [])}
    expected = {5 + 3 * i for i in range(len(BAD_CALLS))}  # each call's own line
    assert bad_lines == expected, errors.get("bad.py")
    assert len(calls) == 2 * len(TOOLS) + 1


def test_generating_the_same_catalogs_twice_gives_the_same_module(catalogs: dict[str, list[types.Tool]]) -> None:
    assert generate_sdk(catalogs).source == generate_sdk(catalogs).source
