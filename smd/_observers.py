"""Who observes a run: readiness, the log, default tracing, then the user's observers."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from smd._logobserver import LogObserver
from smd._settings import Settings
from smd.events import Dispatch, Observer, process_observers

__all__ = ["dispatch"]


def _default_observers(settings: Settings, given: list[Observer]) -> list[Observer]:
    """Spans through OpenTelemetry's global tracer provider, when the app uses OpenTelemetry.

    "Uses" means ``opentelemetry`` is imported by the time the run starts, as
    it is once an app (or an instrumentation) has set its SDK up, which
    OpenTelemetry's guidance asks to do first thing. Otherwise the global
    provider is the API's no-op one and every span would go nowhere: smd then
    does not import the API at all (it would cost ``smd run`` tens of ms).
    ``SMD_OTEL__ENABLED=false`` turns spans off even then.
    """
    if not settings.otel.enabled or "opentelemetry" not in sys.modules:
        return []
    from smd.otel import SpanObserver, observer

    if any(isinstance(o, SpanObserver) for o in given):
        return []  # the app brought its own (another provider): not twice
    tracing = observer()
    return [tracing] if tracing is not None else []


def _report_observer_failure(log: Any) -> Any:
    def report(observer: Observer, exc: Exception) -> None:
        log.warning(
            "smd.observer.failed",
            observer=repr(observer),
            error=f"{type(exc).__name__}: {exc}",
            hint="an observer that raises is reported once and then ignored for this run",
        )

    return report


def dispatch(
    settings: Settings,
    log: Any,
    readiness: Observer,
    startup_observers: Iterable[Observer],
    observers: Iterable[Observer],
) -> Dispatch:
    """The run's dispatch, in order: readiness (so its state is current for the
    others), logging, default tracing, the startup's, the run's, the process's."""
    given = [*startup_observers, *observers, *process_observers()]
    return Dispatch(
        [readiness, LogObserver(log), *_default_observers(settings, given), *given],
        _report_observer_failure(log),
    )
