"""Litestar: ``lifespan=[smd_lifespan(startup)]``, and the health app on its three paths."""

from __future__ import annotations

from typing import Any

from fw_common import startup, version_of
from litestar import Litestar, Request, Response, get
from litestar.handlers import asgi

from smd.asgi import health_app, phase_value, smd_lifespan
from smd.phases import Database


@get("/version")
async def version(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    db = phase_value(request, "database", Database, default=None)
    in_state = isinstance(getattr(request.state, "database", None), Database)
    status, body = await version_of(db, in_state)
    return Response(body, status_code=status)


health = asgi(["/startupz", "/readyz", "/livez"])(health_app())
app = Litestar(
    route_handlers=[version, health], lifespan=[smd_lifespan(startup, configure_logging=True)]
)
