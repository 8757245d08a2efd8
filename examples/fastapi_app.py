"""A FastAPI app whose startup smd runs, with health endpoints for Kubernetes.

Run it (from the repository root, with a PostgreSQL to talk to)::

    export SMD_DATABASE_URL=postgresql://app:secret@127.0.0.1:5432/app
    export SMD_ENVIRONMENT=development
    uvicorn examples.fastapi_app:app --port 8000

    curl -s localhost:8000/readyz      # {"check":"readyz","status":"ok","state":"ready",...}
    curl -s localhost:8000/version     # served from what the phases published

The startup has two phases that run at the same time (one wave):

- ``database``: :class:`smd.phases.DatabasePhase` waits until PostgreSQL answers
  (adaptive deadline learned from earlier starts; DSN from
  ``SMD_DATABASE_URL``) and publishes a :class:`smd.phases.Database` with a pool;
- ``cache``: warms an in-process lookup table the routes serve from.

If the database is down at start: in ``production`` (strict) uvicorn exits
non-zero with a STARTUP FAILED summary; in ``development`` (permissive)
the app serves *degraded* (``/readyz`` says why) while smd keeps probing the
database in the background, and moves to ``ready`` when it answers.

The same startup also works as a container entrypoint gate:
``smd run examples/fastapi_app.py:startup -- uvicorn examples.fastapi_app:app``
(see ``examples/Dockerfile``).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from smd import PhaseContext, Startup
from smd.asgi import health_router, phase_value, smd_lifespan
from smd.phases import Database, DatabasePhase, MigrationsPhase

startup = Startup("fastapi-example")

# Without a database, production (strict) stops; development (permissive) degrades.
startup.add(DatabasePhase(pool=True, pool_kwargs={"min_size": 1, "max_size": 4}))

# Once per fleet (extra `smd-startup[alembic]`), as examples/kubernetes.yaml
# deploys it (EXAMPLE_MIGRATIONS=upgrade): when the schema is behind, one
# replica runs `alembic upgrade head` under a PostgreSQL session advisory lock
# (SMD_FLEET_URL, by default SMD_DATABASE_URL); the others wait without
# holding a connection, then check the database is at head. At head, nobody
# takes the lock. Off by default: a laptop without the database's schema
# history, or one that starts degraded without its database, keeps the
# example to its two phases (a migration skipped behind a bypassed database
# would keep the service degraded until a restart).
if os.environ.get("EXAMPLE_MIGRATIONS") == "upgrade":
    startup.add(
        MigrationsPhase(
            Path(__file__).resolve().parent / "migrations",
            mode="upgrade",
            requires=["database"],
            timeout=60,
        )
    )


async def _clear_cache(table: dict[str, Any]) -> None:
    table.clear()


@startup.phase(timeout=5, teardown=_clear_cache)
async def cache(ctx: PhaseContext) -> dict[str, Any]:
    """Warm an in-process lookup table (a real app would load templates, models...)."""
    squares = {str(n): n * n for n in range(1000)}
    return {"squares": squares, "warmed_at": time.time()}


@asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """The app's own lifespan: runs after smd's phases, ends before their teardown."""
    yield {"app_started_at": time.time()}


app = FastAPI(
    title="smd FastAPI example",
    # The app is the container's process: smd sets up its one log pipeline
    # (JSON off a terminal; uvicorn's lines too). A library user leaves it out.
    lifespan=smd_lifespan(startup, lifespan=app_lifespan, configure_logging=True),
)
app.include_router(health_router())  # /startupz /readyz /livez


def _database(request: Request) -> Database | None:
    # The run's current value: also a database that recovered after startup.
    return phase_value(request, "database", Database, default=None)


def _unavailable(request: Request, what: str) -> JSONResponse:
    snapshot = request.state.readiness.snapshot()
    return JSONResponse(
        {
            "error": f"{what} is not available",
            "state": snapshot.state.value,
            "reasons": list(snapshot.reasons),
        },
        status_code=503,
    )


@app.get("/")
async def index(request: Request) -> dict[str, Any]:
    """What the startup published, read from the lifespan state."""
    run = request.state.smd
    return {
        "startup": run.startup.name,
        "state": request.state.readiness.state.value,
        "phases": sorted(run.values),
        "app_started_at": request.state.app_started_at,
        "cache_size": len(request.state.cache["squares"]),
    }


@app.get("/square/{n}")
async def square(n: int, request: Request) -> dict[str, int | None]:
    """Served from the table the ``cache`` phase warmed."""
    return {"n": n, "square": request.state.cache["squares"].get(str(n))}


@app.get("/version", response_model=None)
async def version(request: Request) -> dict[str, Any] | JSONResponse:
    """Asks PostgreSQL through the pool the ``database`` phase opened."""
    db = _database(request)
    if db is None or db.pool is None:
        return _unavailable(request, "the database")
    async with db.pool.acquire() as conn:
        server_version = await conn.fetchval("SHOW server_version")
    return {"server_version": server_version, "database": db.dsn}
