"""Ready-made phases that compose a check, a timeout policy and a bypass policy.

``from smd.phases import DatabasePhase, CheckPhase, MigrationsPhase``. Importing this package
does not import asyncpg: the PostgreSQL check loads it when a probe runs.
"""

from __future__ import annotations

from smd.phases.check import CheckPhase
from smd.phases.database import Database, DatabasePhase
from smd.phases.migrations import MigrationsPhase, MigrationState

__all__ = ["CheckPhase", "Database", "DatabasePhase", "MigrationState", "MigrationsPhase"]
