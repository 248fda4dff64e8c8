"""Storage: SQLModel tables on SQLite (WAL) or PostgreSQL, one schema, versioned migrations."""

from portal.store._engine import open_engine
from portal.store._migrations import MIGRATIONS, migrate
from portal.store._models import AuditRecord, SchemaVersion, ToolPin, UpstreamStatus, utcnow

__all__ = [
    "MIGRATIONS",
    "AuditRecord",
    "SchemaVersion",
    "ToolPin",
    "UpstreamStatus",
    "migrate",
    "open_engine",
    "utcnow",
]
