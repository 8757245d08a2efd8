"""Ready-made phases that compose a check, a timeout policy and a bypass policy.

``from smd.phases import DatabasePhase, CheckPhase, MigrationsPhase``. Each
name is imported on first use: a startup that waits for its database does
not load Alembic's phase (and the fleet's lock and history code it needs),
and nothing here imports asyncpg (the PostgreSQL check loads it when a probe
runs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smd.phases.check import CheckPhase
    from smd.phases.database import Database, DatabasePhase
    from smd.phases.migrations import MigrationsPhase, MigrationState

__all__ = ["CheckPhase", "Database", "DatabasePhase", "MigrationState", "MigrationsPhase"]

_HOME = {
    "CheckPhase": "smd.phases.check",
    "Database": "smd.phases.database",
    "DatabasePhase": "smd.phases.database",
    "MigrationState": "smd.phases.migrations",
    "MigrationsPhase": "smd.phases.migrations",
}


def __getattr__(name: str) -> Any:
    """The public phases, imported from their module on first use."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'smd.phases' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
