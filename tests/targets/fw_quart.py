"""Quart: the app wrapped by ``with_lifespan``; its own ``before_serving`` hooks run inside."""

from __future__ import annotations

from typing import Any

from fw_common import startup, version_of
from quart import Quart, request

from smd.asgi import phase_value, smd_lifespan, with_lifespan
from smd.phases import Database

quart_app = Quart(__name__)
serving: list[str] = []


@quart_app.before_serving
async def own_startup() -> None:  # runs after the phases
    serving.append("serving")


@quart_app.get("/version")
async def version() -> tuple[dict[str, Any], int]:
    db = phase_value(request, "database", Database, default=None)
    in_state = isinstance(request.scope.get("state", {}).get("database"), Database)
    status, body = await version_of(db, in_state)
    return {**body, "own_startup_ran": serving == ["serving"]}, status


app = with_lifespan(quart_app, lifespan=smd_lifespan(startup, configure_logging=True))
