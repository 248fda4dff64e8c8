"""Pinned tool definitions (SECURITY.md G3): first sight is trusted, any later change waits for an admin.

A pin is stored under the server's name and :func:`pin_key` of the tool's name: the name itself whenever
the database can hold it, else a fixed-length digest of it, so whatever name an upstream reports can be
pinned on SQLite and PostgreSQL alike, and one odd tool never breaks the pinning of the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import mcp_types as types
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from portal.store import ToolPin, utcnow

__all__ = ["PinCheck", "PinStore", "pin_key", "tool_digest"]

_DIGEST_KEY = "#sha256:"
_MAX_KEY = 256  # ToolPin.tool is VARCHAR(256)


def tool_digest(tool: types.Tool) -> str:
    """SHA-256 over the canonical JSON of everything a client or model sees of a tool."""
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: an upstream's JSON may hold a lone surrogate (\ud800); it must be pinned, not crash.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def pin_key(name: str) -> str:
    """The key the pin of tool ``name`` is stored under (``ToolPin.tool``).

    The name itself, unless it is longer than 256 characters, holds a NUL or a lone surrogate (PostgreSQL
    text can hold neither), or starts with ``#sha256:``; then ``#sha256:`` and the hex SHA-256 of the name.
    Names kept as they are never start with ``#sha256:``, so two names never share a key.
    """
    if len(name) <= _MAX_KEY and "\0" not in name and not name.startswith(_DIGEST_KEY):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return name
    return _DIGEST_KEY + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class PinCheck:
    """The tools of one server split by their pin state."""

    approved: tuple[types.Tool, ...]
    withheld: tuple[types.Tool, ...]


class PinStore:
    """Reads and writes :class:`ToolPin` rows. Blocking: call from a worker thread on the request path."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _insert_new(self, conn: Connection, pin: ToolPin) -> bool:
        """Insert ``pin`` unless a pin with its key exists (another portal may have just written it)."""
        values = pin.model_dump()
        if conn.dialect.name == "postgresql":
            statement = postgresql.insert(ToolPin).values(values).on_conflict_do_nothing()
        else:
            statement = sqlite.insert(ToolPin).values(values).on_conflict_do_nothing()
        return conn.execute(statement).rowcount == 1

    def check(self, server: str, tools: Sequence[types.Tool]) -> PinCheck:
        """Pin new tools, and hold back tools whose definition differs from their pin.

        Portals sharing a database may run this at the same time: a tool both see for the first time is
        pinned once, by whichever writes first, and the other compares its tool with that pin.
        """
        approved: list[types.Tool] = []
        withheld: list[types.Tool] = []
        with Session(self._engine) as session:
            pins = {p.tool: p for p in session.exec(select(ToolPin).where(ToolPin.server == server)).all()}
            for tool in tools:
                key = pin_key(tool.name)
                digest = tool_digest(tool)
                definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
                pin = pins.get(key)
                if pin is None:
                    new = ToolPin(server=server, tool=key, digest=digest, definition=definition, pinned_at=utcnow())
                    if self._insert_new(session.connection(), new):
                        approved.append(tool)
                        continue
                    pin = pins[key] = session.exec(
                        select(ToolPin).where(ToolPin.server == server, ToolPin.tool == key)
                    ).one()
                if pin.digest == digest:
                    if pin.pending_digest is not None:  # the upstream went back to the approved definition
                        pin.pending_digest = pin.pending_definition = pin.pending_since = None
                        session.add(pin)
                    approved.append(tool)
                else:
                    if pin.pending_digest != digest:
                        pin.pending_digest = digest
                        pin.pending_definition = definition
                        pin.pending_since = utcnow()
                        session.add(pin)
                    withheld.append(tool)
            session.commit()
        return PinCheck(tuple(approved), tuple(withheld))

    def accept(self, server: str, tool: str | None = None) -> list[str]:
        """Approve the pending definitions of ``server`` (all, or just ``tool``); returns the accepted keys.

        A key is the tool's name unless the name cannot be stored as it is (see :func:`pin_key`).
        """
        accepted: list[str] = []
        with Session(self._engine) as session:
            query = select(ToolPin).where(ToolPin.server == server, ToolPin.pending_digest.is_not(None))  # pyright: ignore[reportOptionalMemberAccess,reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownArgumentType]
            if tool is not None:
                query = query.where(ToolPin.tool == pin_key(tool))
            for pin in session.exec(query).all():
                assert pin.pending_digest is not None and pin.pending_definition is not None
                pin.digest = pin.pending_digest
                pin.definition = pin.pending_definition
                pin.pinned_at = utcnow()
                pin.pending_digest = pin.pending_definition = pin.pending_since = None
                session.add(pin)
                accepted.append(pin.tool)
            session.commit()
        return sorted(accepted)

    def pending(self, server: str | None = None) -> list[ToolPin]:
        """Pins with a changed definition awaiting approval (``tool`` holds each one's :func:`pin_key`)."""
        with Session(self._engine) as session:
            query = select(ToolPin).where(ToolPin.pending_digest.is_not(None))  # pyright: ignore[reportOptionalMemberAccess,reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownArgumentType]
            if server is not None:
                query = query.where(ToolPin.server == server)
            return list(session.exec(query.order_by(ToolPin.server, ToolPin.tool)).all())  # pyright: ignore[reportArgumentType]
