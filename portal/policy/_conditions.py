"""CEL conditions (``when:``), compiled once when a policy loads.

A condition sees five variables:

- ``principal``: ``subject``, ``kind`` (``user``/``service``/``local``), ``groups``, ``client_id`` (null when
  unknown), ``scopes`` and ``roles`` (what the policy gave it);
- ``tool``: ``name`` (the name clients see), ``server`` and ``annotations`` (``readOnlyHint``,
  ``destructiveHint``, ``idempotentHint``, ``openWorldHint``, ``title``; null when the tool does not declare
  it);
- ``arguments``: the call's arguments (an empty map when there are none);
- ``request``: ``method`` (``tools/call``, ``prompts/get``, ``resources/read``, ...);
- ``now``: the time of the decision, a CEL timestamp in UTC (``now.getHours()``, ``now.getDayOfWeek()``).

``arguments`` and ``request`` only exist when a call is made; when deciding what a listing shows, a
condition that uses them is *deferred* (see :mod:`portal.policy._engine`). Each decision converts only the
variables its conditions use, once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import cel
import mcp_types as types

from portal.principal import Principal

__all__ = ["CEL_ERRORS", "VARIABLES", "Bindings", "CompileError", "Condition", "ConditionError", "compile_condition"]

VARIABLES = ("principal", "tool", "arguments", "request", "now")
_CALL_TIME = frozenset({"arguments", "request"})
CEL_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, RuntimeError)
"""What evaluating a CEL program raises: missing keys, wrong types, overflow, bad regexes, unknown names."""
_TYPE_NAMES = frozenset({"bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"})
"""Type denotations, which static analysis reports as variables (``type(x) == string``)."""
_BINDER = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']+)'")
_INPUT_POSITION = re.compile(r"<input>:(\d+):(\d+): ")
_SYNTAX = re.compile(r"<input>:(\d+):(\d+): (.*)")


class CompileError(Exception):
    """A condition that does not compile, or uses a name no condition has; the message says which."""


class ConditionError(Exception):
    """Evaluating a condition failed (a missing argument, a type mismatch, ...)."""


class Condition:
    """A compiled CEL condition.

    Attributes:
        source: The expression as written.
        variables: The variables it uses.
        call_time: Whether it uses ``arguments`` or ``request``, which only a call has.
    """

    __slots__ = ("_program", "call_time", "source", "variables")

    def __init__(self, source: str, program: cel.Program, variables: frozenset[str]) -> None:
        self.source = source
        self._program = program
        self.variables = variables
        self.call_time = bool(variables & _CALL_TIME)

    def holds(self, bindings: Bindings) -> bool:
        """Evaluate against ``bindings``.

        Raises:
            ConditionError: Evaluation failed, or the result is not a boolean.
        """
        try:
            result: object = self._program.execute(bindings.context(self.variables))
        except CEL_ERRORS as error:
            raise ConditionError(_first_line(error)) from None
        if not isinstance(result, bool):
            raise ConditionError(f"the condition must be true or false, but gave {result!r}")
        return result


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return _INPUT_POSITION.sub("", text[0]) if text else type(error).__name__


def compile_condition(source: str) -> Condition:
    """Compile ``source`` and check the names it uses.

    Raises:
        CompileError: A syntax error, a variable other than those in :data:`VARIABLES`, or a function the
            CEL runtime does not have.
    """
    try:
        program = cel.compile(source)
    except ValueError as error:
        found = _SYNTAX.search(str(error))
        if found is None:
            raise CompileError(f"not a CEL expression: {_first_line(error)}") from None
        line, column, detail = found[1], found[2], found[3].removeprefix("Syntax error: ")
        raise CompileError(f"CEL syntax error at line {line}, column {column}: {detail}") from None
    used = frozenset(program.variables()) - set(_BINDER.findall(source)) - _TYPE_NAMES
    unknown = sorted(used - set(VARIABLES))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, VARIABLES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CompileError(f"unknown variable {name!r} (conditions see {', '.join(VARIABLES)}){hint}")
    condition = Condition(source, program, used)
    _trial(condition)
    return condition


def _trial(condition: Condition) -> None:
    """Run the condition once on sample values, to catch functions the runtime does not have."""
    sample = Bindings(
        Principal(subject="sample"),
        frozenset(),
        method="tools/call",
        target="sample__tool",
        server="sample",
        annotations=None,
        arguments={},
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    try:
        condition.holds(sample)
    except ConditionError as error:
        missing = _UNDEFINED.search(str(error))
        if missing and missing[1] not in VARIABLES:
            raise CompileError(f"unknown function {missing[1]!r}: the CEL runtime does not provide it") from None


class Bindings:
    """The variables of one decision, converted for CEL only when a condition first needs them."""

    __slots__ = (
        "_context",
        "_values",
        "annotations",
        "arguments",
        "method",
        "now",
        "principal",
        "roles",
        "server",
        "target",
    )

    def __init__(
        self,
        principal: Principal,
        roles: frozenset[str],
        *,
        method: str,
        target: str,
        server: str,
        annotations: types.ToolAnnotations | None,
        arguments: Mapping[str, Any] | None,
        now: datetime | None,
    ) -> None:
        self.principal = principal
        self.roles = roles
        self.method = method
        self.target = target
        self.server = server
        self.annotations = annotations
        self.arguments = arguments
        self.now = now
        self._context: cel.Context | None = None
        self._values: set[str] = set()

    def context(self, names: frozenset[str]) -> cel.Context:
        """A CEL context holding at least ``names``."""
        context = self._context
        if context is None:
            context = self._context = cel.Context()
        for name in names - self._values:
            context.add_variable(name, self._value(name))
            self._values.add(name)
        return context

    def _value(self, name: str) -> object:
        if name == "principal":
            p = self.principal
            return {
                "subject": p.subject,
                "kind": p.kind,
                "groups": sorted(p.groups),
                "client_id": p.client_id,
                "scopes": sorted(p.scopes),
                "roles": sorted(self.roles),
            }
        if name == "tool":
            a = self.annotations
            hints = {
                "title": a.title if a else None,
                "readOnlyHint": a.read_only_hint if a else None,
                "destructiveHint": a.destructive_hint if a else None,
                "idempotentHint": a.idempotent_hint if a else None,
                "openWorldHint": a.open_world_hint if a else None,
            }
            return {"name": self.target, "server": self.server, "annotations": hints}
        if name == "arguments":
            return dict(self.arguments or {})
        if name == "request":
            return {"method": self.method}
        return self.now or datetime.now(UTC)
