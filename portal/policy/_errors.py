"""Errors of the policy engine.

Hierarchy::

    DockyardError                 (portal.errors)
    └── PolicyError               anything the policy engine refuses
        ├── PolicyLoadError       a policy directory that cannot be loaded: every problem with file and line
        └── PrincipalSpecError    a principal written as text (``--as``, a test case) that makes no sense
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portal.errors import DockyardError

__all__ = ["PolicyError", "PolicyLoadError", "PrincipalSpecError", "Problem"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy file, where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class PolicyError(DockyardError):
    """Base of the errors the policy engine raises."""


class PolicyLoadError(PolicyError):
    """A policy directory cannot be loaded; ``problems`` lists each error with its file and line.

    Args:
        problems: What is wrong, in file and line order; at least one.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.file, p.line, p.reason)))
        super().__init__("\n".join(str(p) for p in self.problems))


class PrincipalSpecError(PolicyError):
    """A principal written as text is not ``local``, ``user:NAME`` or ``service:NAME``."""
