"""Servers named like standard-library modules: the namespace gets a ``_``, so a script can use both.

The catalog is server-everything's real one under the server name ``json`` (and others Monty's scripts
import: ``math``, ``re``, ``os``, ``time``, ``datetime``, ``asyncio``, ``typing``): saved, and live through a
portal that federates the npm server as ``json``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp import Client

from codemode import GeneratedSdk, MontyExecutor, SdkIndex, generate_sdk
from tests.codemode.catalogs import load_catalog
from tests.support import everything_stdio, make_settings, running_portal

pytestmark = pytest.mark.anyio

SHADOWING = ("json", "math", "re", "os", "time", "datetime", "asyncio", "typing")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def everything() -> list[types.Tool]:
    return load_catalog("everything")


@pytest.fixture(scope="module")
def sdk(everything: list[types.Tool]) -> GeneratedSdk:
    return generate_sdk({"json": everything, "github": everything[:1]})


@pytest.fixture
async def executor() -> AsyncIterator[MontyExecutor]:
    async with MontyExecutor().running() as running:
        yield running


def test_a_server_named_like_a_standard_module_gets_a_trailing_underscore(everything: list[types.Tool]) -> None:
    sdk = generate_sdk({name: everything[:1] for name in (*SHADOWING, "github")})
    assert [f.namespace for f in sdk.functions] == [f"{name}_" for name in SHADOWING] + ["github"]
    assert [f.target for f in sdk.functions] == [f"{name}__{everything[0].name}" for name in (*SHADOWING, "github")]
    assert '\n\nclass json_:\n    """Tools of the MCP server \'json\'. Named json_: json is a module' in sdk.source


def test_search_shows_the_namespace_and_finds_the_function_by_the_servers_name_too(sdk: GeneratedSdk) -> None:
    index = SdkIndex(sdk)
    assert index.search("add two numbers", detail="signatures", limit=1).splitlines()[0] == (
        "json_.get_sum(*, a: float, b: float) -> JSON"
    )
    for name in ("json_.get_sum", "json.get_sum", "json__get-sum"):
        assert index.search(name).startswith(
            "# in namespace json_ (MCP server 'json')\nasync def get_sum(*, a: float, b: float) -> JSON:"
        ), name


async def test_a_script_uses_the_json_module_and_the_json_server_together(
    sdk: GeneratedSdk, executor: MontyExecutor
) -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    async def hook(target: str, arguments: dict[str, object], /) -> object:
        calls.append((target, arguments))
        a, b = arguments["a"], arguments["b"]
        assert isinstance(a, int) and isinstance(b, int)
        return f"The sum of {a} and {b} is {a + b}."

    code = 'import json\ntext = await json_.get_sum(a=2, b=3)\njson.loads(json.dumps({"text": text}))\n'
    result = await executor.run(sdk, code, hook)
    assert result.status == "ok", result.error
    assert result.value == {"text": "The sum of 2 and 3 is 5."}
    assert calls == [("json__get-sum", {"a": 2, "b": 3})]


@pytest.mark.parametrize("module", SHADOWING)
async def test_every_shadowing_name_leaves_the_module_importable(
    module: str, everything: list[types.Tool], executor: MontyExecutor
) -> None:
    sdk = generate_sdk({module: [t for t in everything if t.name == "get-sum"]})

    async def hook(target: str, arguments: dict[str, object], /) -> object:
        return target

    code = f"import {module}\ntarget = await {module}_.get_sum(a=1, b=2)\n[target, type({module}).__name__]\n"
    result = await executor.run(sdk, code, hook)
    assert result.status == "ok", result.error
    assert result.value == [f"{module}__get-sum", "module"]


@pytest.mark.npm
async def test_through_a_portal_federating_server_everything_as_json(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, {"json": everything_stdio()})
    async with running_portal(settings) as portal, Client(f"{portal.url}/mcp/code") as client:
        found = await client.call_tool("search", {"query": "add two numbers", "detail": "names", "limit": 1})
        assert [c.text for c in found.content if isinstance(c, types.TextContent)] == [
            "json_.get_sum: Returns the sum of two numbers"
        ]
        code = "import json\nsum_text = await json_.get_sum(a=2, b=3)\njson.loads(json.dumps([sum_text]))\n"
        result = await client.call_tool("execute", {"code": code})
        assert result.structured_content is not None and not result.is_error, result
        assert result.structured_content["value"] == ["The sum of 2 and 3 is 5."]
        assert result.structured_content["calls"][0]["tool"] == "json__get-sum"
