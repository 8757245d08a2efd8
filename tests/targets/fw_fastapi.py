"""FastAPI wrapped by ``with_lifespan`` (its own lifespan runs inside): a failed start is one line."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fw_common import startup, version_of

from smd.asgi import phase_value, smd_lifespan, with_lifespan
from smd.phases import Database

fastapi_app = FastAPI()


@fastapi_app.get("/version", response_model=None)
async def version(request: Request) -> JSONResponse:
    db = phase_value(request, "database", Database, default=None)
    in_state = isinstance(getattr(request.state, "database", None), Database)
    status, body = await version_of(db, in_state)
    return JSONResponse(body, status_code=status)


app: Any = with_lifespan(fastapi_app, lifespan=smd_lifespan(startup, configure_logging=True))
