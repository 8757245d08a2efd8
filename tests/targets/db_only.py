"""A startup with just a `DatabasePhase`, for the fault-matrix and learning tests.

The DSN comes from settings (``SMD_DATABASE_URL``); the timeout is the
adaptive policy with the environment's bounds (``SMD_TIMEOUTS__<ENV>__*``)
and the bypass policy is the environment's matrix (``SMD_BYPASS__MODE``
forces a mode), so every knob the tests turn is an ordinary setting.
"""

from __future__ import annotations

from smd import Startup
from smd.phases.database import DatabasePhase

startup = Startup("db_only")
startup.add(DatabasePhase())
