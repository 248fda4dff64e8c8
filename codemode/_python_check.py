"""Type-check a ``runtime="python"`` script with Monty's checker against the SDK's stubs, without running it.

The script is fed to a Monty session as a run gets it (the namespaces imported; the executor's warm one
when it fits) as the body of an ``async def`` that is never called (so top-level ``await`` checks and
nothing runs), after a local ``ToolError`` declared as the class the box defines. Monty's checker knows
only the standard library Monty implements, and its parser stops at what Monty cannot run (class
inheritance, generators) — but it checks before it parses, so its verdict on the SDK calls stands.
Diagnostics that only say Monty lacks something CPython has are dropped: unresolved imports
(``sqlite3``), unresolved names (``open``), unknown attributes other than an SDK namespace's. What is left
— wrong argument names or types for an SDK function, a misspelt SDK function, type errors among the
script's own values — is reported as for the Monty runtime.
"""

from __future__ import annotations

import ast
import logging
import re

import pydantic_monty as monty

from codemode._executor import ExecuteResult, MontyExecutor
from codemode._sdk import GeneratedSdk
from codemode._sessions import SCRIPT_NAME

__all__ = ["check_python"]

logger = logging.getLogger("codemode")

_DIAGNOSTIC = re.compile(rf"^{re.escape(SCRIPT_NAME)}:(\d+):(\d+): error\[([a-z-]+)\] (.*)$", re.M)
_MONTY_LACKS = frozenset({"unresolved-import", "unresolved-reference", "possibly-unresolved-reference"})


_PRELUDE = """\
async def _dockyard_script() -> None:
    class ToolError(OSError):
        tool: str
        message: str
"""
"""The wrapper's head: ``ToolError`` as the box defines it, shadowing the Monty session's ``OSError``."""


def _source(code: str) -> tuple[str, int]:
    """The text fed to the checker and how many lines precede the script's first."""
    prelude = _PRELUDE
    body = "".join(f"    {line}\n" if line.strip() else "\n" for line in code.splitlines())
    return prelude + body + "    pass\n", prelude.count("\n")


async def check_python(checker: MontyExecutor, sdk: GeneratedSdk, code: str) -> ExecuteResult | None:
    """The type errors of ``code`` as a ``type_error`` result, or None when there are none to report.

    A script CPython cannot parse is left to the run, which reports the syntax error with its line.
    """
    try:
        ast.parse(code, SCRIPT_NAME)
    except (SyntaxError, ValueError):
        return None
    source, offset = _source(code)
    namespaces = {f.namespace for f in sdk.functions}
    try:
        async with checker.session(sdk) as session:
            await session.feed_run(source)
    except monty.MontyTypingError as error:
        text = error.display()
    except (monty.MontyRuntimeError, monty.MontySyntaxError):
        return None  # checked, then refused by Monty's parser: CPython runs what Monty cannot
    except monty.MontyError as error:
        logger.warning("runtime 'python': the type check failed (%s); running unchecked", error)
        return None
    else:
        return None
    found: list[tuple[int, str]] = []
    for match in _DIAGNOSTIC.finditer(text):
        line, column, kind, message = int(match[1]) - offset, int(match[2]) - 4, match[3], match[4]
        if kind == "invalid-syntax":
            return None  # the wrapping confused the parser (say, tabs): leave it to CPython
        if kind in _MONTY_LACKS or line < 1:
            continue
        if kind == "unresolved-attribute" and not any(f"`{ns}`" in message for ns in namespaces):
            continue
        found.append((line, f"{SCRIPT_NAME}:{line}:{max(column, 1)}: error[{kind}] {message}"))
    if not found:
        return None
    return ExecuteResult(
        "type_error",
        error="\n".join(message for _, message in found),
        line=found[0][0],
        type_errors=tuple((line, message.split("] ", 1)[-1]) for line, message in found),
    )
