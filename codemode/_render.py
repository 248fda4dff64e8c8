"""Python source for a planned SDK: the header, the type definitions and one namespace class per server.

Upstream text reaches the source in three ways only — identifiers (already reduced to ``[A-Za-z0-9_]`` by
:mod:`codemode._names`), literals (written with :func:`repr`) and docstrings (escaped by
:func:`docstring`) — so no schema can inject code into the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from codemode._converter import AliasDef, TypedDictDef, as_schema
from codemode._names import identifier
from codemode._pytypes import JSON, PyType, names_in, python_literal, render

__all__ = [
    "HEADER_NAMES",
    "MethodPlan",
    "NamespacePlan",
    "ParamPlan",
    "definition_sources",
    "docstring",
    "method_source",
    "module_source",
    "referenced",
]

HEADER_NAMES = frozenset(
    {"annotations", "Awaitable", "Callable", "Final", "Literal", "Never", "NotRequired", "TypeAlias", "TypedDict"}
    | {"cast", "JSON", "Omit", "OMIT", "_call", "_wire", "_unbound"}
)
"""Names the module header defines or imports; nothing generated may take them."""

_NOTES = (
    ("default", "default"),
    ("format", "format"),
    ("minimum", "minimum"),
    ("exclusiveMinimum", "greater than"),
    ("maximum", "maximum"),
    ("exclusiveMaximum", "less than"),
    ("multipleOf", "multiple of"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("pattern", "pattern"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("uniqueItems", "unique items"),
    ("minProperties", "min properties"),
    ("maxProperties", "max properties"),
)
_HINTS = (("readOnlyHint", "read-only"), ("destructiveHint", "destructive"), ("idempotentHint", "idempotent"))


@dataclass(frozen=True, slots=True)
class ParamPlan:
    """One keyword parameter of a generated function."""

    name: str
    wire_name: str
    type: PyType
    required: bool
    """The caller must pass it (no default at all)."""
    default: str | None
    """Python source of the default (``OMIT`` for an optional parameter), None if required."""
    schema: object


@dataclass(frozen=True, slots=True)
class MethodPlan:
    """One generated function: a tool of a server."""

    name: str
    target: str
    description: str
    hints: Sequence[str]
    params: Sequence[ParamPlan]
    extra: tuple[str, PyType] | None
    returns: PyType


@dataclass(frozen=True, slots=True)
class NamespacePlan:
    """The class that holds one server's functions."""

    name: str
    server: str
    methods: Sequence[MethodPlan]


def _escape(text: str) -> str:
    """``text`` as the inside of a triple-quoted literal whose value is ``text`` again."""
    text = text.replace("\\", "\\\\")
    text = "".join(ch if ch == "\n" or ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    text = re.sub(r'"{3,}', lambda m: '\\"' * len(m.group()), text)
    return re.sub(r'"+$', lambda m: '\\"' * len(m.group()), text)


def docstring(text: str, indent: str) -> str:
    """A docstring statement for ``text`` at ``indent``; continuation lines are indented to match."""
    lines = [line.rstrip() for line in _escape(text.strip()).split("\n")]
    body = ("\n" + indent).join(lines).replace(indent + "\n", "\n")
    closing = f"\n{indent}" if len(lines) > 1 else ""
    return f'{indent}"""{body}{closing}"""'


def notes(schema: object) -> str:
    """The validation keywords of ``schema`` that types cannot say, as ``(default: 3; minimum: 1)``."""
    found = as_schema(schema) or {}
    parts: list[str] = []
    for keyword, label in _NOTES:
        if keyword in found:
            try:
                parts.append(f"{label}: {python_literal(found[keyword])}")
            except TypeError:  # not JSON (a Python object slipped in): say nothing rather than fail
                continue
    return f"({'; '.join(parts)})" if parts else ""


def describe(schema: object) -> str:
    """What a field or parameter's docstring line says: its description and its notes."""
    found = as_schema(schema) or {}
    description = found.get("description")
    text = " ".join(part for part in (description if isinstance(description, str) else "", notes(found)) if part)
    return text.strip()


def hints(annotations: dict[str, object]) -> list[str]:
    """Readable markers for a tool's declared annotations (``readOnlyHint`` → ``read-only``)."""
    found = [label for key, label in _HINTS if annotations.get(key) is True]
    if "read-only" in found and "destructive" in found:
        found.remove("destructive")  # destructiveHint only means something when readOnlyHint is false
    if annotations.get("openWorldHint") is True:
        found.append("open-world")
    return found


def _method_doc(method: MethodPlan, indent: str) -> str:
    sections = [method.description.strip() or f"Call the tool {method.target!r}."]
    if method.hints:
        sections.append(f"Hints: {', '.join(method.hints)}.")
    args: list[str] = []
    for param in method.params:
        said = describe(param.schema)
        if param.wire_name != param.name:
            said = f"(sent as {python_literal(param.wire_name)}) {said}".strip()
        if said:
            args.append(f"    {param.name}: " + said.replace("\n", "\n        "))
    if method.extra is not None:
        args.append(f"    **{method.extra[0]}: Further arguments, sent under their own names.")
    if args:
        sections.append("Args:\n" + "\n".join(args))
    return docstring("\n\n".join(sections), indent)


def _signature(method: MethodPlan, indent: str) -> str:
    params = [
        f"{p.name}: {render(p.type)}" if p.default is None else f"{p.name}: {render(p.type)} = {p.default}"
        for p in method.params
    ]
    if params:
        params.insert(0, "*")
    if method.extra is not None:
        params.append(f"**{method.extra[0]}: {render(method.extra[1])}")
    head = f"{indent}async def {method.name}("
    tail = f") -> {render(method.returns)}:"
    one_line = head + ", ".join(params) + tail
    if len(one_line) <= 120:
        return one_line
    inner = indent + "    "
    return head + "\n" + "".join(f"{inner}{param},\n" for param in params) + indent + tail


def _call_source(target: str, pairs: Sequence[str], base: str) -> str:
    """``await _call(target, _wire({...}))``, spread over lines below ``base`` when it is long."""
    arguments = "_wire({" + ", ".join(pairs) + "})" if pairs else "{}"
    one_line = f"await _call({target}, {arguments})"
    if len(base) + len(one_line) + 12 <= 120:
        return one_line
    inner = base + "    "
    if len(inner) + len(arguments) > 118:
        arguments = "_wire({\n" + "".join(f"{inner}    {pair},\n" for pair in pairs) + inner + "})"
    return f"await _call(\n{inner}{target},\n{inner}{arguments},\n{base})"


def _body(method: MethodPlan, indent: str) -> str:
    pairs = [f"{python_literal(p.wire_name)}: {p.name}" for p in method.params]
    if method.extra is not None:
        pairs.append(f"**{method.extra[0]}")
    target = python_literal(method.target)
    if method.returns == JSON:
        return f"{indent}return {_call_source(target, pairs, indent)}"
    returns = python_literal(render(method.returns))
    line = f"{indent}return cast({returns}, {_call_source(target, pairs, indent)})"
    if len(line) <= 120 and "\n" not in line:
        return line
    inner = indent + "    "
    return f"{indent}return cast(\n{inner}{returns},\n{inner}{_call_source(target, pairs, inner)},\n{indent})"


def method_source(method: MethodPlan, *, indent: str = "    ", stub: bool = False) -> str:
    """The source of one generated function; with ``stub``, its body is ``...`` (what a model reads)."""
    inner = indent + "    "
    body = f"{inner}..." if stub else _body(method, inner)
    return "\n".join([f"{indent}@staticmethod", _signature(method, indent), _method_doc(method, inner), body])


def _typed_dict_source(definition: TypedDictDef, taken: frozenset[str]) -> str:
    def annotation(field_type: PyType, required: bool) -> str:
        return render(field_type) if required else f"NotRequired[{render(field_type)}]"

    # A field named like a type the annotations use would shadow it inside the class body.
    keys = [field.key for field in definition.fields]
    if all(identifier(key) == key and key not in taken for key in keys):
        lines = [f"class {definition.name}(TypedDict):"]
        if definition.description:
            lines += [docstring(definition.description, "    "), ""]
        for field in definition.fields:
            lines.append(f"    {field.key}: {annotation(field.type, field.required)}")
            if said := describe(field.schema):
                lines.append(docstring(said, "    "))
        return "\n".join(lines)
    # Keys that are not identifiers (or are keywords) need the functional syntax; types are quoted there
    # because its values are evaluated at once and may name a TypedDict defined further down.
    items = "".join(
        f"        {python_literal(f.key)}: {python_literal(annotation(f.type, f.required))},\n"
        for f in definition.fields
    )
    source = f'{definition.name} = TypedDict(\n    "{definition.name}",\n    {{\n{items}    }},\n)'
    return f"{source}\n{docstring(definition.description, '')}" if definition.description else source


def _alias_source(definition: AliasDef, defined: set[str]) -> str:
    expression = render(definition.type)
    pending = {name for name in names_in(definition.type) if name not in defined and name not in _BUILTIN_TYPES}
    value = python_literal(expression) if pending else expression  # a forward reference must be a string
    source = f"{definition.name}: TypeAlias = {value}"
    return f"{source}\n{docstring(definition.description, '')}" if definition.description else source


_BUILTIN_TYPES = frozenset({"str", "int", "float", "bool", "None", "Literal", "Never"})

_HEADER = '''"""Typed SDK for the tools of the MCP servers {servers}.

Generated by Dockyard Code Mode from the tools' JSON Schemas; do not edit. Call a function with keyword
arguments: they are sent as the tool's arguments under their original names. An argument left at OMIT is
not sent at all; None is sent as null. Each server is a namespace named after it; a server named like a
standard-library module or a builtin gets a trailing underscore (server json → json_), so a script can
import both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import {typing_names}

JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"
"""Any JSON value."""


class Omit:
    """The type of OMIT, the default of optional parameters: the argument is not sent."""

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = Omit()


async def _unbound(tool: str, arguments: dict[str, object]) -> JSON:
    raise RuntimeError(f"this SDK is not connected to a portal, so it cannot call {{tool!r}}")


_call: Callable[[str, dict[str, object]], Awaitable[JSON]] = _unbound
'''

_WIRE = """

def _wire(arguments: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in arguments.items() if value is not OMIT}
"""


def _used_names(definitions: Iterable[TypedDictDef | AliasDef], namespaces: Sequence[NamespacePlan]) -> set[str]:
    used: set[str] = set()
    for definition in definitions:
        if isinstance(definition, AliasDef):
            used.update(names_in(definition.type))
        else:
            used.update(name for field in definition.fields for name in names_in(field.type))
            if not all(field.required for field in definition.fields):
                used.add("NotRequired")
    for namespace in namespaces:
        for method in namespace.methods:
            used.update(name for param in method.params for name in names_in(param.type))
            used.update(names_in(method.returns))
            if method.returns != JSON:
                used.add("cast")
            if method.extra is not None:
                used.update(names_in(method.extra[1]))
    return used


def definition_sources(definitions: Sequence[TypedDictDef | AliasDef]) -> dict[str, str]:
    """The source of each TypedDict and alias, by name, in the order the module defines them."""
    sources: dict[str, str] = {}
    defined: set[str] = {"Omit"}  # not JSON: at run time it is a string, so `JSON | X` must stay quoted
    taken = HEADER_NAMES | _BUILTIN_TYPES | {"list", "dict"} | {d.name for d in definitions}
    for definition in definitions:
        if isinstance(definition, AliasDef):
            sources[definition.name] = _alias_source(definition, defined)
        else:
            sources[definition.name] = _typed_dict_source(definition, taken)
        defined.add(definition.name)
    return sources


def referenced(method: MethodPlan, definitions: Sequence[TypedDictDef | AliasDef]) -> tuple[str, ...]:
    """The generated types ``method``'s signature uses, directly or through other types, in module order."""
    by_name = {d.name: d for d in definitions}

    def names(py_types: Iterable[PyType]) -> set[str]:
        return {name for py_type in py_types for name in names_in(py_type) if name in by_name}

    found = names([*(p.type for p in method.params), method.returns, *([method.extra[1]] if method.extra else [])])
    pending = list(found)
    while pending:
        definition = by_name[pending.pop()]
        inner = [definition.type] if isinstance(definition, AliasDef) else [f.type for f in definition.fields]
        for name in names(inner) - found:
            found.add(name)
            pending.append(name)
    return tuple(d.name for d in definitions if d.name in found)


def module_source(definitions: Sequence[TypedDictDef | AliasDef], namespaces: Sequence[NamespacePlan]) -> str:
    """The whole SDK module."""
    used = _used_names(definitions, namespaces)
    typing_names = ["Final", "TypeAlias"]
    typing_names += [name for name in ("Literal", "Never", "NotRequired", "cast") if name in used]
    if any(isinstance(d, TypedDictDef) for d in definitions):
        typing_names.append("TypedDict")
    servers = ", ".join(repr(namespace.server) for namespace in namespaces) or "(none)"
    header = _HEADER.format(servers=_escape(servers), typing_names=", ".join(sorted(typing_names, key=str.lower)))
    if any(method.params or method.extra for namespace in namespaces for method in namespace.methods):
        header += _WIRE
    blocks = [header.rstrip("\n"), *definition_sources(definitions).values()]
    for namespace in namespaces:
        said = f"Tools of the MCP server {namespace.server!r}."
        if namespace.name != identifier(namespace.server):
            said += f" Named {namespace.name}: {identifier(namespace.server)} is a module or builtin of Python."
        lines = [f"class {namespace.name}:", docstring(said, "    ")]
        lines += ["\n" + method_source(method) for method in namespace.methods]
        blocks.append("\n".join(lines))
    return "\n\n\n".join(blocks) + "\n"
