"""A startup whose one phase is `MigrationsPhase` over tests/alembic_env (three revisions).

``SMDTEST_MIGRATIONS_MODE`` is ``upgrade`` (default) or ``wait``;
``SMDTEST_MIGRATIONS_TIMEOUT`` the phase's timeout (default 60 s). The
database is ``SMD_DATABASE_URL``; the fleet coordinator uses it too unless
``SMD_FLEET_URL`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

from smd import Startup
from smd.phases.migrations import MigrationsPhase

ALEMBIC_ENV = Path(__file__).resolve().parent.parent / "alembic_env"

startup = Startup("fleet_migrate")
startup.add(
    MigrationsPhase(
        ALEMBIC_ENV,
        mode="wait" if os.environ.get("SMDTEST_MIGRATIONS_MODE") == "wait" else "upgrade",
        timeout=float(os.environ.get("SMDTEST_MIGRATIONS_TIMEOUT", "60")),
    )
)
