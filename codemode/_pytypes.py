"""Python type expressions as a small tree, so unions can be simplified before they are written out.

A type is one of :class:`Atom` (``str``, ``None``, ``JSON``, a generated name), :class:`Lit`
(``Literal[...]``), :class:`ListOf`, :class:`DictOf` or :class:`Union`. :func:`union` flattens,
deduplicates and drops members another member already admits (``Literal["a"] | str`` is ``str``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

__all__ = [
    "BOOL",
    "FLOAT",
    "INT",
    "JSON",
    "NEVER",
    "NONE",
    "STR",
    "Atom",
    "DictOf",
    "ListOf",
    "Lit",
    "LiteralValue",
    "PyType",
    "Union",
    "admits",
    "literal_value",
    "names_in",
    "python_literal",
    "render",
    "union",
]

LiteralValue = str | int | bool
"""What ``Literal[...]`` can hold (``None`` is written as the ``None`` atom)."""


@dataclass(frozen=True, slots=True)
class Atom:
    """A name: a builtin type, ``None``, ``JSON``, ``Never`` or a generated TypedDict/alias."""

    name: str
    generated: bool = False


@dataclass(frozen=True, slots=True)
class Lit:
    """``Literal[v1, v2, ...]``."""

    values: tuple[LiteralValue, ...]


@dataclass(frozen=True, slots=True)
class ListOf:
    """``list[item]``."""

    item: PyType


@dataclass(frozen=True, slots=True)
class DictOf:
    """``dict[str, value]``."""

    value: PyType


@dataclass(frozen=True, slots=True)
class Union:
    """``a | b | ...`` (build it with :func:`union`)."""

    members: tuple[PyType, ...]


PyType = Atom | Lit | ListOf | DictOf | Union

STR, INT, FLOAT, BOOL, NONE = Atom("str"), Atom("int"), Atom("float"), Atom("bool"), Atom("None")
JSON = Atom("JSON")
"""Any JSON value: ``dict[str, JSON] | list[JSON] | str | int | float | bool | None``."""
NEVER = Atom("Never")
"""No value at all (the schema ``false``, or constraints nothing satisfies)."""

_SCALAR_OF: dict[type, Atom] = {str: STR, bool: BOOL, int: INT}


def literal_value(value: object) -> LiteralValue | None:
    """``value`` as something ``Literal[...]`` can hold, or None if it cannot (floats, objects, null)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str | int | bool):
        return value
    return None


def _absorbs(wide: PyType, narrow: PyType) -> bool:
    """Whether every value of ``narrow`` is already a value of ``wide`` (conservatively)."""
    if wide == narrow:
        return True
    if wide == JSON:
        return narrow in (STR, INT, FLOAT, BOOL, NONE, ListOf(JSON), DictOf(JSON)) or isinstance(narrow, Lit)
    if isinstance(narrow, Lit) and isinstance(wide, Atom):
        return all(_SCALAR_OF[type(value)] == wide or (wide == FLOAT and type(value) is int) for value in narrow.values)
    return wide == FLOAT and narrow == INT


def _flatten(types: Iterable[PyType]) -> Iterator[PyType]:
    for member in types:
        if isinstance(member, Union):
            yield from member.members
        elif member != NEVER:
            yield member


def union(types: Iterable[PyType]) -> PyType:
    """The union of ``types``, flattened and simplified; ``Never`` if there are none."""
    members: list[PyType] = []
    literals: list[LiteralValue] = []
    for member in _flatten(types):
        if isinstance(member, Lit):
            literals.extend(value for value in member.values if not any(_same(value, seen) for seen in literals))
        elif member not in members:
            members.append(member)
    if literals:
        members.insert(0, Lit(tuple(literals)))
    kept = [m for i, m in enumerate(members) if not any(_absorbs(o, m) for j, o in enumerate(members) if j != i)]
    if not kept:
        return NEVER
    # None goes last, as people write it.
    kept.sort(key=lambda member: member == NONE)
    return kept[0] if len(kept) == 1 else Union(tuple(kept))


def _same(a: LiteralValue, b: LiteralValue) -> bool:
    return type(a) is type(b) and a == b


def admits(py_type: PyType, value: object) -> bool:
    """Whether a JSON scalar ``value`` is certainly a value of ``py_type`` (used to vet defaults)."""
    if isinstance(py_type, Union):
        return any(admits(member, value) for member in py_type.members)
    if isinstance(py_type, Lit):
        return any(isinstance(value, LiteralValue) and _same(value, member) for member in py_type.values)
    if py_type == JSON:
        return value is None or isinstance(value, str | int | float | bool)
    if py_type == NONE:
        return value is None
    if py_type == FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return math.isfinite(value)
    return py_type in (STR, INT, BOOL) and _SCALAR_OF.get(type(value)) == py_type


def names_in(py_type: PyType) -> Iterator[str]:
    """Every name ``py_type`` mentions (generated ones and ``JSON``/``Never``), for imports and ordering."""
    if isinstance(py_type, Atom):
        yield py_type.name
    elif isinstance(py_type, Lit):
        yield "Literal"
    elif isinstance(py_type, ListOf):
        yield from names_in(py_type.item)
    elif isinstance(py_type, DictOf):
        yield from names_in(py_type.value)
    else:
        for member in py_type.members:
            yield from names_in(member)


def python_literal(value: object) -> str:
    """Python source for a JSON value; strings are double-quoted where that needs no escaping."""
    if isinstance(value, str):
        text = repr(value)
        return f'"{text[1:-1]}"' if text.startswith("'") and '"' not in value else text
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(item) for item in cast("list[object]", value)) + "]"
    if isinstance(value, dict):
        pairs = cast("dict[object, object]", value).items()
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in pairs) + "}"
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return repr(value)
    raise TypeError(f"not a JSON value: {value!r}")


def render(py_type: PyType) -> str:
    """Python source for ``py_type``."""
    if isinstance(py_type, Atom):
        return py_type.name
    if isinstance(py_type, Lit):
        return "Literal[" + ", ".join(python_literal(value) for value in py_type.values) + "]"
    if isinstance(py_type, ListOf):
        return f"list[{render(py_type.item)}]"
    if isinstance(py_type, DictOf):
        return f"dict[str, {render(py_type.value)}]"
    return " | ".join(render(member) for member in py_type.members)
