"""One schema construct at a time, and the security property: no schema can inject code into the SDK."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import mcp_types as types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inline_snapshot import snapshot
from mcp import Client
from mcp.server import MCPServer
from pydantic import BaseModel, Field

import codemode
from codemode import generate_sdk, load_sdk
from tests.codemode.conftest import LoadedSdk, load
from tests.codemode.jsonvalues import instances
from tests.codemode.sdkcheck import kwargs_for, pyright, run_now


def tool(input_schema: dict[str, Any], *, name: str = "t", output: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description="A tool.", input_schema=input_schema, output_schema=output)


def sdk_of(*tools: types.Tool, server: str = "s") -> LoadedSdk:
    return load(generate_sdk({server: list(tools)}))


def signature(sdk: LoadedSdk, name: str = "t", server: str = "s") -> str:
    function = sdk.sdk.function(server, name)
    return next(line.strip() for line in function.stub.splitlines() if "def " in line or line.startswith("    *"))


def params(sdk: LoadedSdk, name: str = "t", server: str = "s") -> dict[str, str]:
    fn = sdk.callable(server, name)
    return {p.name: str(p.annotation) for p in inspect.signature(fn).parameters.values()}


def test_the_package_exports_exactly_its_public_surface() -> None:
    assert sorted(codemode.__all__) == [
        "CallRecord",
        "Detail",
        "EXECUTE_DESCRIPTION",
        "ExecuteResult",
        "GeneratedSdk",
        "Limits",
        "MontyExecutor",
        "PythonRuntime",
        "PythonRuntimeError",
        "SEARCH_DESCRIPTION",
        "SdkFunction",
        "SdkIndex",
        "SdkParameter",
        "ToolCaller",
        "ToolError",
        "build_code_server",
        "default_target",
        "generate_sdk",
        "load_sdk",
        "python_runtime",
    ]
    assert all(hasattr(codemode, name) for name in codemode.__all__)


def test_keywords_and_non_identifiers_get_safe_names_and_keep_their_wire_names() -> None:
    schema = {
        "type": "object",
        "properties": {"from": {"type": "string"}, "per-page": {"type": "integer"}, "2fa": {"type": "boolean"}},
        "required": ["from"],
    }
    sdk = sdk_of(tool(schema, name="class"))
    function = sdk.sdk.function("s", "class")
    assert function.name == "class_"
    assert [(p.name, p.wire_name) for p in function.parameters] == [
        ("from_", "from"),
        ("per_page", "per-page"),
        ("_2fa", "2fa"),
    ]
    run_now(sdk.callable("s", "class")(from_="a", per_page=2, _2fa=True))
    assert sdk.recorder.calls == [("s__class", {"from": "a", "per-page": 2, "2fa": True})]


def test_names_the_module_uses_itself_are_never_taken_by_parameters_methods_or_servers() -> None:
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in ("_call", "_wire", "cast", "OMIT")}}
    sdk = load(generate_sdk({"list": [tool(schema, name="str"), tool(schema, name="staticmethod")]}))
    assert sdk.sdk.function("list", "str").namespace == "list_"
    assert [f.name for f in sdk.sdk.functions] == ["str_", "staticmethod_"]
    names = [p.name for p in sdk.sdk.function("list", "str").parameters]
    assert names == ["_call_", "_wire_", "cast_", "OMIT"]
    run_now(sdk.callable("list", "str")(_call_="a", OMIT="b"))
    assert sdk.recorder.calls == [("list__str", {"_call": "a", "OMIT": "b"})]


def test_omitted_is_not_null() -> None:
    schema = {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}
    sdk = sdk_of(tool(schema))
    assert params(sdk) == {"x": "str | None | Omit"}
    run_now(sdk.callable("s", "t")())
    run_now(sdk.callable("s", "t")(x=None))
    assert [arguments for _, arguments in sdk.recorder.calls] == [{}, {"x": None}]


def test_number_integer_enum_const_and_type_lists_map_to_python_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "number"},
            "i": {"type": "integer"},
            "e": {"enum": ["a b", 1, True, None]},
            "c": {"const": "fixed"},
            "f": {"enum": [0.5, 2]},
            "u": {"type": ["integer", "string", "null"]},
            "o": {"type": "string", "nullable": True},
        },
        "required": ["n", "i", "e", "c", "f", "u", "o"],
    }
    assert params(sdk_of(tool(schema))) == {
        "n": "float",
        "i": "int",
        "e": "Literal['a b', 1, True] | None",
        "c": "Literal['fixed']",
        "f": "float",
        "u": "int | str | None",
        "o": "str | None",
    }


def test_additional_properties_true_false_and_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "any": {"type": "object"},
            "none": {"type": "object", "additionalProperties": False},
            "ints": {"type": "object", "additionalProperties": {"type": "integer"}},
            "pattern": {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        },
        "additionalProperties": {"type": "boolean"},
    }
    sdk = sdk_of(tool(schema))
    assert params(sdk) == {
        "any": "dict[str, JSON] | Omit",
        "none": "dict[str, Never] | Omit",
        "ints": "dict[str, int] | Omit",
        "pattern": "dict[str, str] | Omit",
        "extra": "bool",
    }
    run_now(sdk.callable("s", "t")(ints={"a": 1}, **{"x-flag": True}))
    assert sdk.recorder.calls == [("s__t", {"ints": {"a": 1}, "x-flag": True})]


def test_refs_in_defs_and_definitions_recursion_and_all_of_become_named_types() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "definitions": {
            "Tree": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/definitions/Tree"}},
                },
                "required": ["label"],
            },
            "Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
            "Loop": {"$ref": "#/definitions/Loop"},
        },
        "properties": {
            "tree": {"$ref": "#/definitions/Tree"},
            "item": {"allOf": [{"$ref": "#/definitions/Base"}, {"properties": {"name": {"type": "string"}}}]},
            "loop": {"$ref": "#/definitions/Loop"},
            "remote": {"$ref": "https://example.com/schema.json"},
            "root": {"$ref": "#"},
        },
        "required": ["tree"],
    }
    sdk = sdk_of(tool(schema))
    assert params(sdk) == {
        "tree": "Tree",
        "item": "TItem | Omit",
        "loop": "Loop | Omit",
        "remote": "JSON | Omit",
        "root": "TRoot | Omit",
    }
    source = sdk.sdk.source
    assert "class Tree(TypedDict):\n    label: str\n    kids: NotRequired[list[Tree]]" in source
    assert "class TItem(TypedDict):\n    id: int\n    name: NotRequired[str]" in source
    assert 'Loop: TypeAlias = "JSON"' in source  # a cycle through no container: any JSON
    assert "class TRoot(TypedDict):\n    tree: Tree\n" in source  # `#` is the arguments object itself


def test_identical_definitions_in_two_tools_are_one_type() -> None:
    defs = {"$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}}}
    schema = {"type": "object", "properties": {"p": {"$ref": "#/$defs/Point"}}, **defs}
    sdk = sdk_of(tool(schema, name="a"), tool(schema, name="b"))
    assert params(sdk, "a") == params(sdk, "b") == {"p": "Point | Omit"}
    assert sdk.sdk.source.count("class Point(TypedDict)") == 1


def test_a_root_any_of_becomes_keyword_parameters_required_only_where_every_branch_requires_them() -> None:
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "anyOf": [
            {"properties": {"url": {"type": "string"}}, "required": ["url", "query"]},
            {"properties": {"path": {"type": "string"}}, "required": ["path", "query"]},
        ],
    }
    assert signature(sdk_of(tool(schema))).startswith("async def t(*, query: str, url: str | Omit = OMIT, path:")


def test_tools_with_the_same_name_on_two_servers_get_distinct_result_types() -> None:
    output = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    empty = {"type": "object"}
    sdk = load(
        generate_sdk({"a": [tool(empty, name="run", output=output)], "b": [tool(empty, name="run", output=output)]})
    )
    assert [f.stub.splitlines()[1] for f in sdk.sdk.functions] == [
        "async def run() -> ARunResult:",
        "async def run() -> BRunResult:",
    ]


def test_output_schemas_type_the_result_and_other_tools_return_json() -> None:
    output = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    sdk = sdk_of(tool({"type": "object"}, name="typed", output=output), tool({"type": "object"}, name="plain"))
    assert sdk.sdk.function("s", "typed").stub.splitlines()[1] == "async def typed() -> TypedResult:"
    assert sdk.sdk.function("s", "plain").stub.splitlines()[1] == "async def plain() -> JSON:"


def test_a_custom_target_names_the_tool_for_the_hook() -> None:
    sdk = generate_sdk({"s": [tool({"type": "object"})]}, target=lambda server, t: f"{server}/{t.name}")
    calls: list[str] = []

    async def call(target: str, arguments: dict[str, object], /) -> object:
        calls.append(target)
        return None

    run_now(load_sdk(sdk, call).s.t())
    assert calls == ["s/t"]


def test_an_sdk_that_was_never_loaded_with_a_hook_says_so() -> None:
    namespace: dict[str, Any] = {}
    exec(generate_sdk({"s": [tool({"type": "object"})]}).source, namespace)
    with pytest.raises(RuntimeError, match="not connected to a portal, so it cannot call 's__t'"):
        run_now(namespace["s"].t())


class Address(BaseModel):
    street: str
    city: str = "Paris"


class Person(BaseModel):
    """Someone with friends."""

    name: str
    role: Literal["admin", "user"] = "user"
    address: Address | None = None
    friends: list[Person] = Field(default_factory=list)


class Saved(BaseModel):
    id: int
    tags: dict[str, str]


@pytest.mark.anyio
async def test_a_python_servers_pydantic_schemas_with_defs_and_recursion(tmp_path: Path) -> None:
    server = MCPServer("people")

    @server.tool()
    def save_person(person: Person, dry_run: bool = False, note: str | None = None) -> Saved:
        """Save a person."""
        return Saved(id=1, tags={})

    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    sdk = load(generate_sdk({"people": tools}))
    function = sdk.sdk.function("people", "save_person")
    assert function.stub == snapshot('''\
@staticmethod
async def save_person(
    *,
    person: Person,
    dry_run: bool | Omit = OMIT,
    note: str | None | Omit = OMIT,
) -> SavePersonResult:
    """Save a person.

    Args:
        dry_run: (default: False)
        note: (default: None)
    """
    ...''')
    (tmp_path / "sdk.py").write_text(sdk.sdk.source)
    assert pyright(tmp_path) == {}

    @settings(max_examples=30, deadline=None)
    @given(instance=instances(tools[0].input_schema))
    def round_trip(instance: dict[str, Any]) -> None:
        sdk.recorder.calls.clear()
        run_now(sdk.callable("people", "save_person")(**kwargs_for(function, instance)))
        assert sdk.recorder.calls == [("people__save_person", instance)]

    round_trip()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


HOSTILE = [
    '"""; raise SystemExit("injected") #',
    "'''; raise SystemExit('injected') #",
    'ends with a quote"',
    'ends with quotes""',
    "back\\slash\\",
    "nul \x00 byte, carriage \r return, tab \t, line \u2028 separator, lone \ud800 surrogate",
    "{braces} and %s and {0}",
    "\n\n    indented\n  lines\n",
]


@settings(max_examples=100, deadline=None)
@given(text=st.sampled_from(HOSTILE) | st.text(), key=st.sampled_from(HOSTILE) | st.text())
def test_no_name_description_or_value_can_inject_code(text: str, key: str) -> None:
    schema = {
        "type": "object",
        "description": text,
        "properties": {
            key: {"description": text, "enum": [text, key], "default": text},
            "nested": {"type": "object", "properties": {key: {"const": text, "description": text}}},
        },
        "required": [key],
    }
    hostile = types.Tool(name=text or "t", description=text, input_schema=schema)
    sdk = load(generate_sdk({text or "s": [hostile]}, target=lambda server, t: key))
    [function] = sdk.sdk.functions
    fn = getattr(getattr(sdk.module, function.namespace), function.name)
    for line in text.splitlines():
        assert line.strip().encode("unicode_escape").decode() in fn.__doc__.encode("unicode_escape").decode()
    run_now(fn(**{function.parameters[0].name: text}))
    assert sdk.recorder.calls == [(key, {key: text})]
