"""Generate a typed Python SDK from MCP tool definitions, and load it with the hook its calls go through.

One namespace class per server, one ``async`` static method per tool with keyword-only parameters::

    result = await filesystem.read_text_file(path="notes.md", head=5)

A parameter the schema does not require defaults to ``OMIT`` and is then not sent at all; ``None`` is
sent as ``null`` (and only type-checks where the schema allows null). Wire names that are not Python
identifiers are mapped (``from`` → ``from_``, ``get-sum`` → ``get_sum``) and sent under their original
keys. A server named like a standard-library module gets a trailing underscore (``json`` → ``json_``),
so a script can use both the module and the server. Every call hands ``(target, arguments)`` to one
hook, which the SDK runtime wires to the portal's choke point.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import mcp_types as types

from codemode._converter import Converter, Document, Field, Shape, as_list, as_schema, merge
from codemode._names import BUILTIN_NAMES, MODULE_NAMES, Namer, identifier, pascal
from codemode._pytypes import JSON, NEVER, Atom, PyType, Union, admits, names_in, python_literal, union
from codemode._render import (
    HEADER_NAMES,
    MethodPlan,
    NamespacePlan,
    ParamPlan,
    definition_sources,
    hints,
    method_source,
    module_source,
    referenced,
)

__all__ = ["GeneratedSdk", "SdkFunction", "SdkParameter", "ToolCaller", "default_target", "generate_sdk", "load_sdk"]

_OMIT = Atom("Omit")
_CLASS_SCOPE = frozenset({"staticmethod", "str", "int", "float", "bool", "list", "dict"})
"""Names a method must not take: its class body uses them in decorators and annotations."""
_BODY_NAMES = frozenset({"_call", "_wire", "cast"})
"""Names a parameter must not take: the function body uses them."""


class ToolCaller(Protocol):
    """The hook every generated function calls: ``await call(target, arguments)``.

    ``target`` names the tool for the portal (see :func:`default_target`); ``arguments`` holds the wire
    arguments — original keys, omitted parameters absent, ``None`` as null. The hook returns the tool's
    result as JSON: its structured content when the tool declares an output schema.
    """

    def __call__(self, target: str, arguments: dict[str, object], /) -> Awaitable[object]: ...


@dataclass(frozen=True, slots=True)
class SdkParameter:
    """A keyword parameter of a generated function and the argument it becomes."""

    name: str
    """The Python name."""
    wire_name: str
    """The key the argument is sent under."""
    required: bool
    """Whether a caller must pass it (a required key with a usable schema default is not)."""


@dataclass(frozen=True, slots=True)
class SdkFunction:
    """One generated function: ``await <namespace>.<name>(**kwargs)`` calls ``tool`` of ``server``."""

    server: str
    namespace: str
    name: str
    target: str
    """What the function passes to the call hook."""
    tool: types.Tool
    parameters: tuple[SdkParameter, ...]
    extra: str | None
    """The name of the ``**`` parameter when the tool takes arguments beyond its named ones, else None."""
    stub: str
    """The function's signature and docstring with ``...`` for a body, as a model reads it."""
    types: tuple[str, ...] = ()
    """The generated TypedDicts and aliases its signature uses, directly or through each other (see
    :attr:`GeneratedSdk.definitions`)."""


@dataclass(frozen=True, slots=True)
class GeneratedSdk:
    """A generated SDK module: its source and what it contains."""

    source: str
    functions: tuple[SdkFunction, ...]
    definitions: Mapping[str, str] = dataclasses.field(default_factory=dict[str, str], hash=False)
    """The source of each generated TypedDict and alias, by name, in module order."""

    def function(self, server: str, tool: str) -> SdkFunction:
        """The function generated for ``tool`` of ``server``."""
        for function in self.functions:
            if function.server == server and function.tool.name == tool:
                return function
        raise KeyError(f"no function for tool {tool!r} of server {server!r} in this SDK")


def default_target(server: str, tool: types.Tool) -> str:
    """The portal's default exposed name of a tool: ``SERVER__name``."""
    return f"{server}__{tool.name}"


@dataclass(frozen=True, slots=True)
class _Converted:
    server: str
    tool: types.Tool
    shape: Shape
    returns: PyType


def _combine(shapes: Sequence[Shape]) -> Shape:
    """The parameters for a root ``anyOf``: every key of any branch, required only where all require it."""
    by_key: dict[str, list[Field]] = {}
    for shape in shapes:
        for field in shape.fields:
            by_key.setdefault(field.key, []).append(field)
    fields = [
        Field(
            key,
            union(f.type for f in found),
            len(found) == len(shapes) and all(f.required for f in found),
            found[0].schema,
        )
        for key, found in by_key.items()
    ]
    extras = [shape.extra for shape in shapes if shape.extra is not None]
    return Shape(fields, union(extras) if extras else None)


def _parameters(converter: Converter, schema: object, hint: str) -> Shape:
    doc = Document.of(schema)
    root = converter.inline(schema, doc) or as_schema(schema) or {}
    parent = {k: v for k, v in root.items() if k not in ("anyOf", "oneOf")}
    branches = [as_schema(b) for b in as_list(root.get("anyOf", root.get("oneOf")))]
    objects = [b for b in branches if b is not None and b.get("type", "object") == "object"]
    if not objects:
        return converter.shape(parent, doc, hint)
    return _combine([converter.shape(merge(parent, converter.inline(b, doc) or b), doc, hint) for b in objects])


def _optional(py_type: PyType) -> PyType:
    return Union((*(py_type.members if isinstance(py_type, Union) else (py_type,)), _OMIT))


def _param(field: Field, name: str) -> ParamPlan:
    if not field.required:
        return ParamPlan(name, field.key, _optional(field.type), False, "OMIT", field.schema)
    schema = as_schema(field.schema) or {}
    default: object = schema.get("default")
    if "default" in schema and not isinstance(default, list | dict) and admits(field.type, default):
        # Required with a default (as zod writes `.default()`): sending the default is what the server
        # would do, and it keeps the argument optional for the caller.
        return ParamPlan(name, field.key, field.type, False, python_literal(default), field.schema)
    return ParamPlan(name, field.key, field.type, True, None, field.schema)


def _method(converted: _Converted, name: str, target: str) -> MethodPlan:
    namer = Namer(_BODY_NAMES | set(names_in(converted.returns)))
    params = [
        _param(field, namer.unique(identifier(field.key), identifier(field.key) + "_"))
        for field in converted.shape.fields
        if field.type != NEVER or field.required
    ]
    extra = converted.shape.extra
    annotations = converted.tool.annotations
    return MethodPlan(
        name=name,
        target=target,
        description=converted.tool.description or "",
        hints=hints(annotations.model_dump(by_alias=True, exclude_none=True) if annotations else {}),
        params=params,
        extra=None if extra is None else (namer.unique("extra", "extra_arguments"), extra),
        returns=converted.returns,
    )


def generate_sdk(
    servers: Mapping[str, Sequence[types.Tool]],
    *,
    target: Callable[[str, types.Tool], str] = default_target,
) -> GeneratedSdk:
    """Generate the SDK module for ``servers`` (server name → its tools, in the order to list them).

    Args:
        servers: The tools of each server, as the server lists them (upstream names).
        target: What a function passes to the call hook for a tool; by default ``SERVER__name``.

    Returns:
        The module's source and, for each tool, the function that calls it.
    """
    namer = Namer(BUILTIN_NAMES | HEADER_NAMES)
    namespaces = {server: _namespace(namer, server) for server in servers}
    converter = Converter(namer)
    clashes = Counter(pascal(tool.name) for tools in servers.values() for tool in tools)
    converted: list[_Converted] = []
    for server, tools in servers.items():
        for tool in tools:
            hint = pascal(tool.name)
            if clashes[hint] > 1:
                hint = pascal(server) + hint
            shape = _parameters(converter, tool.input_schema, hint)
            output = tool.output_schema
            returns = JSON if output is None else converter.convert(output, Document.of(output), f"{hint}Result")
            converted.append(_Converted(server, tool, shape, returns))

    plans: list[NamespacePlan] = []
    functions: list[SdkFunction] = []
    definitions = list(converter.definitions.values())
    for server, namespace in namespaces.items():
        taken = Namer(_CLASS_SCOPE | (namer.taken - BUILTIN_NAMES))
        methods: list[MethodPlan] = []
        for item in (c for c in converted if c.server == server):
            name = taken.unique(identifier(item.tool.name), identifier(item.tool.name) + "_")
            methods.append(_method(item, name, target(server, item.tool)))
            used = referenced(methods[-1], definitions)
            functions.append(_function(server, namespace, item.tool, methods[-1], used))
        plans.append(NamespacePlan(namespace, server, methods))
    return GeneratedSdk(module_source(definitions, plans), tuple(functions), definition_sources(definitions))


def _namespace(namer: Namer, server: str) -> str:
    """The namespace of ``server``: its name as an identifier, with ``_`` if it names a standard module."""
    name = identifier(server)
    if name in MODULE_NAMES:
        return namer.unique(name + "_", name + "__")
    return namer.unique(name, name + "_")


def _function(server: str, namespace: str, tool: types.Tool, method: MethodPlan, used: tuple[str, ...]) -> SdkFunction:
    parameters = tuple(SdkParameter(p.name, p.wire_name, p.required) for p in method.params)
    extra = method.extra[0] if method.extra else None
    stub = method_source(method, indent="", stub=True)
    return SdkFunction(server, namespace, method.name, method.target, tool, parameters, extra, stub, used)


def load_sdk(sdk: GeneratedSdk | str, call: ToolCaller, *, name: str = "dockyard_sdk") -> ModuleType:
    """Run a generated SDK as a fresh module whose functions send their calls to ``call``.

    The source comes only from :func:`generate_sdk`, which admits upstream text solely as escaped
    literals, docstrings and sanitised identifiers, so running it runs no upstream-controlled code.
    """
    source = sdk.source if isinstance(sdk, GeneratedSdk) else sdk
    module = ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    module.__dict__["_call"] = call
    return module
