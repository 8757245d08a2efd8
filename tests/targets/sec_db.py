"""A startup around the database phase, for the secrets tests (tests/test_secrets.py).

The DSN comes from ``SMD_DATABASE_URL`` (settings), or from ``SEC_CODE_DSN``
when set (a DSN written in code, never seen by settings).
``SEC_TIMEOUT`` is the database phase's deadline (default 1 s).
``app`` is the same startup behind an ASGI lifespan, for uvicorn.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from smd import PhaseContext, Startup
from smd.asgi import smd_lifespan
from smd.phases import DatabasePhase

startup = Startup("sec-db")


@startup.phase
async def config(ctx: PhaseContext) -> str:
    return "loaded"


startup.add(
    DatabasePhase(
        os.environ.get("SEC_CODE_DSN") or None,
        requires=["config"],
        timeout=float(os.environ.get("SEC_TIMEOUT", "1")),
    )
)

# The app owns its process: smd's one log pipeline, so its lines are scanned too.
app = Starlette(lifespan=smd_lifespan(startup, configure_logging=True))
