"""Test helpers that judge the generated SDK from outside: instances of schemas, values of stub types.

Written independently of ``codemode``'s converter so that the tests check it rather than repeat it:

- :func:`instances` draws valid instances of a JSON Schema (local ``$ref``, combinators, constraints).
- :func:`conforms` says whether a value is a value of a generated annotation (read from the loaded
  module at run time), and :func:`values_of` draws values of such an annotation.
- :func:`structural` strips a schema down to what Python types can say, for the forward direction.
- :func:`schemas` draws JSON Schemas of the kinds real servers send.
"""

from __future__ import annotations

import json
import math
import types as pytypes
import typing
from collections.abc import Callable, Mapping
from typing import Any, ForwardRef

from hypothesis import strategies as st
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

Schema = Mapping[str, Any]
MAX_DEPTH = 3

# -- instances of a schema ------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def validator(schema: Any) -> Any:
    """A validator for ``schema`` in its own dialect (no format checks: those are docs, not types)."""
    return validator_for(schema)(schema)


class _Ctx:
    def __init__(self, root: object) -> None:
        resource = Resource.from_contents(root, default_specification=DRAFT202012)
        self.resolver = Registry().with_resource("urn:t", resource).resolver(base_uri="urn:t")


def instances(schema: object, *, extras: bool = True) -> st.SearchStrategy[Any]:
    """Valid instances of ``schema``; objects with properties get no undeclared keys (see the README).

    With ``extras``, an object whose ``additionalProperties`` is explicitly true or a schema gets extra keys
    named ``extra-...`` (never a declared key or a Python name).
    """
    check = validator(schema)
    return _instances(schema, _Ctx(schema), 0, extras).filter(check.is_valid)


def _instances(schema: object, ctx: _Ctx, depth: int, extras: bool) -> st.SearchStrategy[Any]:
    if schema is True or schema == {}:
        return json_values
    if schema is False or not isinstance(schema, Mapping):
        return st.nothing()
    if "$ref" in schema:
        resolved = ctx.resolver.lookup(schema["$ref"])
        return _instances(resolved.contents, ctx, depth + 1, extras)
    if "allOf" in schema:
        parts = [_instances(part, ctx, depth, extras) for part in schema["allOf"]]
        return st.tuples(*parts).map(lambda found: {k: v for part in found for k, v in part.items()})
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([_instances(b, ctx, depth, extras) for b in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    declared = schema.get("type")
    if declared is None:
        declared = "object" if "properties" in schema else "array" if "items" in schema else None
    if declared is None:
        return json_values
    kinds = declared if isinstance(declared, list) else [declared]
    return st.one_of([_of_type(kind, schema, ctx, depth, extras) for kind in kinds])


def _of_type(kind: str, schema: Schema, ctx: _Ctx, depth: int, extras: bool) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        ints = st.integers(None if low is None else math.ceil(low), None if high is None else math.floor(high))
        if kind == "integer":
            return ints
        return ints | st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=max(schema.get("maxLength", 8), 0))
    if kind == "array":
        items = schema.get("items", True)
        size = schema.get("minItems", 0)
        if depth >= MAX_DEPTH and size == 0:
            return st.just([])  # built lazily no further: recursive item types would never end
        return st.lists(_instances(items, ctx, depth + 1, extras), min_size=size, max_size=max(size, 3))
    if kind == "object":
        return _object(schema, ctx, depth, extras)
    return json_values


def _object(schema: Schema, ctx: _Ctx, depth: int, extras: bool) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = [key for key in schema.get("required", []) if key in properties]
    optional = [key for key in properties if key not in required]
    if depth >= MAX_DEPTH:
        optional = []
    fixed = {key: _instances(properties[key], ctx, depth + 1, extras) for key in required}
    maybe = {key: _instances(properties[key], ctx, depth + 1, extras) for key in optional}
    base = st.fixed_dictionaries(fixed, optional=maybe)
    additional = schema.get("additionalProperties")
    if not extras or additional in (None, False) or (properties and depth > 0):
        return base
    extra = st.dictionaries(
        st.text(max_size=4).map(lambda k: f"extra-{k}"), _instances(additional, ctx, depth + 1, extras), max_size=2
    )
    return st.tuples(base, extra).map(lambda both: {**both[1], **both[0]})


# -- values of the generated annotations -----------------------------------------------------------------


class AliasMarker:
    """Stands for a generated alias whose value is a string at run time (``JSON``, recursive aliases)."""

    expression: str


_SCOPES: dict[int, dict[str, Any]] = {}


def _scope(namespace: Mapping[str, Any]) -> dict[str, Any]:
    scope = _SCOPES.get(id(namespace))
    if scope is None or scope["__namespace__"] is not namespace:
        scope = {**namespace, "__namespace__": namespace}
        for name, value in namespace.items():
            if isinstance(value, str) and not name.startswith("__"):
                scope[name] = type(name, (AliasMarker,), {"expression": value})
        _SCOPES[id(namespace)] = scope
    return scope


def resolve(hint: object, namespace: Mapping[str, Any]) -> object:
    """An annotation as an object: strings and forward references are evaluated in ``namespace``."""
    while True:
        if isinstance(hint, str | ForwardRef):
            hint = eval(hint if isinstance(hint, str) else hint.__forward_arg__, _scope(namespace))
        elif isinstance(hint, type) and issubclass(hint, AliasMarker) and hint.__name__ != "JSON":
            hint = hint.expression
        else:
            return hint


def _is_json_alias(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, AliasMarker) and hint.__name__ == "JSON"


def is_json(value: object) -> bool:
    if isinstance(value, list):
        return all(is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return value is None or isinstance(value, str | int | bool) or (isinstance(value, float) and math.isfinite(value))


def typed_dict_keys(td: Any, namespace: Mapping[str, Any]) -> dict[str, tuple[object, bool]]:
    """Key → (annotation, required) of a generated TypedDict, read from its annotations."""
    keys: dict[str, tuple[object, bool]] = {}
    for key, hint in td.__annotations__.items():
        hint = resolve(hint, namespace)
        required = typing.get_origin(hint) is not typing.NotRequired
        keys[key] = (typing.get_args(hint)[0] if not required else hint, required)
    return keys


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SCALAR_CHECKS: dict[object, Callable[[object], bool]] = {
    str: lambda v: isinstance(v, str),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: _is_number,
    bool: lambda v: isinstance(v, bool),
    type(None): lambda v: v is None,
    None: lambda v: v is None,
}


def conforms(value: object, hint: object, namespace: Mapping[str, Any]) -> bool:
    """Whether ``value`` is a value of the annotation ``hint`` (as a type checker would judge a literal)."""
    hint = resolve(hint, namespace)
    if _is_json_alias(hint):
        return is_json(value)
    if hint in _SCALAR_CHECKS:
        return _SCALAR_CHECKS[hint](value)
    if hint is typing.Never:
        return False
    if isinstance(hint, type) and hint is namespace.get("Omit"):
        return value is namespace["OMIT"]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, pytypes.UnionType):
        return any(conforms(value, arg, namespace) for arg in args)
    if origin is typing.Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(item, args[0], namespace) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(v, args[1], namespace) for v in value.values())
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return False
        keys = typed_dict_keys(hint, namespace)
        required = {key for key, (_, needed) in keys.items() if needed}
        return (
            required <= value.keys()
            and value.keys() <= keys.keys()
            and all(conforms(v, keys[k][0], namespace) for k, v in value.items())
        )
    raise AssertionError(f"unexpected annotation in a generated SDK: {hint!r}")


def values_of(hint: object, namespace: Mapping[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the annotation ``hint`` (``Omit`` excluded: leaving a parameter out is the caller's choice)."""
    hint = resolve(hint, namespace)
    if _is_json_alias(hint):
        return json_values
    simple: dict[object, st.SearchStrategy[Any]] = {
        str: st.text(max_size=6),
        int: st.integers(-1000, 1000),
        float: st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False),
        bool: st.booleans(),
        type(None): st.none(),
        None: st.none(),
    }
    if hint in simple:
        return simple[hint]
    if hint is typing.Never or hint is namespace.get("Omit"):
        return st.nothing()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, pytypes.UnionType):
        return st.one_of([values_of(arg, namespace, depth) for arg in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (list, dict) and (depth >= MAX_DEPTH or resolve(args[-1], namespace) is typing.Never):
        return st.just(origin())  # an empty container: deeper types are never built, so recursion ends
    if origin is list:
        return st.lists(values_of(args[0], namespace, depth + 1), max_size=2)
    if origin is dict:
        return st.dictionaries(st.text(max_size=4), values_of(args[1], namespace, depth + 1), max_size=2)
    if typing.is_typeddict(hint):
        keys = typed_dict_keys(hint, namespace)
        fixed = {k: values_of(t, namespace, depth + 1) for k, (t, needed) in keys.items() if needed}
        optional = {} if depth >= MAX_DEPTH else {k: t for k, (t, needed) in keys.items() if not needed}
        return st.fixed_dictionaries(
            fixed, optional={k: values_of(t, namespace, depth + 1) for k, t in optional.items()}
        )
    raise AssertionError(f"unexpected annotation in a generated SDK: {hint!r}")


# -- the structural part of a schema ---------------------------------------------------------------------

_CONSTRAINTS = frozenset(
    {
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
        "pattern", "format", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
        "propertyNames", "contains", "minContains", "maxContains", "not", "if", "then", "else",
        "dependentRequired", "dependentSchemas", "dependencies",
    }
)  # fmt: skip
_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def structural(schema: object) -> object:
    """``schema`` without what types cannot say: value constraints go, ``oneOf`` becomes ``anyOf``."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _CONSTRAINTS:
            continue
        if key in _MAPS and isinstance(value, Mapping):
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in _LISTS and isinstance(value, list):
            out["anyOf" if key == "oneOf" else key] = [structural(sub) for sub in value]
        elif key in ("items", "additionalProperties", "additionalItems"):
            out[key] = [structural(s) for s in value] if isinstance(value, list) else structural(value)
        else:
            out[key] = value
    if out.get("nullable") is True:
        out = {"anyOf": [{k: v for k, v in out.items() if k != "nullable"}, {"type": "null"}]}
    return out


# -- JSON Schemas --------------------------------------------------------------------------------------

_KEYS = ["a", "name", "type", "function", "from", "class", "get-sum", "per_page", "fullPage", "2fa", "x y", "a.b"]
_TAKEN = ["_call", "_wire", "cast", "OMIT", "Omit", "JSON", "str", "list", "__init__", "__x", "über", "", "extra"]
AWKWARD_NAMES = st.sampled_from([*_KEYS, *_TAKEN]) | st.text(max_size=6)

DEFINITIONS: dict[str, Any] = {
    "Node": {
        "type": "object",
        "description": "A tree node that refers to itself.",
        "properties": {
            "value": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
        },
        "required": ["value"],
    },
    "Color": {"type": "string", "enum": ["red", "dark green", "blue"]},
    "Pair": {"type": "object", "properties": {"left": {"type": "integer"}, "right": {"$ref": "#/$defs/Color"}}},
    "Expr": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"$ref": "#/$defs/Expr"}}]},
}

_leaves = st.one_of(
    st.sampled_from(
        [
            {"type": "string"},
            {"type": "integer"},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": ["string", "null"]},
            {"type": ["integer", "string"]},
            {"type": "string", "nullable": True},
            {"type": "string", "default": "x"},
            {"type": "integer", "minimum": 1, "maximum": 9},
            {},
            True,
            {"description": "anything at all"},
        ]
    ),
    st.sampled_from(["Node", "Color", "Pair", "Expr"]).map(lambda name: {"$ref": f"#/$defs/{name}"}),
    st.lists(st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.none()), min_size=1, max_size=4)
    .map(lambda values: list({repr(v): v for v in values}.values()))
    .map(lambda values: {"enum": values}),
    json_scalars.filter(lambda v: not isinstance(v, float)).map(lambda v: {"const": v}),
)

_ONE_OF_KINDS = st.lists(st.sampled_from(["string", "integer", "boolean", "null", "array"]), min_size=2, unique=True)


def _objects(
    children: st.SearchStrategy[Any], *, closed: bool = True, root: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    # An empty key can be a parameter (named `_`) but not a TypedDict key: nested objects that have one
    # become plain dicts, a widening the forward check would rightly flag, so they are not generated.
    names = AWKWARD_NAMES if root else AWKWARD_NAMES.filter(bool)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(names, children, max_size=4))
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        schema["required"] = draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
        choices = [None, True, {"type": "integer"}] + ([False] if closed else [])
        additional = draw(st.sampled_from(choices))
        if additional is not None:
            schema["additionalProperties"] = additional
        return schema

    return build()


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        _objects(children),
        children.map(lambda items: {"type": "array", "items": items}),
        st.lists(children, min_size=2, max_size=3).map(lambda branches: {"anyOf": branches}),
        children.map(lambda sub: {"anyOf": [sub, {"type": "null"}]}),
        st.tuples(_ONE_OF_KINDS, children).map(
            lambda both: {"oneOf": [{"type": k} if k != "array" else {"type": k, "items": both[1]} for k in both[0]]}
        ),
        st.lists(_objects(children, closed=False), min_size=2, max_size=3).map(
            lambda parts: {"allOf": [{k: v for k, v in p.items() if k != "additionalProperties"} for p in parts]}
        ),
        st.dictionaries(st.text(max_size=4), children, max_size=1).map(
            lambda extra: {"type": "object", "additionalProperties": next(iter(extra.values()), True)}
        ),
    )


subschemas = st.recursive(_leaves, _extend, max_leaves=8)


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """An MCP tool input schema: an object with awkward property names, nested types and local refs.

    Half are draft 2020-12 with ``$defs``, half draft-07 with ``definitions`` (the refs are rewritten).
    """
    root = draw(_objects(subschemas, root=True))
    root["$defs"] = DEFINITIONS
    if draw(st.booleans()):
        text = json.dumps(root).replace("#/$defs/", "#/definitions/").replace('"$defs"', '"definitions"')
        root = {"$schema": "http://json-schema.org/draft-07/schema#", **json.loads(text)}
    return root
