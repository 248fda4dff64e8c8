"""Safe Python names for whatever upstream servers call their tools, parameters and types.

Every name that reaches generated code goes through :func:`identifier` or :func:`pascal`, which keep only
ASCII letters, digits and underscores, so an upstream string can never inject code through a name. A
:class:`Namer` hands out unique names within one scope, never one it was told to reserve.
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
import unicodedata
from collections.abc import Iterable

__all__ = ["BUILTIN_NAMES", "MODULE_NAMES", "Namer", "identifier", "pascal"]

BUILTIN_NAMES = frozenset(dir(builtins))
"""Names a generated module must not shadow: its annotations say ``str``, ``list``, ``dict`` and so on."""

MODULE_NAMES = frozenset(name for name in sys.stdlib_module_names if not name.startswith("_"))
"""Names a namespace must not take: a script imports the standard library's modules (``json``, ``re``,
``math``, ...) under them, and a namespace of the same name would shadow the module."""

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def identifier(text: str) -> str:
    """A valid, non-keyword Python identifier as close to ``text`` as possible.

    Characters outside ``[A-Za-z0-9_]`` become ``_`` (accents are dropped first: ``für`` → ``fur``), a
    leading digit gets a ``_`` prefix, keywords get a ``_`` suffix (``from`` → ``from_``, as PEP 8 says),
    and a leading double underscore is cut to one so that no name is mangled inside a class.
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", _ascii(text)) or "_"
    if name[0].isdigit():
        name = f"_{name}"
    if name.startswith("__"):
        name = "_" + name.lstrip("_")
    if keyword.iskeyword(name):
        name = f"{name}_"
    return name


def pascal(text: str, *, fallback: str = "Type") -> str:
    """``text`` in PascalCase (``read_text_file`` → ``ReadTextFile``, ``get-sum`` → ``GetSum``)."""
    words = _WORD.findall(_ascii(text))
    name = "".join(word[0].upper() + word[1:] for word in words) or fallback
    return f"T{name}" if name[0].isdigit() else name


class Namer:
    """Unique names within one scope: the first request for a base gets it, later ones a number."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken = set(reserved)

    def __contains__(self, name: str) -> bool:
        return name in self._taken

    @property
    def taken(self) -> frozenset[str]:
        """Every name reserved or handed out so far."""
        return frozenset(self._taken)

    def reserve(self, name: str) -> None:
        """Mark ``name`` as used without handing it out."""
        self._taken.add(name)

    def unique(self, base: str, *alternatives: str) -> str:
        """``base`` or the first free alternative, else ``base`` with the smallest free number appended.

        The result is ``base``, one of ``alternatives`` or ``base`` plus digits: callers pass identifiers.
        """
        for candidate in (base, *alternatives):
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate
        number = 2
        while f"{base}{number}" in self._taken:
            number += 1
        self._taken.add(f"{base}{number}")
        return f"{base}{number}"
