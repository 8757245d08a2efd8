"""The logging observer: run events as structlog events with dotted names.

Every line a run logs comes from here, so logs, metrics and spans can never
disagree about what happened. Levels: a failed startup, a refused force and
a blocked loop are warnings or errors; bypass decisions and phase outcomes
are info; per-attempt and per-timeout detail is debug.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from smd._encode import encode
from smd._logline import redact_rendered
from smd._redact import redact
from smd._report import Outcome, State
from smd.events import (
    AttemptMade,
    BypassDecided,
    Event,
    LoopBlocked,
    PhaseFinished,
    PhaseStarted,
    PhaseWaiting,
    ReadinessChanged,
    Recovered,
    StartupFinished,
    StartupStarted,
    TeardownFinished,
    TimeoutComputed,
)

__all__ = ["LogObserver"]


def _r(x: float) -> float:
    return round(x, 6)


def _clean(fields: dict[str, Any], strings: bool) -> dict[str, Any]:
    """Every field through the serialisation boundary; plain numbers pass as they are.

    Strings are redacted here unless ``strings`` is false: the pipeline
    redacts each whole line it renders (see :class:`_Redacting`).
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = redact(value) if strings else value
        else:
            out[key] = encode(value)
    return out


def _redacts_lines(log: Any) -> bool:
    """Whether ``log`` writes through smd's own pipeline, which redacts every rendered line.

    :func:`smd._logging.configure_logging` ends structlog's processors with
    :func:`~smd._logline.redact_rendered`; a line it renders is masked whole
    (registered secrets in their JSON- and repr-escaped forms, URL
    passwords, ``password=`` pairs), so redacting each string field first
    would do the same work twice on every line.
    """
    if not isinstance(log, structlog.typing.BindableLogger) or not structlog.is_configured():
        return False
    processors: list[Any] = list(structlog.get_config().get("processors") or ())
    return bool(processors) and processors[-1] is redact_rendered


class _Redacting:
    """A logger front that masks secrets in every field it is given.

    smd's events go to the host's logging configuration as they are (library
    mode configures nothing), so redaction cannot be left to smd's own
    renderer: every value passes the serialisation boundary
    (:func:`smd._encode.encode`, which redacts) before it reaches the logger,
    and only when the logger would write the line at all (most runs drop the
    per-phase lines below their level: they cost nothing then). Plain
    strings are the one exception, on smd's own pipeline only: it redacts
    each line it renders, whole (:func:`_redacts_lines`).
    """

    __slots__ = ("_enabled", "_log", "_strings")

    def __init__(self, log: Any) -> None:
        # smd's own loggers choose their route (structlog or stdlib) when
        # they log; a run takes the route in force when it starts, once,
        # instead of once per line.
        resolve = getattr(log, "_resolve", None)
        self._log = resolve() if callable(resolve) else log
        self._enabled = getattr(self._log, "is_enabled_for", None)
        # Another route (the host's logging, a processor chain of its own)
        # gets every string field redacted before it sees it.
        self._strings = not _redacts_lines(self._log)

    def enabled(self, level: int) -> bool:
        """Whether a line at ``level`` would be written (so its fields are worth building)."""
        return self._enabled is None or bool(self._enabled(level))

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if self._enabled is None or self._enabled(level):
            getattr(self._log, method)(event, **_clean(fields, self._strings))

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)


class LogObserver:
    """Writes each event to ``log`` (a structlog logger bound to the startup)."""

    __slots__ = ("log",)

    def __init__(self, log: Any) -> None:
        self.log = _Redacting(log)

    def __repr__(self) -> str:
        return "LogObserver()"

    def __call__(self, event: Event) -> None:
        log = self.log
        if isinstance(event, TimeoutComputed | AttemptMade):
            # Per phase (and per attempt), at debug: most runs log at info,
            # so the fields are not even built unless the line is written.
            if log.enabled(logging.DEBUG):
                self._detail(event)
        elif isinstance(event, PhaseStarted | PhaseFinished) and not log.enabled(logging.INFO):
            return  # two lines per phase, below the level: not even their fields are built
        elif isinstance(event, PhaseStarted):
            log.info(
                "smd.phase.started",
                phase=event.phase,
                wave=event.wave,
                deadline=_r(event.deadline),
                attempt_deadline=_r(event.attempt_deadline),
                deadline_source=event.deadline_source,
            )
        elif isinstance(event, PhaseFinished):
            r = event.report
            fields: dict[str, Any] = {"phase": event.phase, "outcome": r.outcome.value}
            if r.duration is not None:
                fields["duration"] = _r(r.duration)
            if r.failure is not None:
                fields["kind"] = r.failure.kind.value
                fields["error"] = r.failure.message
            elif r.outcome is Outcome.SKIPPED:
                fields["reason"] = r.reason
            log.info("smd.phase.finished", **fields)
        elif isinstance(event, BypassDecided):
            self._decided(event)
        else:
            self._run_event(event)

    def _detail(self, event: TimeoutComputed | AttemptMade) -> None:
        if isinstance(event, TimeoutComputed):
            t = event.timeout
            self.log.debug(
                "smd.timeout.computed",
                phase=event.phase,
                target=event.target,
                seconds=_r(t.seconds),
                attempt_seconds=None if t.attempt_seconds is None else _r(t.attempt_seconds),
                source=t.source,
                explanation=t.explanation,
            )
        else:
            a = event.attempt
            self.log.debug(
                "smd.phase.attempt",
                phase=event.phase,
                attempt=a.number,
                ok=a.ok,
                duration=_r(a.end - a.start),
            )

    def _decided(self, event: BypassDecided) -> None:
        d = event.decision
        where = {
            "phase": event.phase,
            "kind": event.failure.kind.value,
            "environment": event.environment,
        }
        if d.forced:
            self.log.warning("smd.bypass.forced", reason=d.reason, **where)
        elif any(c.name == "force_continue" and not c.holds for c in d.conditions):
            self.log.warning("smd.bypass.force_refused", action=d.action.value, **where)
        self.log.info(
            "smd.bypass.decided",
            target=event.target,
            mode=d.mode,
            action=d.action.value,
            forced=d.forced,
            reason=d.reason,
            conditions=[
                {
                    "name": c.name,
                    "holds": c.holds,
                    "value": c.value,
                    "threshold": c.threshold,
                    "detail": c.detail,
                }
                for c in d.conditions
            ],
            **where,
        )

    def _run_event(self, event: Event) -> None:
        log = self.log
        if isinstance(event, StartupStarted):
            log.info(
                "smd.startup.started",
                environment=event.environment,
                mode=event.mode,
                phases=len(event.phases),
                budget=event.budget,
            )
        elif isinstance(event, PhaseWaiting):
            log.info(
                "smd.phase.waiting",
                phase=event.phase,
                waited=round(event.waited, 3),
                deadline=round(event.deadline, 3),
                left=round(event.deadline - event.waited, 3),
                attempts=event.attempts,
            )
        elif isinstance(event, TeardownFinished):
            if event.error is None:
                log.info("smd.phase.teardown", phase=event.phase, ok=True)
            else:
                log.error("smd.phase.teardown", phase=event.phase, ok=False, error=event.error)
        elif isinstance(event, StartupFinished):
            r = event.report
            if r.state is State.FAILED:
                failed = r.failed_phase
                log.error(
                    "smd.startup.finished",
                    state=r.state.value,
                    failed_phase=failed.name if failed is not None else None,
                    interrupted=r.interrupted,
                    duration=_r(r.duration),
                    exit_code=r.exit_code(),
                )
            else:
                log.info(
                    "smd.startup.finished",
                    state=r.state.value,
                    duration=_r(r.duration),
                    reasons=list(r.reasons),
                )
        elif isinstance(event, ReadinessChanged):
            log.info(
                "smd.readiness.changed",
                previous=event.previous.value,
                state=event.snapshot.state.value,
                reasons=list(event.snapshot.reasons),
            )
        elif isinstance(event, Recovered):
            log.info(
                "smd.readiness.recovered",
                phase=event.phase,
                time_to_ready=_r(event.time_to_ready),
                probes=event.probes,
            )
        elif isinstance(event, LoopBlocked):
            log.warning(
                "smd.loop.blocked",
                seconds=round(event.seconds, 3),
                phases=list(event.phases),
                hint="a phase blocked the event loop (time.sleep, CPU work, blocking I/O); "
                "no deadline can preempt it: run blocking work with anyio.to_thread.run_sync",
            )
