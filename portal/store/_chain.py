"""The hash chain that makes the audit log tamper-evident (SECURITY.md G6).

Each record stores ``prev_hash``, the ``hash`` of the record before it (``GENESIS`` for the first), and
``hash``, the SHA-256 of a canonical encoding of its fields followed by ``prev_hash``. Records are chained
in ``id`` order, so editing a record, deleting one or moving one breaks the chain at a known record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["CHAINED_FIELDS", "GENESIS", "ChainBreak", "chain_hash", "find_break"]

GENESIS = "0" * 64
"""The ``prev_hash`` of the first record of the chain."""

CHAINED_FIELDS = (
    "at",
    "principal",
    "client",
    "method",
    "target",
    "server",
    "upstream_target",
    "arguments_digest",
    "decision",
    "status",
    "error",
    "latency_ms",
    "bytes_in",
    "bytes_out",
)
"""The fields a record's hash covers, in the order they are encoded. Changing it needs a new migration."""

_FLOATS = frozenset({"latency_ms"})
_INTS = frozenset({"bytes_in", "bytes_out"})


def _canonical_time(value: datetime | str) -> str:
    if isinstance(value, str):  # from an export: parse so every spelling of one instant encodes alike
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_value(name: str, value: Any) -> object:
    if value is None:
        return None
    if name == "at":
        return _canonical_time(value)
    if name in _FLOATS:
        return float(value)  # 0 and 0.0 are one value, whichever way it was written
    if name in _INTS:
        return int(value)
    return str(value)


def chain_hash(record: Mapping[Any, Any], prev_hash: str) -> str:
    """The hash of ``record`` (a mapping with the ``CHAINED_FIELDS``) when it follows ``prev_hash``."""
    values = [_canonical_value(name, record.get(name)) for name in CHAINED_FIELDS]
    encoded = json.dumps(values, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()
    return hashlib.sha256(encoded + b"\n" + prev_hash.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why."""

    id: int
    reason: str
    after: int | None = None
    """For a lost link: the id of the record this one should follow."""

    def render(self) -> str:
        """``record ID: reason``."""
        return f"record {self.id}: {self.reason}"


def find_break(records: Iterable[Mapping[Any, Any]]) -> tuple[ChainBreak | None, int, Mapping[Any, Any] | None]:
    """Walk ``records`` in chain (``id``) order; returns the first break, the count checked and the last record.

    A break that a lost link explains is reported with the id of the record that no longer follows its
    predecessor; ``reason`` says whether the record's own content was edited, or whether records before it
    were deleted or reordered (a caller with the whole table can tell which by finding the predecessor).
    """
    previous: Mapping[Any, Any] | None = None
    count = 0
    for record in records:
        rid = int(record["id"])
        stored, prev = record.get("hash"), record.get("prev_hash")
        if not stored or not prev:
            return ChainBreak(rid, "has no hash: it was written outside the audit log"), count, previous
        if chain_hash(record, prev) != stored:
            return ChainBreak(rid, "was edited: its content does not match its hash"), count, previous
        expected = GENESIS if previous is None else str(previous["hash"])
        if prev != expected:
            if previous is None:
                reason = "should start the chain but follows another record: earlier records were deleted"
                return ChainBreak(rid, reason), count, previous
            after = int(previous["id"])
            reason = f"does not follow record {after}: records between them were deleted or reordered"
            return ChainBreak(rid, reason, after), count, previous
        previous = record
        count += 1
    return None, count, previous
