"""Result redaction: secrets and personal data replaced by ``[REDACTED:NAME]`` before a caller sees a result.

A policy's ``redact:`` entries name built-in patterns (:data:`PATTERNS`) or give their own regexes; the
decision carries them as :class:`~portal.policy_seam.Redaction` and the choke point applies them with
:func:`redact` to what an upstream answered — tool results (text, structured content, embedded resources,
resource links), resources read and prompts got — before the result, or any error text taken from it, reaches
the caller or the audit log (SECURITY.md G6, U3).

Every pattern is searched on the original text and the spans found are merged, so one secret inside another
(a JWT after ``Bearer``) or two that touch are removed whole, whichever pattern matches first. The built-in
patterns run in linear time: each starts at a literal or at the start of a run of its characters and never
backtracks (possessive quantifiers), so a result of megabytes cannot stall the portal. Binary content (images,
audio, blobs) is not inspected.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Literal, TypeVar, cast, get_args

import mcp_types as types

from portal.policy_seam import Redaction

__all__ = ["PATTERNS", "PatternName", "Redactor", "label", "redact", "redact_text", "redaction_label", "redactor"]

PatternName = Literal[
    "email",
    "github_token",
    "aws_access_key",
    "private_key",
    "jwt",
    "bearer",
    "slack_token",
    "google_api_key",
]

_LOCAL = r"A-Za-z0-9._%+\-"
_B64URL = r"A-Za-z0-9_\-"
PATTERNS: dict[PatternName, str] = {
    "email": rf"(?<![{_LOCAL}])[{_LOCAL}]++@[A-Za-z0-9\-]++(?:\.[A-Za-z0-9\-]++)++",
    "github_token": r"(?:gh[pousr]_[A-Za-z0-9]{30,}+|github_pat_[A-Za-z0-9_]{30,}+)",
    "aws_access_key": r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|AROA|ANPA|ANVA|APKA)[A-Z0-9]{16,}+",
    "private_key": (
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
    "jwt": rf"eyJ[{_B64URL}]++\.eyJ[{_B64URL}]++(?:\.[{_B64URL}]*+)*+",
    "bearer": r"(?i:bearer)[ \t]++[A-Za-z0-9._~+/\-]{8,}+=*+",
    "slack_token": r"xox[abeposr]-[A-Za-z0-9\-]{10,}+",
    "google_api_key": r"AIza[A-Za-z0-9_\-]{35,}+",
}
"""The built-in patterns a policy names in ``redact: [{patterns: [...]}]``."""

assert set(get_args(PatternName)) == set(PATTERNS)

_R = TypeVar("_R", types.CallToolResult, types.ReadResourceResult, types.GetPromptResult)
_Json = object


def label(name: str) -> str:
    """What a match of pattern ``name`` becomes."""
    return f"[REDACTED:{name}]"


class Redactor:
    """A compiled set of patterns.

    Args:
        patterns: ``(name, regex)`` pairs; a repeated pair is compiled once.
    """

    def __init__(self, patterns: Iterable[tuple[str, str]]) -> None:
        unique = dict.fromkeys(patterns)
        self.patterns = tuple((name, re.compile(pattern)) for name, pattern in unique)

    def text(self, text: str, counts: Counter[str]) -> str:
        """``text`` with every match replaced; adds what it replaced to ``counts``."""
        spans: list[tuple[int, int, int, str]] = []
        for order, (name, pattern) in enumerate(self.patterns):
            spans.extend((m.start(), -m.end(), order, name) for m in pattern.finditer(text) if m.end() > m.start())
        if not spans:
            return text
        spans.sort()
        pieces: list[str] = []
        written = 0
        start, end, name = spans[0][0], -spans[0][1], spans[0][3]
        for s, negative_end, _, n in spans[1:]:
            if s < end:  # overlapping or nested: one span, named after the match that starts first
                end = max(end, -negative_end)
                continue
            pieces += (text[written:start], label(name))
            counts[name] += 1
            written, start, end, name = end, s, -negative_end, n
        pieces += (text[written:start], label(name), text[end:])
        counts[name] += 1
        return "".join(pieces)

    def value(self, value: _Json, counts: Counter[str]) -> _Json:
        """A JSON value with every string in it (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value, counts)
        if isinstance(value, list):
            return [self.value(v, counts) for v in cast(list[object], value)]
        if isinstance(value, dict):
            result: dict[str, object] = {}
            for key, item in cast(dict[object, object], value).items():
                new_key = self.text(key if isinstance(key, str) else str(key), counts)
                while new_key in result:  # two redacted keys must not overwrite each other
                    new_key += "'"
                result[new_key] = self.value(item, counts)
            return result
        return value

    def content(self, block: types.ContentBlock, counts: Counter[str]) -> types.ContentBlock:
        """One content block, its text redacted (images and audio as they are)."""
        if isinstance(block, types.TextContent):
            text = self.text(block.text, counts)
            return block if text is block.text else block.model_copy(update={"text": text})
        if isinstance(block, types.EmbeddedResource):
            resource = self.resource(block.resource, counts)
            return block if resource is block.resource else block.model_copy(update={"resource": resource})
        if isinstance(block, types.ResourceLink):
            update = {
                field: self.text(value, counts)
                for field in ("name", "title", "description")
                if isinstance(value := getattr(block, field), str)
            }
            return block.model_copy(update=update)
        return block

    def resource(
        self, contents: types.TextResourceContents | types.BlobResourceContents, counts: Counter[str]
    ) -> types.TextResourceContents | types.BlobResourceContents:
        """Resource contents with their text redacted (blobs as they are)."""
        if isinstance(contents, types.TextResourceContents):
            text = self.text(contents.text, counts)
            return contents if text is contents.text else contents.model_copy(update={"text": text})
        return contents


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[tuple[str, str], ...]) -> Redactor:
    return Redactor(patterns)


def redactor(redactions: Sequence[Redaction]) -> Redactor:
    """The compiled patterns of ``redactions`` (cached: a decision's redactions repeat call after call)."""
    return _compiled(tuple((r.name, r.pattern) for r in redactions))


def redact_text(text: str, redactions: Sequence[Redaction]) -> tuple[str, dict[str, int]]:
    """``text`` with ``redactions`` applied, and how many matches of each pattern it replaced."""
    counts: Counter[str] = Counter()
    return redactor(redactions).text(text, counts), dict(counts)


def redact(result: _R, redactions: Sequence[Redaction]) -> tuple[_R, dict[str, int]]:
    """Apply ``redactions`` to a result an upstream returned.

    Args:
        result: A tool result (text, structured content, embedded resources, resource links), a resource
            read, or a prompt.
        redactions: What the decision says to redact; none: ``result`` is returned as it is.

    Returns:
        The redacted result (``result`` itself when nothing matched) and the number of matches replaced per
        pattern name.
    """
    if not redactions:
        return result, {}
    engine = redactor(redactions)
    counts: Counter[str] = Counter()
    update: dict[str, object]
    if isinstance(result, types.CallToolResult):
        update = {"content": [engine.content(c, counts) for c in result.content]}
        if result.structured_content is not None:
            update["structured_content"] = engine.value(result.structured_content, counts)
    elif isinstance(result, types.ReadResourceResult):
        update = {"contents": [engine.resource(c, counts) for c in result.contents]}
    else:
        messages = [m.model_copy(update={"content": engine.content(m.content, counts)}) for m in result.messages]
        update = {"messages": messages}
        if result.description is not None:
            update["description"] = engine.text(result.description, counts)
    if not counts:
        return result, {}
    return result.model_copy(update=update), dict(counts)


def redaction_label(decision: str, counts: Mapping[str, int], *, width: int = 128) -> str:
    """The audit log's decision for a call whose result was redacted: ``redact:email=2,jwt=1`` (SECURITY.md G6).

    ``decision`` (``allow``, ``approved:ID``) is returned as it is when nothing was redacted; an allowed call
    becomes ``redact:...``, any other gets ``+redact``. The label fits in ``width`` characters (the column's),
    dropping the counts, then the names, when it must.
    """
    if not counts:
        return decision
    head = "redact:" if decision == "allow" else f"{decision}+redact:"
    names = sorted(counts)
    for label_ in (
        head + ",".join(f"{n}={counts[n]}" for n in names),
        head + ",".join(names),
        f"{head}{sum(counts.values())}",
    ):
        if len(label_) <= width:
            return label_
    return f"{decision[: width - 7]}+redact"[:width]
