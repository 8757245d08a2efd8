"""Ready-made phases that compose a check, a timeout policy and a bypass policy.

``from phases import DatabasePhase``. Importing this package does not import
asyncpg: the check loads it when a probe runs.
"""

from __future__ import annotations

from phases.database import Database, DatabasePhase

__all__ = ["Database", "DatabasePhase"]
