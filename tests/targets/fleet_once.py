"""A startup with one once-per-fleet phase, for `smd run` fleet tests and benchmarks/fleet.py.

``migrate`` is declared ``once=True``: the engine runs it through the fleet
coordinator the settings name (``SMD_FLEET_URL``, else ``SMD_DATABASE_URL``),
in one replica at a time, and skips it (outcome ``ok``, the report's
``note`` saying by whom and when) once a replica completed it.
``SMDTEST_ONCE_KEY`` is its ``once_key``.

The work records itself in a table (``SMDTEST_ONCE_TABLE``: ``key, who,
event, at``): a ``started`` row when it begins (committed at once), then,
after ``SMDTEST_ONCE_SLEEP`` seconds, ``completed`` -- or it raises when
``SMDTEST_ONCE_FAIL=1``. ``who`` is ``hostname:pid``, the identity the
coordinator records as ``done_by``.
"""

from __future__ import annotations

import os

import anyio
import asyncpg

from smd import PhaseContext, Startup

KEY = os.environ.get("SMDTEST_ONCE_KEY", "fleet_once/migrate")
TABLE = os.environ.get("SMDTEST_ONCE_TABLE", "once_runs")
SLEEP = float(os.environ.get("SMDTEST_ONCE_SLEEP", "0.5"))
FAIL = os.environ.get("SMDTEST_ONCE_FAIL") == "1"
TIMEOUT = float(os.environ.get("SMDTEST_ONCE_TIMEOUT", "60"))
WHO = f"{os.uname().nodename}:{os.getpid()}"

startup = Startup("fleet_once")


async def mark(event: str) -> None:
    # The work's own connection (a migration's would be): 30 replicas polling a
    # 50-slot test server may fill it for a moment, so ride that out.
    for attempt in range(100):
        try:
            conn = await asyncpg.connect(os.environ["SMD_DATABASE_URL"])
            break
        except asyncpg.TooManyConnectionsError:
            await anyio.sleep(0.05 * (1 + attempt % 4))
    else:
        raise RuntimeError("no connection slot for the once work's bookkeeping")
    try:
        await conn.execute(
            f"INSERT INTO {TABLE} (key, who, event) VALUES ($1, $2, $3)", KEY, WHO, event
        )
    finally:
        await conn.close()


@startup.phase(once=True, once_key=KEY, timeout=TIMEOUT)
async def migrate(ctx: PhaseContext) -> str:
    """The once-per-fleet work (a migration)."""
    await mark("started")
    await anyio.sleep(SLEEP)
    if FAIL:
        raise RuntimeError("the once work failed on purpose")
    await mark("completed")
    return WHO
