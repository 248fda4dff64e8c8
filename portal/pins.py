"""Pinned tool definitions (SECURITY.md G3): first sight is trusted, any later change waits for an admin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import mcp_types as types
from sqlalchemy import Engine
from sqlmodel import Session, select

from portal.store import ToolPin, utcnow

__all__ = ["PinCheck", "PinStore", "tool_digest"]


def tool_digest(tool: types.Tool) -> str:
    """SHA-256 over the canonical JSON of everything a client or model sees of a tool."""
    data = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PinCheck:
    """The tools of one server split by their pin state."""

    approved: tuple[types.Tool, ...]
    withheld: tuple[types.Tool, ...]


class PinStore:
    """Reads and writes :class:`ToolPin` rows. Blocking: call from a worker thread on the request path."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def check(self, server: str, tools: Sequence[types.Tool]) -> PinCheck:
        """Pin new tools, and hold back tools whose definition differs from their pin."""
        approved: list[types.Tool] = []
        withheld: list[types.Tool] = []
        with Session(self._engine) as session:
            pins = {p.tool: p for p in session.exec(select(ToolPin).where(ToolPin.server == server)).all()}
            dirty = False
            for tool in tools:
                digest = tool_digest(tool)
                definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
                pin = pins.get(tool.name)
                if pin is None:
                    session.add(ToolPin(server=server, tool=tool.name, digest=digest, definition=definition))
                    dirty = True
                    approved.append(tool)
                elif pin.digest == digest:
                    if pin.pending_digest is not None:  # the upstream went back to the approved definition
                        pin.pending_digest = pin.pending_definition = pin.pending_since = None
                        session.add(pin)
                        dirty = True
                    approved.append(tool)
                else:
                    if pin.pending_digest != digest:
                        pin.pending_digest = digest
                        pin.pending_definition = definition
                        pin.pending_since = utcnow()
                        session.add(pin)
                        dirty = True
                    withheld.append(tool)
            if dirty:
                session.commit()
        return PinCheck(tuple(approved), tuple(withheld))

    def accept(self, server: str, tool: str | None = None) -> list[str]:
        """Approve the pending definitions of ``server`` (all, or just ``tool``); returns the accepted names."""
        accepted: list[str] = []
        with Session(self._engine) as session:
            query = select(ToolPin).where(ToolPin.server == server, ToolPin.pending_digest.is_not(None))  # pyright: ignore[reportOptionalMemberAccess,reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownArgumentType]
            if tool is not None:
                query = query.where(ToolPin.tool == tool)
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
        """Pins with a changed definition awaiting approval."""
        with Session(self._engine) as session:
            query = select(ToolPin).where(ToolPin.pending_digest.is_not(None))  # pyright: ignore[reportOptionalMemberAccess,reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownArgumentType]
            if server is not None:
                query = query.where(ToolPin.server == server)
            return list(session.exec(query.order_by(ToolPin.server, ToolPin.tool)).all())  # pyright: ignore[reportArgumentType]
