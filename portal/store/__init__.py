"""Storage: SQLModel tables on SQLite (WAL) or PostgreSQL, one schema, versioned migrations."""

from portal.store._chain import CHAINED_FIELDS, GENESIS, ChainBreak, chain_hash, find_break
from portal.store._engine import open_engine
from portal.store._migrations import MIGRATIONS, migrate
from portal.store._models import (
    ApprovalRecord,
    AuditRecord,
    PausedRun,
    RateCounter,
    SchemaVersion,
    ToolPin,
    UpstreamStatus,
    utcnow,
)

__all__ = [
    "CHAINED_FIELDS",
    "GENESIS",
    "MIGRATIONS",
    "ApprovalRecord",
    "AuditRecord",
    "ChainBreak",
    "PausedRun",
    "RateCounter",
    "SchemaVersion",
    "ToolPin",
    "UpstreamStatus",
    "chain_hash",
    "find_break",
    "migrate",
    "open_engine",
    "utcnow",
]
