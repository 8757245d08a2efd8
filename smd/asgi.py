"""smd inside an ASGI app: a lifespan, health endpoints, the phases' values for routes.

::

    from fastapi import FastAPI
    from smd.asgi import health_router, smd_lifespan

    app = FastAPI(lifespan=smd_lifespan(startup, lifespan=my_own_lifespan))
    app.include_router(health_router())   # /startupz /readyz /livez

    @app.get("/items")
    async def items(request: Request):
        db = request.state.database        # the value the "database" phase returned
        ...

The lifespan runs the startup before the server takes traffic, publishes the
values phases returned in the lifespan state (``request.state.<phase>``) and
on ``app.state``, keeps probing bypassed dependencies in the background (a
recovered value reaches ``app.state`` and the requests that arrive after it;
:func:`phase_value` reads the run itself, so it is always current), and
at shutdown tears down in reverse: the app's own lifespan first, then the
phases. A failed startup raises, so the server (uvicorn) exits non-zero, with
the STARTUP FAILED summary logged as ``smd.startup.failed`` and printed on
stderr. SIGTERM / SIGINT while the phases run cancels them, tears down what
started, and lets the server exit.

:func:`smd_lifespan` plugs into a framework's ``lifespan=`` (FastAPI,
Starlette, Litestar's ``lifespan=[...]``); :func:`with_lifespan` wraps any
other ASGI app (Django, Quart) to drive it, serve health and fill
``scope["state"]``.

Nothing here imports a web framework at import time (``health_router``
imports FastAPI when called).
"""

from __future__ import annotations

import inspect
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from smd import _logging, prometheus
from smd._asgi_state import RUN_STATE_KEY, catch_up, live_state, phase_value
from smd._asgi_wrap import quiet_server_traceback, with_lifespan
from smd._health import (
    CHECKS,
    HEALTH_STATE_KEY,
    HealthBinding,
    HealthSource,
    evaluate,
    health_app,
    metrics_endpoint,
    resolve,
)
from smd._lifecycle import lifecycle
from smd._open_store import open_store
from smd._report import Report
from smd._run import StartupRun
from smd._settings import Settings
from smd._settings_load import load_settings
from smd._signals import Interruption, catch_signals
from smd._startup import Startup
from smd._store import HistoryStore
from smd._systemd import SystemdNotifier
from smd.events import Observer
from smd.exceptions import StartupFailed, StartupInterrupted

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "AppLifespan",
    "StartupInterrupted",
    "health_app",
    "health_router",
    "phase_value",
    "smd_lifespan",
    "with_lifespan",
]

#: An app's own lifespan: ``lifespan(app)`` returning an async context manager
#: that may yield a state mapping (Starlette's contract).
AppLifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def _announce(report: Report, log: Any) -> None:
    summary = report.summary()
    log.error(
        "smd.startup.failed",
        state=report.state.value,
        exit_code=report.exit_code(),
        interrupted=report.interrupted,
        summary=summary,
    )
    # Also as a plain block on stderr: the first thing an operator reads in
    # `kubectl logs`, whatever the log format.
    print(summary, file=sys.stderr, flush=True)


def _as_factory(lifespan: Any) -> AppLifespan | None:
    if lifespan is None:
        return None
    if inspect.isasyncgenfunction(lifespan):  # Starlette's older generator style
        factory: AppLifespan = asynccontextmanager(lifespan)
        return factory
    if not callable(lifespan):
        raise TypeError(f"lifespan must be callable as lifespan(app), got {lifespan!r}")
    checked: AppLifespan = lifespan
    return checked


def _publish(app: Any, values: Mapping[str, Any]) -> None:
    state = getattr(app, "state", None)
    if state is None:
        return
    for key, value in values.items():
        setattr(state, key, value)


def smd_lifespan(
    startup: Startup,
    *,
    settings: Settings | None = None,
    store: HistoryStore | None = None,
    degraded_ready: bool = True,
    lifespan: AppLifespan | None = None,
    state_key: str = "smd",
    record_history: bool | None = None,
    configure_logging: bool = False,
    handle_signals: bool = True,
    **options: Any,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan (``FastAPI(lifespan=...)``, ``Starlette(lifespan=...)``) that runs ``startup``.

    The lifespan state (``request.state`` in every request, and ``app.state``)
    holds ``state_key`` (``"smd"``: the :class:`~smd.StartupRun`, with
    ``.report`` and ``.values``; also under ``"smd.run"``, where
    :func:`phase_value` finds it), ``readiness`` (the readiness state machine
    the health endpoints read) and, under each phase's name, the value that
    phase returned (phases that did not end ``ok`` are absent until they
    recover: a recovered value is added to the state, so requests that arrive
    afterwards see it, and to ``app.state``). The app's own
    ``lifespan`` runs inside, after the phases and before the teardown; what
    it yields is merged into the state.

    ``degraded_ready``: whether ``/readyz`` says 200 while degraded (default
    yes: the service works, without some dependency). ``record_history``
    (default: yes, except when launched by ``smd run``, which already
    recorded this start) lets the learned timeouts use this run.
    ``configure_logging`` (default no: smd's events go to the ``smd`` logger and
    the app's logging configuration decides, see :mod:`smd._logging`) makes
    smd set up the process's logging from the settings instead: one format
    (``SMD_LOG_FORMAT``) for smd's events, the app's stdlib records and the
    server's own (uvicorn, gunicorn, hypercorn), at ``SMD_LOG_LEVEL``.
    ``handle_signals``: SIGTERM / SIGINT / SIGHUP while the phases run cancel
    them (the server's own handler still runs). ``options`` go to :func:`smd.lifecycle` (``mode``, ``policy``,
    ``clock``, ``observers``...).

    A failed startup raises :class:`~smd.StartupFailed` (a signal during
    startup: :class:`StartupInterrupted`) after logging ``smd.startup.failed``
    with the summary and printing it on stderr; under uvicorn the server then
    logs one line instead of the traceback Starlette formats (all of it at
    ``SMD_LOG_LEVEL=debug``).
    """
    if not isinstance(startup, Startup):
        raise TypeError(f"smd_lifespan needs a smd.Startup, got {type(startup).__name__}")
    if "configure_logs" in options:
        raise TypeError(
            "smd_lifespan has no configure_logs=: smd leaves the app's logging alone unless "
            "configure_logging=True"
        )
    startup.plan()  # an invalid plan fails at import, naming the culprit
    app_lifespan = _as_factory(lifespan)
    for reserved in ("readiness", HEALTH_STATE_KEY, RUN_STATE_KEY):
        if state_key == reserved:
            raise ValueError(f"state_key {state_key!r} is reserved")

    @asynccontextmanager
    async def lifespan_context(app: Any) -> AsyncIterator[dict[str, Any]]:
        cfg = settings if settings is not None else load_settings()
        if configure_logging:
            _logging.configure_logging(cfg.log_format, cfg.log_level, servers=True)
        log = _logging.get_logger("smd", startup=startup.name)
        history = store
        if history is None:
            import os

            gated = os.environ.get("SMD_STARTUP_STATE") is not None
            write = record_history if record_history is not None else not gated
            history = open_store(cfg, readonly=not write)
        run_options = dict(options)
        recover = bool(run_options.pop("recover", True))
        # What a served app gets besides: metrics for /metrics (prometheus
        # extra installed) and systemd's notify protocol (NOTIFY_SOCKET set).
        metrics = prometheus.observer()
        notifier = SystemdNotifier()
        service: list[Observer] = [o for o in (metrics, notifier) if o is not None]
        if not notifier.enabled:
            service.remove(notifier)

        run = StartupRun(
            startup,
            settings=cfg,
            store=history,
            log=log,
            observers=[*run_options.pop("observers", ()), *service],
            **run_options,
        )
        # Published before the phases run: whatever reads app.state (a health
        # app served apart, a test) sees "starting", then the verdict, also
        # after a failed startup.
        smd_state: dict[str, Any] = {
            state_key: run,
            "readiness": run.readiness,
            HEALTH_STATE_KEY: HealthBinding(run.readiness, degraded_ready),
            RUN_STATE_KEY: run,
        }
        _publish(app, smd_state)
        interruption = Interruption()
        interrupted: StartupInterrupted | None = None
        with catch_signals(interruption, enabled=handle_signals):
            try:
                async with lifecycle(run, recover=recover, interruption=interruption):
                    state = dict(run.values)
                    for key in state.keys() & smd_state.keys():
                        log.warning(
                            "smd.asgi.state_shadowed",
                            phase=key,
                            hint=f"reserved name; read it as request.state.{state_key}"
                            f".values[{key!r}]",
                        )
                    state.update(smd_state)
                    _publish(app, state)

                    def refresh() -> Mapping[str, Any]:
                        # A phase that recovered in the background: its value goes
                        # into the yielded dict and app.state before the next
                        # request reads them (never over a key already there).
                        late = catch_up(state, run)
                        if late:
                            _publish(app, late)
                        return state

                    try:
                        with live_state(app, refresh):
                            if app_lifespan is None:
                                yield state
                            else:
                                async with app_lifespan(app) as own:
                                    if own:
                                        state.update(own)
                                        _publish(app, own)
                                    yield state
                    finally:
                        notifier.stopping()  # before teardown: systemd shows "stopping"
            except StartupFailed as exc:
                _announce(exc.report, log)
                if cfg.log_level != "debug":
                    quiet_server_traceback(exc)
                raise
            except StartupInterrupted as exc:
                _announce(exc.report, log)
                if cfg.log_level != "debug":
                    quiet_server_traceback(exc)
                interrupted = exc
        # Outside the block: our handlers are restored and ``chained`` is known.
        if interrupted is not None:
            if not interruption.chained:
                # Nobody else heard it (a default disposition, e.g. SIGHUP under
                # uvicorn): deliver it again now that teardown is done, so the
                # process ends as the signal asked.
                signal.raise_signal(interrupted.signum)
            raise interrupted

    return lifespan_context


# -- FastAPI router -----------------------------------------------------------------


def health_router(
    readiness: HealthSource | None = None,
    *,
    degraded_ready: bool | None = None,
    prefix: str = "",
    include_in_schema: bool = True,
    tags: Sequence[str] = ("health",),
) -> APIRouter:
    """A FastAPI router with ``GET /startupz``, ``/readyz`` and ``/livez``.

    Same verdicts and bodies as :func:`health_app`; by default it reads the
    readiness (and ``degraded_ready``) the smd lifespan put in the state.
    """
    from fastapi import APIRouter, Request, Response

    router = APIRouter(prefix=prefix, tags=list(tags))
    summaries = {
        "startupz": "200 once startup finished ready or degraded; 503 while starting or failed",
        "readyz": "200 when ready (and, by default, degraded); 503 while starting or failed",
        "livez": "200 while the process serves; never touches external services",
    }

    def endpoint_for(check: str) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            source, ready_when_degraded = resolve(request.scope, readiness, degraded_ready)
            verdict = evaluate(check, source, degraded_ready=ready_when_degraded)
            return Response(
                verdict.encode(),
                status_code=verdict.status,
                media_type="application/json",
                headers={"cache-control": "no-store"},
            )

        # FastAPI reads annotations to inject the request; with postponed
        # annotations it would look `Request` up in this module's globals.
        endpoint.__annotations__ = {"request": Request, "return": Response}
        endpoint.__name__ = f"smd_{check}"
        return endpoint

    metrics = metrics_endpoint()
    if metrics is not None:
        from starlette.routing import Mount

        router.routes.append(Mount("/metrics", app=metrics, name="smd_metrics"))
    for check in CHECKS:
        endpoint = endpoint_for(check)
        router.add_api_route(
            f"/{check}",
            endpoint,
            methods=["GET"],
            name=f"smd_{check}",
            summary=summaries[check],
            include_in_schema=include_in_schema,
            response_model=None,
        )
        # HEAD too (some probes use it), kept out of the schema: one operation per check.
        router.add_api_route(
            f"/{check}",
            endpoint,
            methods=["HEAD"],
            name=f"smd_{check}_head",
            include_in_schema=False,
            response_model=None,
        )
    return router
