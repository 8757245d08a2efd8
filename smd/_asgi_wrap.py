""":func:`with_lifespan`: the smd lifespan, health endpoints and state around any ASGI app.

For an app whose framework has no ``lifespan=`` of its own (Django's ASGI
handler refuses the lifespan protocol; Quart has only its serving hooks), the
wrapper answers the server's ``lifespan`` scope itself by running the smd
lifespan, serves ``/startupz`` ``/readyz`` ``/livez`` (the same
:func:`~smd.asgi.health_app` as everywhere), and hands every HTTP and
WebSocket request to the app with ``scope["state"]`` holding the live
lifespan state, so :func:`~smd.asgi.phase_value` (and ``request.state``
where the framework has one) sees the phases' values.

The app's own lifespan, when it speaks the protocol (Quart's
``before_serving`` / ``while_serving`` hooks, a Starlette app), runs inside:
after the phases, and shut down before their teardown. An app that refuses
the lifespan scope (it raises or returns without answering, as Django's
does) is taken as not supporting it, as uvicorn's ``--lifespan auto`` does.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio

from smd._asgi_state import RUN_STATE_KEY, catch_up
from smd._asgi_types import ASGIApp, Receive, Scope, Send
from smd._health import CHECKS, health_app, route_path
from smd.exceptions import StartupFailed, StartupInterrupted

__all__ = ["did_not_start", "quiet_server_traceback", "with_lifespan"]


def did_not_start(exc: StartupFailed | StartupInterrupted) -> str:
    """The one line a server logs for a start smd stopped (the summary is on stderr already)."""
    name, code = exc.report.startup, exc.report.exit_code()
    return f"smd: startup {name!r} did not start (exit code {code}); see the summary above"


#: The server logger that prints the text of ``lifespan.startup.failed``
#: (uvicorn logs the message a framework sends, at error level).
_SERVER_LOGGER = "uvicorn.error"


def quiet_server_traceback(exc: StartupFailed | StartupInterrupted) -> None:
    """Have the server log :func:`did_not_start` instead of the traceback of ``exc``.

    Starlette (and so FastAPI) answers a lifespan that raised with
    ``lifespan.startup.failed`` carrying ``traceback.format_exc()``, which
    uvicorn logs: some 25 lines of exception group after smd's own summary,
    saying nothing the summary does not. A one-shot filter on uvicorn's
    logger rewrites that one record (a traceback naming this exception) into
    the one line, then removes itself; every other record, and the host's
    logging configuration, stay as they are. Not installed when smd logs at
    debug level: then the traceback is wanted.
    """
    logger = logging.getLogger(_SERVER_LOGGER)
    # The traceback's last line names this very exception and its message: a
    # record about any other failure (or an earlier start's) is left alone.
    first = str(exc).splitlines()[0] if str(exc) else ""
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: {first[:120]}"
    line = did_not_start(exc)
    for old in [f for f in logger.filters if isinstance(f, _OneLine)]:
        logger.removeFilter(old)  # one pending rewrite per logger, the latest start's
    logger.addFilter(_OneLine(logger, marker, line))


class _OneLine(logging.Filter):
    """Rewrites the one traceback record it is waiting for, then removes itself."""

    def __init__(self, logger: logging.Logger, marker: str, line: str) -> None:
        super().__init__()
        self._logger, self._marker, self._line = logger, marker, line

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg
        if isinstance(text, str) and "Traceback" in text and self._marker in text:
            record.msg, record.args, record.exc_info = self._line, (), None
            self._logger.removeFilter(self)
        return True


InnerLifespan = Literal["auto", "on", "off"]


class LifespanRefused(Exception):
    """The wrapped app's own lifespan did not start (it answered ``startup.failed``)."""


@asynccontextmanager
async def _inner_lifespan(
    app: Callable[..., Awaitable[Any]], state: dict[str, Any], mode: InnerLifespan
) -> AsyncIterator[None]:
    """Drive ``app``'s own lifespan protocol as an async context manager."""
    if mode == "off":
        yield
        return
    # Four messages at most travel each way (startup, shutdown and their answers).
    to_app, app_receives = anyio.create_memory_object_stream[MutableMapping[str, Any]](4)
    app_sends, from_app = anyio.create_memory_object_stream[MutableMapping[str, Any]](4)
    errors: list[Exception] = []

    async def run() -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
        }
        async with app_sends:
            try:
                await app(scope, app_receives.receive, app_sends.send)
            except Exception as exc:  # the app's way of saying "not supported", or a bug
                errors.append(exc)

    async def answer() -> MutableMapping[str, Any] | None:
        try:
            return await from_app.receive()
        except anyio.EndOfStream:  # the app returned (or raised) without answering
            return None

    error: Exception | None = None
    async with to_app, app_receives, from_app, anyio.create_task_group() as tg:
        try:
            tg.start_soon(run)
            await to_app.send({"type": "lifespan.startup"})
            got = await answer()
            if got is None:
                if mode == "on":
                    raise LifespanRefused(
                        "the app did not answer the lifespan startup"
                        + (f": {errors[0]!r}" if errors else "")
                    )
                yield  # "auto": the app has no lifespan; serve it as it is
                return
            if got["type"] != "lifespan.startup.complete":
                raise LifespanRefused(f"the app's own lifespan failed: {got.get('message', '')}")
            try:
                yield
            finally:
                await to_app.send({"type": "lifespan.shutdown"})
                got = await answer()
                if got is not None and got["type"] != "lifespan.shutdown.complete":
                    raise LifespanRefused(
                        f"the app's own shutdown failed: {got.get('message', '')}"
                    )
        except Exception as exc:
            # Raised in the task group's host it would come out wrapped in an
            # ExceptionGroup; and an app may still wait for a message (Quart
            # does after a failed startup): stop it.
            error = exc
            tg.cancel_scope.cancel()
    if error is not None:
        raise error


def with_lifespan(
    app: Callable[..., Awaitable[Any]],
    *,
    lifespan: Any,
    health: bool = True,
    health_prefix: str = "",
    inner_lifespan: InnerLifespan = "auto",
) -> ASGIApp:
    """``app`` served with ``lifespan`` (e.g. ``smd_lifespan(startup)``), health and state.

    ::

        from django.core.asgi import get_asgi_application
        from smd.asgi import smd_lifespan, with_lifespan

        application = with_lifespan(get_asgi_application(), lifespan=smd_lifespan(startup))

    ``lifespan``: ``lifespan(app)`` returning an async context manager that
    may yield a state mapping (what :func:`~smd.asgi.smd_lifespan` returns).
    ``health``: serve ``{health_prefix}/startupz``, ``/readyz`` and ``/livez``
    before the app sees the request (other paths all go to the app).
    ``inner_lifespan``: whether the app's own lifespan protocol runs inside:
    ``"auto"`` (default) when it answers, ``"on"`` (an app that does not
    answer fails the startup), ``"off"``.

    A failed startup answers the server ``lifespan.startup.failed`` with one
    line (smd's summary is already on stderr), so uvicorn exits non-zero
    without a traceback.
    """
    if not callable(lifespan):
        raise TypeError(f"with_lifespan needs lifespan=smd_lifespan(startup), got {lifespan!r}")
    if inner_lifespan not in ("auto", "on", "off"):
        raise ValueError(f"inner_lifespan must be 'auto', 'on' or 'off', got {inner_lifespan!r}")
    prefix = "/" + health_prefix.strip("/") if health_prefix.strip("/") else ""
    health_paths = {f"{prefix}/{check}": check for check in CHECKS}
    endpoints = health_app()
    # The live lifespan state: what the lifespan yielded, plus the values of
    # phases that recovered since (caught up before each request).
    live: dict[str, Any] = {}

    async def serve_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        started = False
        try:
            async with lifespan(app) as own:
                state = own if isinstance(own, dict) else dict(own or {})
                live.clear()
                live.update(state)
                async with _inner_lifespan(app, state, inner_lifespan):
                    live.update(state)  # what the app's own lifespan added
                    server_state = scope.get("state")
                    if isinstance(server_state, dict):  # the server's copy, for others
                        server_state.update(state)
                    await send({"type": "lifespan.startup.complete"})
                    started = True
                    await receive()  # lifespan.shutdown
        except (StartupFailed, StartupInterrupted) as exc:
            # The summary is on stderr already: one line, no traceback.
            # (Only the start raises these; a teardown's errors come as they are.)
            await send({"type": "lifespan.startup.failed", "message": did_not_start(exc)})
            return
        except Exception as exc:
            kind = "shutdown" if started else "startup"
            text = str(exc) if isinstance(exc, LifespanRefused) else traceback.format_exc()
            await send({"type": f"lifespan.{kind}.failed", "message": text})
            return
        finally:
            live.clear()
        await send({"type": "lifespan.shutdown.complete"})

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await serve_lifespan(scope, receive, send)
            return
        if kind in ("http", "websocket"):
            run = live.get(RUN_STATE_KEY)
            if run is not None:
                catch_up(live, run)  # a phase that recovered since the last request
            given = scope.get("state")
            state = {**(given if isinstance(given, Mapping) else {}), **live}
            scope = {**scope, "state": state}
            check = health_paths.get(route_path(scope)) if health and kind == "http" else None
            if check is not None:
                await endpoints({**scope, "path": f"/{check}", "root_path": ""}, receive, send)
                return
        await app(scope, receive, send)

    return wrapped
