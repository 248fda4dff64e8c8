"""Hypothesis-generated JSON Schemas: the SDK always compiles, type-checks, and sends instances unchanged.

The schemas mix objects with awkward keys (keywords, hyphens, names the module itself uses), arrays,
enums, consts, ``anyOf``/``oneOf``/``allOf``, type lists, ``nullable``, ``additionalProperties`` in all
three forms, and local refs to recursive definitions, in draft 2020-12 (``$defs``) and draft-07
(``definitions``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import mcp_types as types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codemode import generate_sdk
from tests.codemode.conftest import load
from tests.codemode.jsonvalues import (
    AWKWARD_NAMES,
    DEFINITIONS,
    conforms,
    instances,
    schemas,
    structural,
    validator,
    values_of,
)
from tests.codemode.sdkcheck import kwargs_for, pyright, run_now


def _tool(schema: dict[str, Any], name: str) -> types.Tool:
    return types.Tool(name=name or "t", description="A generated tool.", input_schema=schema)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(schema=schemas(), name=AWKWARD_NAMES, data=st.data())
def test_valid_instances_are_sent_exactly_and_conform_to_the_annotations(
    schema: dict[str, Any], name: str, data: st.DataObject
) -> None:
    sdk = load(generate_sdk({"server": [_tool(schema, name)]}))
    [function] = sdk.sdk.functions
    instance = data.draw(instances(schema))
    kwargs = kwargs_for(function, instance)
    fn = sdk.callable("server", function.tool.name)
    parameters = inspect.signature(fn).parameters
    for key, value in kwargs.items():
        parameter = parameters.get(key) or next(p for p in parameters.values() if p.kind is p.VAR_KEYWORD)
        assert conforms(value, parameter.annotation, sdk.namespace), (key, value, parameter.annotation)
    run_now(fn(**kwargs))
    assert sdk.recorder.calls == [(function.target, instance)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), data=st.data())
def test_whatever_the_annotations_admit_is_valid_for_the_schema_structure(
    schema: dict[str, Any], data: st.DataObject
) -> None:
    sdk = load(generate_sdk({"server": [_tool(schema, "tool")]}))
    fn = sdk.callable("server", "tool")
    kwargs: dict[str, Any] = {}
    wire_names = {p.wire_name for p in sdk.sdk.functions[0].parameters}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            keys = st.text(max_size=4).map(lambda k: f"extra-{k}").filter(lambda k: k not in wire_names)
            values = values_of(parameter.annotation, sdk.namespace)
            kwargs.update(data.draw(st.dictionaries(keys, values, max_size=2)))
        elif parameter.default is inspect.Parameter.empty or data.draw(st.booleans()):
            kwargs[parameter.name] = data.draw(values_of(parameter.annotation, sdk.namespace))
    run_now(fn(**kwargs))
    [(_, arguments)] = sdk.recorder.calls
    validator(structural(schema)).validate(arguments)


def _nested_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"anyOf": [schema, {"type": "null"}]}, {"type": "null"}]}


def test_an_all_of_of_recursive_refs_is_merged_without_recursing_forever() -> None:
    # Found by Hypothesis: merging `Node` with itself merged its `children` items (`Node` and `Node`) again, forever.
    member = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Node"}}, "required": []}
    schema = {
        "type": "object",
        "properties": {"a": _nested_nullable({"allOf": [member, member]})},
        "required": [],
        "$defs": DEFINITIONS,
    }
    generated = generate_sdk({"server": [_tool(schema, "tool")]})
    assert "children: NotRequired[list[Node]]" in generated.source
    sdk = load(generated)
    arguments = {"a": {"a": {"value": "x", "children": [{"value": "y", "next": None}], "next": {"value": "z"}}}}
    run_now(sdk.callable("server", "tool")(**arguments))
    assert sdk.recorder.calls == [(sdk.sdk.functions[0].target, arguments)]
    validator(structural(schema)).validate(arguments)


def test_an_all_of_whose_enum_and_const_share_no_value_admits_no_value() -> None:
    # Found by Hypothesis: `enum: [""]` merged with `const: null` was typed `None`, which neither allows.
    schema = {
        "type": "object",
        "properties": {
            "a": _nested_nullable(
                {
                    "allOf": [
                        {"type": "object", "properties": {"a": {"enum": [""]}}, "required": []},
                        {"type": "object", "properties": {"a": {"const": None}}, "required": ["a"]},
                    ]
                }
            )
        },
        "required": ["a"],
    }
    sdk = load(generate_sdk({"server": [_tool(schema, "tool")]}))
    [parameter] = inspect.signature(sdk.callable("server", "tool")).parameters.values()
    assert parameter.annotation == "None"  # the object cannot exist: only null is left
    validator(structural(schema)).validate({"a": None})


def test_generated_modules_type_check_in_strict_mode(tmp_path: Path) -> None:
    sources: list[str] = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(schema=schemas(), name=AWKWARD_NAMES)
    def collect(schema: dict[str, Any], name: str) -> None:
        source = generate_sdk({"server": [_tool(schema, name)], "list": [_tool(schema, "str")]}).source
        compile(source, "<generated>", "exec")
        sources.append(source)

    collect()
    for index, source in enumerate(sources):
        (tmp_path / f"sdk_{index}.py").write_text(source)
    assert pyright(tmp_path) == {}
