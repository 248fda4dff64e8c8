"""Format errors with file and line: pydantic's validation errors, mapped onto the YAML they came from.

Each error names where it is (``rules[2].effect``), what is wrong, and the offending value; an unknown key
comes with the closest known one ("did you mean 'effect'?").
"""

from __future__ import annotations

import difflib
import types as pytypes
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from portal.policy._errors import Problem
from portal.policy._format import NAME_RULE, PRINCIPAL_RULE, PolicyFile
from portal.policy._yaml import Document
from portal.policy._yaml import Path as YamlPath

__all__ = ["schema_problems"]


def schema_problems(document: Document, error: ValidationError) -> list[Problem]:
    """Each error of ``error`` (from validating ``document.data``) as a problem at its line."""
    errors = error.errors()
    problems: list[Problem] = []
    for detail in errors:
        path, tail = _clean(document.data, detail["loc"])
        if detail["type"] == "none_required" and any(
            e is not detail and _clean(document.data, e["loc"])[0] == path for e in errors
        ):
            continue  # the None branch of an optional value; the other branch's error says it better
        reason = _reason(detail, path, tail)
        shown = _display(path)
        problems.append(Problem(document.file, document.line(path), f"{shown}: {reason}" if shown else reason))
    return problems


def _clean(data: object, loc: tuple[int | str, ...]) -> tuple[YamlPath, str | None]:
    """The part of ``loc`` that exists in ``data`` (dropping pydantic's union tags), and a missing last key."""
    path: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]  # pyright: ignore[reportUnknownVariableType]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):  # pyright: ignore[reportUnknownArgumentType]
            path.append(part)
            current = current[part]  # pyright: ignore[reportUnknownVariableType]
        elif i == len(loc) - 1 and isinstance(part, str) and part != "[key]":
            return tuple(path), part
    return tuple(path), None


def _display(path: YamlPath) -> str:
    shown = ""
    for part in path:
        shown += f"[{part}]" if isinstance(part, int) else (f".{part}" if shown else part)
    return shown


def _reason(detail: ErrorDetails, path: YamlPath, tail: str | None) -> str:
    kind = detail["type"]
    value = detail.get("input")
    if kind == "missing":
        return f"missing required key {tail!r}"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        known = _known_keys(path[:-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key{hint}"
    if kind == "string_pattern_mismatch":
        pattern = str((detail.get("ctx") or {}).get("pattern", ""))
        if "local" in pattern:
            return f"{value!r} is not a principal: write {PRINCIPAL_RULE}"
        extra = " (or '*' for every caller)" if "\\*" in pattern else ""
        return f"{value!r} is not a valid name: {NAME_RULE}{extra}"
    message = detail["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    if kind.endswith("_type") or kind in ("literal_error", "enum"):
        return f"{message}, got {value!r}"
    return message


def _known_keys(path: YamlPath) -> list[str]:
    """The keys the format allows at ``path`` (for 'did you mean')."""
    model: Any = PolicyFile
    for part in path:
        model = _step(model, part)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _step(annotation: Any, part: str | int) -> Any:
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and isinstance(part, str):
            for name, field in candidate.model_fields.items():
                if part in (name, field.alias):
                    return field.annotation
        origin = get_origin(candidate)
        if origin is list and isinstance(part, int):
            return get_args(candidate)[0]
        if origin is dict and isinstance(part, str):
            return get_args(candidate)[1]
    return None


def _members(annotation: Any) -> Iterator[Any]:
    if get_origin(annotation) in (Union, pytypes.UnionType):
        yield from get_args(annotation)
    else:
        yield annotation
