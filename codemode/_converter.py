"""JSON Schema → Python types: TypedDicts, aliases and type expressions for one SDK module.

The converter is lenient by design — real servers send schemas in every draft and of every quality —
so a construct it cannot express in Python's type system widens to ``JSON`` instead of failing:

- ``$ref`` (local pointers, ``$defs``, ``definitions``, ``#``, ``$id``/``$anchor``, resolved with
  ``referencing``; remote refs cannot resolve offline and become ``JSON``) → a named TypedDict or alias,
  shared by every tool whose definition is identical; recursion becomes a forward reference, and a cycle
  that passes through no container (``A = B``, ``B = A | None``) becomes ``JSON``.
- ``anyOf``/``oneOf`` → a union (``oneOf``'s exclusivity cannot be typed); the keywords beside them are
  merged into each branch; branches that only add constraints (``required`` lists) are ignored.
- ``allOf`` → the members merged into one schema (properties joined, required lists united, types
  intersected, ``enum``/``const`` values intersected).
- ``type`` lists, ``nullable: true`` → unions with ``None``; ``enum``/``const`` → ``Literal`` (floats and
  objects widen to ``float``/``JSON``); ``integer`` → ``int``, ``number`` → ``float``.
- objects with ``properties`` → a TypedDict (``NotRequired`` for optional keys); without them → ``dict[str,
  T]`` from ``additionalProperties``/``patternProperties`` (also for a property named ``""``, which no
  TypedDict can hold); arrays → ``list[T]`` (tuple forms → a list of the union of their items).
- validation-only keywords (``minimum``, ``pattern``, ``format``, ...) are not types: they go to docstrings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from referencing import Registry, Resource
from referencing._core import Resolver  # the documented class; the package does not re-export it
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from codemode._names import Namer, pascal
from codemode._pytypes import (
    BOOL,
    FLOAT,
    INT,
    JSON,
    NEVER,
    NONE,
    STR,
    Atom,
    DictOf,
    ListOf,
    Lit,
    PyType,
    literal_value,
    union,
)

__all__ = [
    "AliasDef",
    "Converter",
    "Document",
    "Field",
    "Shape",
    "TypedDictDef",
    "as_list",
    "as_schema",
    "is_object_like",
    "merge",
]

Schema = Mapping[str, Any]

_SCALARS: dict[str, PyType] = {"string": STR, "integer": INT, "number": FLOAT, "boolean": BOOL, "null": NONE}
_OBJECT_KEYWORDS = ("properties", "additionalProperties", "patternProperties", "required", "propertyNames")
_TYPE_KEYWORDS = frozenset(
    {"type", "enum", "const", "$ref", "anyOf", "oneOf", "allOf", "items", "prefixItems", *_OBJECT_KEYWORDS}
)
_MAX_INLINE = 32


def as_schema(value: object) -> Schema | None:
    """``value`` if it is a schema object (not a boolean schema), else None."""
    return cast(Schema, value) if isinstance(value, Mapping) else None


def as_list(value: object) -> list[object]:
    """``value`` if it is a JSON array, else an empty list."""
    return cast(list[object], value) if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class Field:
    """One key of an object: a TypedDict field or a function parameter."""

    key: str
    type: PyType
    required: bool
    schema: object


@dataclass(slots=True)
class TypedDictDef:
    """A generated TypedDict."""

    name: str
    fields: list[Field]
    description: str | None


@dataclass(slots=True)
class AliasDef:
    """A generated type alias (a named ``$ref`` target that is not a plain object)."""

    name: str
    type: PyType
    description: str | None


@dataclass(frozen=True, slots=True)
class Shape:
    """The keys of an object schema: named fields, and the type of the others where the schema types them."""

    fields: list[Field]
    extra: PyType | None
    """The type of keys beyond ``fields`` when ``additionalProperties``/``patternProperties`` say, else None."""


@dataclass(frozen=True, slots=True)
class Document:
    """One schema document (a tool's input or output schema) that ``$ref`` pointers resolve in."""

    resolver: Resolver[Any]
    key: str
    """What makes identical ``$ref`` targets of two documents the same type: their definition sections."""

    @classmethod
    def of(cls, schema: object) -> Document:
        """The document rooted at ``schema``; its dialect comes from ``$schema``, else draft 2020-12."""
        resource: Resource[Any] = Resource.from_contents(schema, default_specification=DRAFT202012)
        uri = "urn:dockyard:schema"
        resolver = Registry[Any]().with_resource(uri, resource).resolver(base_uri=uri)
        root = as_schema(schema) or {}
        return cls(resolver, _canonical({k: v for k, v in root.items() if k in ("$defs", "definitions")}))


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def is_object_like(schema: object) -> bool:
    """Whether ``schema`` speaks of object keys (so it can stand for keyword parameters)."""
    found = as_schema(schema)
    return found is not None and (found.get("type") == "object" or any(k in found for k in _OBJECT_KEYWORDS))


def _has_type_keywords(schema: object) -> bool:
    found = as_schema(schema)
    return found is not None and any(key in _TYPE_KEYWORDS for key in found)


def _declared_types(schema: Schema) -> list[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return list(dict.fromkeys(t for t in as_list(schema["type"]) if isinstance(t, str)))
    if is_object_like(schema):
        return ["object"]
    if "items" in schema or "prefixItems" in schema:
        return ["array"]
    return None


def _matches_type(value: object, types: Sequence[str] | None) -> bool:
    if types is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": number and float(cast(float, value)).is_integer(),
        "number": number,
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return any(checks.get(t, False) for t in types)


def _enum_type(values: Sequence[object], types: Sequence[str] | None) -> PyType:
    members: list[PyType] = []
    for value in values:
        if not _matches_type(value, types):
            continue
        literal = literal_value(value)
        if value is None:
            members.append(NONE)
        elif literal is not None:
            members.append(Lit((literal,)))
        elif isinstance(value, float):
            members.append(FLOAT)
        else:
            members.append(ListOf(JSON) if isinstance(value, list) else DictOf(JSON))
    return union(members)


def _type_set(value: object) -> set[str]:
    return {value} if isinstance(value, str) else {t for t in as_list(value) if isinstance(t, str)}


def _intersect_types(a: object, b: object) -> list[str]:
    left, right = _type_set(a), _type_set(b)
    both = left & right
    if ("integer" in left and "number" in right) or ("number" in left and "integer" in right):
        both.add("integer")
    return sorted(both)


def _merge_properties(mine: object, theirs: object) -> dict[str, object]:
    props: dict[str, object] = dict(as_schema(mine) or {})
    for name, sub in (as_schema(theirs) or {}).items():
        props[name] = {"allOf": [props[name], sub]} if name in props else sub
    return props


def merge(a: Schema, b: Schema) -> dict[str, Any]:
    """One schema that asks what both ``a`` and ``b`` ask, as far as types go (for ``allOf`` and branches)."""
    out: dict[str, Any] = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
            continue
        mine = out[key]
        if key == "properties":
            out[key] = _merge_properties(mine, value)
        elif key in ("required", "allOf"):
            out[key] = (
                list(dict.fromkeys([*as_list(mine), *as_list(value)]))
                if key == "required"
                else [
                    *as_list(mine),
                    *as_list(value),
                ]
            )
        elif key == "type":
            out[key] = _intersect_types(mine, value)
        elif key in ("additionalProperties", "items"):
            out[key] = False if mine is False or value is False else {"allOf": [mine, value]}
        # Anything else (a second anyOf, descriptions, constraints): the first one stays.
    mine_values, their_values = _allowed_values(a), _allowed_values(b)
    if mine_values is not None and their_values is not None:
        # ``const`` is a one-value ``enum``: both sides' values must hold (``enum: ['']`` and ``const: null``: none).
        allowed = {_canonical(v) for v in their_values}
        out.pop("const", None)
        out["enum"] = [v for v in mine_values if _canonical(v) in allowed]
    return out


def _allowed_values(schema: Schema) -> list[object] | None:
    if "const" in schema:
        return [schema["const"]]
    return as_list(schema["enum"]) if isinstance(schema.get("enum"), list) else None


def _tag(schema: Schema) -> object:
    enum = as_list(schema.get("enum"))
    return schema.get("const", enum[0] if len(enum) == 1 else None)


def _variant_hint(branch: object, index: int) -> str:
    found = as_schema(branch)
    if found is not None:
        if isinstance(title := found.get("title"), str) and title:
            return pascal(title)
        for sub in (as_schema(found.get("properties")) or {}).values():
            tag = _tag(as_schema(sub) or {})
            if isinstance(tag, str) and tag:
                return pascal(tag)
    return f"Option{index + 1}"


def _ref_hint(ref: str, fallback: str) -> str:
    last = unquote(ref.rsplit("/", 1)[-1].lstrip("#")).replace("~1", "/").replace("~0", "~")
    return pascal(last, fallback=fallback) if last else fallback


@dataclass
class Converter:
    """Turns the schemas of one SDK into type expressions, collecting the definitions they need."""

    namer: Namer
    definitions: dict[str, TypedDictDef | AliasDef] = field(default_factory=dict[str, "TypedDictDef | AliasDef"])
    _refs: dict[tuple[str, str], str] = field(default_factory=dict[tuple[str, str], str])
    _active: dict[tuple[str, str], int] = field(default_factory=dict[tuple[str, str], int])
    _merging: set[tuple[str, str]] = field(default_factory=set[tuple[str, str]])
    """The ``allOf`` schemas being converted: one met again inside itself came back through a ``$ref``."""

    def convert(self, schema: object, doc: Document, hint: str, *, depth: int = 0, name: str | None = None) -> PyType:
        """The Python type for ``schema``; ``hint`` names any TypedDict it needs (``name`` exactly, if given).

        ``depth`` counts the containers (lists, dicts, TypedDict fields) between here and the nearest
        ``$ref`` being converted, so a reference back to it with no container in between is caught.
        """
        if schema is False:
            return NEVER
        found = as_schema(schema)
        if found is None:
            return JSON
        if found.get("nullable") is True:
            return union([self._convert(found, doc, hint, depth, None), NONE])
        return self._convert(found, doc, hint, depth, name)

    def _convert(self, schema: Schema, doc: Document, hint: str, depth: int, name: str | None) -> PyType:
        if isinstance(ref := schema.get("$ref"), str):
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            if not _has_type_keywords(rest):
                return self._ref(ref, doc, hint, depth)
            schema = {**rest, "allOf": [{"$ref": ref}, *as_list(rest.get("allOf"))]}
        if isinstance(schema.get("allOf"), list):
            return self._all_of(schema, doc, hint, depth, name)
        branches = as_list(schema.get("anyOf", schema.get("oneOf")))
        if branches:
            return self._any_of(schema, branches, doc, hint, depth, name)
        return self._typed(schema, doc, hint, depth, name)

    def _ref(self, ref: str, doc: Document, hint: str, depth: int) -> PyType:
        try:
            resolved = doc.resolver.lookup(ref)
        except Unresolvable:
            return JSON
        key = (_canonical(resolved.contents), doc.key)
        if key in self._active:
            # Back at a definition still being converted: fine inside a container, a cycle otherwise.
            return Atom(self._refs[key], generated=True) if depth > self._active[key] else JSON
        if key in self._refs:
            return Atom(self._refs[key], generated=True)
        name = self.namer.unique(_ref_hint(ref, hint))
        self._refs[key] = name
        self._active[key] = depth
        try:
            target = Document(resolved.resolver, doc.key)
            py_type = self.convert(resolved.contents, target, name, depth=depth, name=name)
        finally:
            del self._active[key]
        if py_type != Atom(name, generated=True):
            description = (as_schema(resolved.contents) or {}).get("description")
            self.definitions[name] = AliasDef(name, py_type, description if isinstance(description, str) else None)
        return Atom(name, generated=True)

    def inline(self, schema: object, doc: Document, *, seen: frozenset[int] = frozenset()) -> Schema | None:
        """``schema`` with ``$ref`` followed and ``allOf`` merged away, or None where that would recurse."""
        if schema is False:
            return {"type": []}
        found = as_schema(schema)
        if found is None:
            return {}
        if id(found) in seen or len(seen) > _MAX_INLINE:
            return None
        seen = seen | {id(found)}
        if isinstance(ref := found.get("$ref"), str):
            target: Schema | None
            try:
                target = self.inline(doc.resolver.lookup(ref).contents, doc, seen=seen)
            except Unresolvable:
                target = {}
            if target is None:
                return None
            found = merge({k: v for k, v in found.items() if k != "$ref"}, target)
        if not isinstance(found.get("allOf"), list):
            return found
        merged: Schema = {k: v for k, v in found.items() if k != "allOf"}
        for member in as_list(found["allOf"]):
            flat = self.inline(member, doc, seen=seen)
            if flat is None:
                return None
            merged = merge(merged, flat)
        return merged

    def _all_of(self, schema: Schema, doc: Document, hint: str, depth: int, name: str | None) -> PyType:
        members = as_list(schema["allOf"])
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        if len(members) == 1 and not _has_type_keywords(rest):
            return self.convert(members[0], doc, hint, depth=depth, name=name)
        key = (_canonical(schema), doc.key)
        merged = None if key in self._merging else self.inline(schema, doc)
        if merged is None:
            # A member refers back to a definition being converted (or being merged, inlined, by an enclosing
            # allOf, which would merge it again and again): the reference alone is the best type.
            refs = [m for m in members if "$ref" in (as_schema(m) or {})]
            return self.convert(refs[0] if refs else rest, doc, hint, depth=depth, name=name)
        self._merging.add(key)
        try:
            return self.convert(merged, doc, hint, depth=depth, name=name)
        finally:
            self._merging.discard(key)

    def _any_of(
        self, schema: Schema, branches: list[object], doc: Document, hint: str, depth: int, name: str | None
    ) -> PyType:
        parent = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if not any(_has_type_keywords(branch) or isinstance(branch, bool) for branch in branches):
            return self._typed(parent, doc, hint, depth, name)  # the branches only constrain (e.g. `required`)
        merge_parent = any(k in _TYPE_KEYWORDS for k in parent)
        typed = [b for b in branches if (as_schema(b) or {}).get("type") != "null"]
        members: list[PyType] = []
        for index, branch in enumerate(branches):
            found = as_schema(branch)
            if found is not None and "$ref" not in found and (merge_parent or not _has_type_keywords(found)):
                branch = merge(parent, found)
            variant = hint if len(typed) == 1 else hint + _variant_hint(branch, index)
            members.append(self.convert(branch, doc, variant, depth=depth, name=name if len(branches) == 1 else None))
        return union(members)

    def _typed(self, schema: Schema, doc: Document, hint: str, depth: int, name: str | None) -> PyType:
        types = _declared_types(schema)
        if "const" in schema:
            return _enum_type([schema["const"]], types)
        if isinstance(schema.get("enum"), list):
            return _enum_type(as_list(schema["enum"]), types)
        if types is None:
            return JSON
        members: list[PyType] = []
        for declared in types:
            if declared == "object":
                members.append(self._object(schema, doc, hint, depth, name if len(types) == 1 else None))
            elif declared == "array":
                members.append(self._array(schema, doc, hint, depth))
            else:
                members.append(_SCALARS.get(declared, JSON))
        return union(members)

    def _array(self, schema: Schema, doc: Document, hint: str, depth: int) -> PyType:
        items: object = schema.get("items")
        prefix = as_list(schema["prefixItems"] if "prefixItems" in schema else items)
        if prefix or isinstance(items, list):
            rest = schema.get("items", True) if "prefixItems" in schema else schema.get("additionalItems", True)
            parts = [*prefix, *([] if rest is False else [rest])]
            return ListOf(union(self.convert(p, doc, f"{hint}Item", depth=depth + 1) for p in parts))
        if items is None:
            return ListOf(JSON)
        return ListOf(self.convert(items, doc, f"{hint}Item", depth=depth + 1))

    def _object(self, schema: Schema, doc: Document, hint: str, depth: int, name: str | None) -> PyType:
        shape = self.shape(schema, doc, hint, depth=depth + 1)
        if any(f.required and f.type == NEVER for f in shape.fields):
            return NEVER
        fields = [f for f in shape.fields if f.type != NEVER]
        if any(not f.key for f in fields):
            # Type checkers reject an empty TypedDict key; such an object can only be a plain dict.
            return DictOf(union([*(f.type for f in fields), shape.extra or JSON]))
        if not fields:
            closed = schema.get("additionalProperties") is False and "patternProperties" not in schema
            return DictOf(NEVER if closed else shape.extra or JSON)
        explicit = name is not None
        name = name or self.namer.unique(hint)
        description = schema.get("description") if explicit else None
        self.definitions[name] = TypedDictDef(name, fields, description if isinstance(description, str) else None)
        return Atom(name, generated=True)

    def shape(self, schema: Schema, doc: Document, hint: str, *, depth: int = 0) -> Shape:
        """The keys an object schema names, and the type of the others if it declares one."""
        properties = as_schema(schema.get("properties")) or {}
        required = [r for r in as_list(schema.get("required")) if isinstance(r, str)]
        extra = self._extra(schema, doc, hint, depth)
        fields = [
            Field(key, self.convert(sub, doc, hint + pascal(key), depth=depth), key in required, sub)
            for key, sub in properties.items()
        ]
        closed = schema.get("additionalProperties") is False and "patternProperties" not in schema
        missing = [key for key in dict.fromkeys(required) if key not in properties]
        fields.extend(Field(key, NEVER if closed else extra or JSON, True, True) for key in missing)
        return Shape(fields, extra)

    def _extra(self, schema: Schema, doc: Document, hint: str, depth: int) -> PyType | None:
        additional = schema.get("additionalProperties")
        parts: list[object] = list((as_schema(schema.get("patternProperties")) or {}).values())
        if additional is not None and additional is not False:
            parts.append(additional)
        if not parts:
            return None
        return union(self.convert(part, doc, f"{hint}Value", depth=depth) for part in parts)
