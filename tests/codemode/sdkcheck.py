"""Shared checks: call a generated function without an event loop, map instances to keyword arguments,
write deterministic example calls, and run pyright (strict) once over generated files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from codemode import SdkFunction
from codemode._pytypes import python_literal

PYRIGHT = Path(sys.executable).parent / "pyright"
STRICT = {"typeCheckingMode": "strict", "pythonVersion": "3.11", "reportMissingModuleSource": False}


def run_now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a generated function to completion: its only await is the call hook, which never suspends here."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("the SDK function suspended: it awaited something other than the call hook")


def kwargs_for(function: SdkFunction, instance: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that should make ``function`` send exactly ``instance``."""
    by_wire = {p.wire_name: p.name for p in function.parameters}
    kwargs: dict[str, Any] = {}
    for key, value in instance.items():
        if key in by_wire:
            kwargs[by_wire[key]] = value
        else:
            assert function.extra is not None, f"{key!r} has no parameter and the function takes no extras"
            kwargs[key] = value
    return kwargs


def example(schema: Any, *, full: bool, root: Any = None, depth: int = 0) -> Any:
    """A deterministic instance: only required keys, or (``full``) every key; for example calls in source."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > 6:
        return None if schema is not True else "any"
    if "$ref" in schema:
        pointer = schema["$ref"].lstrip("#").strip("/").split("/")
        target = root
        for part in filter(None, pointer):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return example(target, full=full, root=root, depth=depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if isinstance(b, Mapping) and b.get("type") != "null"]
            return example(branches[-1 if full else 0] if branches else {}, full=full, root=root, depth=depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][-1 if full else 0]
    if "default" in schema and not full:
        return schema["default"]
    kind = schema.get("type", "object" if "properties" in schema else None)
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    low = schema.get("minimum", 1)
    scalars = {"string": "x" * max(schema.get("minLength", 1), 1), "integer": low, "number": low + 0.5}
    scalars |= {"boolean": full, "null": None}
    if kind in scalars:
        return scalars[kind]
    if kind == "array":
        count = max(schema.get("minItems", 0), 1 if full and depth < 4 else 0)
        return [example(schema.get("items", {}), full=full, root=root, depth=depth + 1) for _ in range(count)]
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = schema.get("required", [])
        keys = [k for k in properties if full or k in required]
        return {k: example(properties[k], full=full, root=root, depth=depth + 1) for k in keys}
    return "any"


def call_source(function: SdkFunction, instance: Mapping[str, Any]) -> str:
    """``await ns.fn(a=..., **{"x-y": ...})`` for ``instance``, as Python source."""
    kwargs = kwargs_for(function, instance)
    named = {p.name for p in function.parameters}
    parts = [f"{k}={python_literal(v)}" for k, v in kwargs.items() if k in named]
    extras = {k: v for k, v in kwargs.items() if k not in named}
    if extras:
        parts.append(f"**{python_literal(extras)}")
    return f"await {function.namespace}.{function.name}({', '.join(parts)})"


def pyright(directory: Path) -> dict[str, list[tuple[int, str]]]:
    """Run pyright in strict mode over ``directory``: file name → [(line, message)] of its errors."""
    (directory / "pyrightconfig.json").write_text(json.dumps(STRICT))
    done = subprocess.run(
        [str(PYRIGHT), "--outputjson", "-p", str(directory)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = json.loads(done.stdout)
    errors: dict[str, list[tuple[int, str]]] = {}
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            name = Path(diagnostic["file"]).name
            errors.setdefault(name, []).append((diagnostic["range"]["start"]["line"] + 1, diagnostic["message"]))
    assert report["summary"]["filesAnalyzed"] >= 1, done.stdout + done.stderr
    return errors
