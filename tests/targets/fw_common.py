"""The startup every framework target serves: PostgreSQL (``SMD_DATABASE_URL``), one phase.

``database`` is :class:`smd.phases.DatabasePhase` (no pool): strict in
``production`` (a refused database fails the start), bypassed in
``development`` and probed in the background until it answers.
"""

from __future__ import annotations

from typing import Any

from smd import Startup
from smd.phases import Database, DatabasePhase

startup = Startup("frameworks")
startup.add(DatabasePhase())


async def version_of(db: Database | None, in_request_state: bool) -> tuple[int, dict[str, Any]]:
    """What ``/version`` answers: the server version, through the phase's value."""
    if db is None:
        return 503, {"error": "the database is not available"}
    conn = await db.connect()
    try:
        server_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return 200, {"server_version": server_version, "request_state": in_request_state}
