"""The smd quickstart: config -> database -> (cache warm-up, background worker).

Run it with ``bash examples/run_quickstart.sh`` (starts a throwaway
PostgreSQL when ``SMD_DATABASE_URL`` is unset), or by hand::

    SMD_DATABASE_URL=postgresql://user:pw@localhost/app smd plan examples/quickstart.py:startup
    SMD_DATABASE_URL=postgresql://user:pw@localhost/app smd run examples/quickstart.py:startup

What it shows:

- waves: ``config`` and then ``database`` run alone; ``cache`` and ``worker``
  both need only the database, so they run at the same time (wave 2);
- the adaptive timeout: ``database`` uses :class:`smd.timeouts.AdaptiveTimeout`,
  learned from the history of earlier starts (``smd history`` shows it);
- a bypass decision: ``cache`` talks to a cache server at
  ``QUICKSTART_CACHE_ADDR`` (default ``127.0.0.1:6379``). When nothing listens
  there it fails with an *infrastructure* failure; in ``development``
  (permissive) startup continues degraded, in ``production`` (strict) it stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import anyio

from smd import Failure, FailureKind, PhaseContext, PhaseError, Startup
from smd.phases import DatabasePhase

startup = Startup("quickstart")


@dataclass(frozen=True)
class Config:
    """What the rest of the startup needs to know."""

    cache_host: str
    cache_port: int
    worker_interval: float


@startup.phase(timeout=2)
async def config(ctx: PhaseContext) -> Config:
    """Read the app's own configuration (smd's settings are in ctx.settings)."""
    host, _, port = os.environ.get("QUICKSTART_CACHE_ADDR", "127.0.0.1:6379").rpartition(":")
    return Config(cache_host=host or "127.0.0.1", cache_port=int(port), worker_interval=1.0)


startup.add(DatabasePhase(requires=["config"]))


async def _ping_cache(cfg: Config) -> None:
    try:
        with anyio.fail_after(1.0):
            stream = await anyio.connect_tcp(cfg.cache_host, cfg.cache_port)
    except OSError as exc:
        # Refused / unreachable: the dependency is not there *yet*, which is
        # an infrastructure failure - the bypass policy decides what it means.
        raise PhaseError(
            Failure(
                FailureKind.INFRASTRUCTURE,
                f"cache at {cfg.cache_host}:{cfg.cache_port} is not reachable: {exc}",
                cause=exc,
            )
        ) from exc
    await stream.aclose()


async def _recover_cache(ctx: PhaseContext) -> None:
    await _ping_cache(ctx.results["config"])


@startup.phase(requires=["config", "database"], timeout=3, recovery=_recover_cache)
async def cache(ctx: PhaseContext) -> str:
    """Warm the cache (a TCP ping here; a real app would preload keys)."""
    await _ping_cache(ctx["config"])
    return "warm"


async def _stop_worker(handle: dict[str, Any]) -> None:
    handle["running"] = False


@startup.phase(requires=["database"], timeout=5, teardown=_stop_worker)
async def worker(ctx: PhaseContext) -> dict[str, Any]:
    """Check the database works for the background worker, then hand it a handle."""
    db = ctx["database"]
    conn = await db.connect()
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    ctx.log.info("quickstart.worker.ready", server_version=version)
    return {"running": True, "server_version": version}
