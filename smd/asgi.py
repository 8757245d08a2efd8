"""smd inside an ASGI app: a lifespan for FastAPI / Starlette, and health endpoints.

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
on ``app.state``, keeps probing bypassed dependencies in the background, and
at shutdown tears down in reverse: the app's own lifespan first, then the
phases. A failed startup raises, so the server (uvicorn) exits non-zero, with
the STARTUP FAILED summary logged as ``smd.startup.failed`` and printed on
stderr. SIGTERM / SIGINT while the phases run cancels them, tears down what
started, and lets the server exit.

Nothing here imports Starlette or FastAPI at import time (``health_router``
imports FastAPI when called).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import signal
import sys
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from smd._health import (
    CHECKS,
    HEALTH_STATE_KEY,
    HealthBinding,
    HealthSource,
    evaluate,
    health_app,
    resolve,
)
from smd._logging import configure_logging, get_logger
from smd._phase import Startup
from smd._report import Report, StartupFailed
from smd._settings import Settings, load_settings
from smd._store import HistoryStore

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "AppLifespan",
    "StartupInterrupted",
    "health_app",
    "health_router",
    "smd_lifespan",
]

#: An app's own lifespan: ``lifespan(app)`` returning an async context manager
#: that may yield a state mapping (Starlette's contract).
AppLifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]

_SIGNAL_NAMES: dict[int, str] = {signal.SIGTERM: "sigterm", signal.SIGINT: "sigint"}


class StartupInterrupted(Exception):
    """SIGTERM / SIGINT arrived while the phases ran; what had started was torn down.

    ``report`` is the (failed, interrupted) report, ``signum`` the signal.
    """

    def __init__(self, report: Report, signum: int) -> None:
        self.report = report
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"startup {report.startup!r} interrupted by {name} after "
            f"{report.duration:.3f}s; teardown ran"
        )


# -- signals while the phases run ---------------------------------------------------


class _Caught:
    __slots__ = ("chained", "signum")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.chained = True


@contextmanager
def _cancel_on_signals(scope: anyio.CancelScope, enabled: bool) -> Iterator[_Caught]:
    """Cancel ``scope`` on SIGTERM / SIGINT, passing the signal on to the server.

    A server such as uvicorn only sets a flag on SIGTERM and keeps waiting for
    the lifespan to finish starting, so a startup stuck on a blackholed
    database would ignore the orchestrator until its deadline. The server's
    own handler still runs (it then shuts down instead of serving); ours only
    adds the cancellation. ``signal.signal`` (not ``loop.add_signal_handler``)
    so the server's handler can be restored exactly afterwards.
    """
    caught = _Caught()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): leave signals to the host
        loop = None
    if not enabled or loop is None or threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if caught.signum is None:
            caught.signum = signum
        loop.call_soon_threadsafe(scope.cancel)
        prev = previous.get(signum)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(signum, frame)

    for sig in _SIGNAL_NAMES:
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN or current is None:
            continue  # ignored stays ignored; None: installed outside Python
        previous[sig] = signal.signal(sig, handler)
    try:
        yield caught
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
        if caught.signum is not None:
            prev = previous.get(caught.signum)
            caught.chained = callable(prev) and prev is not signal.default_int_handler


# -- the lifespan -------------------------------------------------------------------


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


async def _start(
    run: Any, tg: anyio.abc.TaskGroup, handle_signals: bool, log: Any
) -> BaseException | None:
    """Run the phases; the exception to raise when startup did not let us serve."""
    with anyio.CancelScope() as scope, _cancel_on_signals(scope, handle_signals) as caught:
        try:
            await run.start(tg)
        except StartupFailed as exc:
            _announce(exc.report, log)
            return exc
    if scope.cancelled_caught and caught.signum is not None:
        assert run.report is not None
        report = dataclasses.replace(run.report, interrupted=_SIGNAL_NAMES[caught.signum])
        _announce(report, log)
        if not caught.chained:
            # Nobody else heard it (default disposition): deliver it again now
            # that teardown is done, so the process ends as the signal asked.
            signal.raise_signal(caught.signum)
        return StartupInterrupted(report, caught.signum)
    return None


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


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # A task group wraps whatever the lifespan body raised; hand the app's
    # own error back as it was raised (StartupFailed is a group too: keep it).
    if type(group) in (ExceptionGroup, BaseExceptionGroup) and len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if isinstance(inner, BaseExceptionGroup):
            return _unwrap(inner)
        return inner
    return group


def smd_lifespan(
    startup: Startup,
    *,
    settings: Settings | None = None,
    store: HistoryStore | None = None,
    degraded_ready: bool = True,
    lifespan: AppLifespan | None = None,
    state_key: str = "smd",
    record_history: bool | None = None,
    configure_logs: bool | None = None,
    handle_signals: bool = True,
    **options: Any,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan (``FastAPI(lifespan=...)``, ``Starlette(lifespan=...)``) that runs ``startup``.

    The lifespan state (``request.state`` in every request, and ``app.state``)
    holds ``state_key`` (``"smd"``: the :class:`~smd._sequencer.StartupRun`,
    with ``.report`` and ``.values``), ``readiness`` (the readiness state
    machine the health endpoints read) and, under each phase's name, the
    value that phase returned (phases that did not end ``ok`` are absent).
    The app's own ``lifespan`` runs inside, after the phases and before the
    teardown; what it yields is merged into the state.

    ``degraded_ready``: whether ``/readyz`` says 200 while degraded (default
    yes: the service works, without some dependency). ``record_history``
    (default: yes, except when launched by ``smd run``, which already
    recorded this start) lets the learned timeouts use this run.
    ``configure_logs`` (default: when structlog is not configured yet) sets up
    smd's logging from the settings. ``options`` go to ``StartupRun``
    (``mode``, ``policy``, ``clock``...).

    A failed startup raises :class:`~smd.StartupFailed` (SIGTERM / SIGINT
    during startup: :class:`StartupInterrupted`) after logging
    ``smd.startup.failed`` with the summary and printing it on stderr.
    """
    if not isinstance(startup, Startup):
        raise TypeError(f"smd_lifespan needs a smd.Startup, got {type(startup).__name__}")
    startup.plan()  # an invalid plan fails at import, naming the culprit
    app_lifespan = _as_factory(lifespan)
    for reserved in ("readiness", HEALTH_STATE_KEY):
        if state_key == reserved:
            raise ValueError(f"state_key {state_key!r} is reserved")

    @asynccontextmanager
    async def lifespan_context(app: Any) -> AsyncIterator[dict[str, Any]]:
        from smd._readiness import Readiness
        from smd._sequencer import StartupRun, default_store

        cfg = settings if settings is not None else load_settings()
        if configure_logs or (configure_logs is None and not structlog.is_configured()):
            configure_logging(cfg.log_format, cfg.log_level)
        log = get_logger("smd", startup=startup.name)
        history = store
        if history is None:
            gated = os.environ.get("SMD_STARTUP_STATE") is not None
            write = record_history if record_history is not None else not gated
            history = default_store(cfg, readonly=not write)
        readiness = Readiness(log=log)
        run = StartupRun(startup, settings=cfg, store=history, readiness=readiness, **options)
        # A recovered phase may publish its value late: keep app.state current.
        readiness.on_change(lambda _previous, _snapshot: _publish(app, run.values))
        binding = HealthBinding(readiness, degraded_ready)
        smd_state: dict[str, Any] = {
            state_key: run,
            "readiness": readiness,
            HEALTH_STATE_KEY: binding,
        }
        _publish(app, smd_state)
        failure: BaseException | None = None
        started = False
        try:
            async with anyio.create_task_group() as tg:
                failure = await _start(run, tg, handle_signals, log)
                if failure is None:
                    started = True
                    try:
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
                        if app_lifespan is None:
                            yield state
                        else:
                            async with app_lifespan(app) as own:
                                if own:
                                    state.update(own)
                                    _publish(app, own)
                                yield state
                    finally:
                        tg.cancel_scope.cancel()  # stop background recovery first
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            if started:
                with anyio.CancelScope(shield=True):
                    await run.stop()
        if failure is not None:
            raise failure

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
