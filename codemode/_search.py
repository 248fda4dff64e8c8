"""Find SDK functions for a query: BM25 over their names and descriptions, names weighted higher.

Names are split into words (``get_sum`` and ``getSum`` → ``get sum``) and words are cut to a crude stem, so
"listing files" finds ``list_directory``'s neighbours as well as ``list_files``. An exact name — ``ns.fn``,
``fn``, the exposed tool name or the upstream tool name — returns that function alone, in full.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from codemode._names import identifier
from codemode._sdk import GeneratedSdk, SdkFunction

__all__ = ["Detail", "SdkIndex"]

Detail = Literal["names", "signatures", "full"]

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_STOP = frozenset(
    "a an and are as at be by can do for from get how i in into is it me my of on or that the this to use "
    "want what when which with you your".split()
)
_NAME_WEIGHT = 3.0
_K1 = 1.2
_B = 0.75


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def tokens(text: str) -> list[str]:
    """The stemmed, lower-cased words of ``text``, without stop words."""
    words = (w.lower() for w in _WORD.findall(text))
    return [_stem(w) for w in words if w not in _STOP]


@dataclass(frozen=True, slots=True)
class _Doc:
    function: SdkFunction
    terms: dict[str, float]
    length: float


def signature(function: SdkFunction) -> str:
    """``namespace.name(params) -> Result``: the stub's first line(s), without ``async def``."""
    head = function.stub.removeprefix("@staticmethod\n").split('\n    """', 1)[0].rstrip(":").strip()
    head = re.sub(r"\s*\n\s*", " ", head).replace("( ", "(").replace(", )", ")").replace(",)", ")")
    return f"{function.namespace}.{head.removeprefix('async def ')}"


def _summary(function: SdkFunction) -> str:
    description = (function.tool.description or "").strip().splitlines()
    return description[0][:160] if description else ""


class SdkIndex:
    """A search index over the functions of one SDK."""

    def __init__(self, sdk: GeneratedSdk) -> None:
        self.sdk = sdk
        docs: list[_Doc] = []
        for function in sdk.functions:
            terms: dict[str, float] = {}
            for term in tokens(f"{function.name} {function.tool.name} {function.namespace}"):
                terms[term] = terms.get(term, 0.0) + _NAME_WEIGHT
            for term in tokens(f"{function.tool.title or ''} {function.tool.description or ''}"):
                terms[term] = terms.get(term, 0.0) + 1.0
            docs.append(_Doc(function, terms, sum(terms.values())))
        self._docs = docs
        self._average = sum(d.length for d in docs) / len(docs) if docs else 1.0
        frequency: Counter[str] = Counter(term for d in docs for term in d.terms)
        n = len(docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def exact(self, query: str) -> SdkFunction | None:
        """The function ``query`` names exactly, if any."""
        wanted = query.strip()
        for function in self.sdk.functions:
            names = (
                f"{function.namespace}.{function.name}",
                f"{function.server}.{function.name}",
                function.target,
                function.name,
                function.tool.name,
            )
            if wanted in names:
                return function
        return None

    def rank(self, query: str, *, limit: int = 10) -> list[SdkFunction]:
        """The functions best matching ``query``, best first (none when no word matches)."""
        terms = tokens(query)
        scored: list[tuple[float, int, SdkFunction]] = []
        for position, doc in enumerate(self._docs):
            score = 0.0
            for term in terms:
                tf = doc.terms.get(term, 0.0)
                if tf:
                    norm = tf + _K1 * (1 - _B + _B * doc.length / self._average)
                    score += self._idf[term] * tf * (_K1 + 1) / norm
            if score > 0:
                scored.append((-score, position, doc.function))
        scored.sort(key=lambda item: (item[0], item[1]))
        return [function for _, _, function in scored[:limit]]

    def search(self, query: str, *, detail: Detail = "signatures", limit: int = 10) -> str:
        """The text ``search`` answers with: matching functions at the level of ``detail``."""
        exact = self.exact(query)
        if exact is not None:
            return render([exact], "full", self.sdk)
        found = self.rank(query, limit=max(1, limit))
        if not found:
            return f"No SDK function matches {query!r}; try other words, or fewer."
        return render(found, detail, self.sdk)


def render(functions: Sequence[SdkFunction], detail: Detail, sdk: GeneratedSdk | None = None) -> str:
    """Functions as a model reads them: names with a summary, one-line signatures, or full stubs.

    Full stubs come after the TypedDicts and aliases they use (from ``sdk``), each written once.
    """
    if detail == "names":
        return "\n".join(f"{f.namespace}.{f.name}: {_summary(f)}" for f in functions)
    if detail == "signatures":
        return "\n".join(f"{signature(f)}\n    # {_summary(f)}" for f in functions)
    stubs = [f"{_where(f)}\n{f.stub.removeprefix('@staticmethod' + chr(10))}" for f in functions]
    used = {name for f in functions for name in f.types}
    definitions: Mapping[str, str] = sdk.definitions if sdk is not None else {}
    types = [source for name, source in definitions.items() if name in used]
    if types:
        stubs.insert(0, "# types the functions below use\n" + "\n\n".join(types))
    return "\n\n".join(stubs)


def _where(function: SdkFunction) -> str:
    if function.namespace == identifier(function.server):
        return f"# in namespace {function.namespace}"
    return f"# in namespace {function.namespace} (MCP server {function.server!r})"
