"""OpenTelemetry spans for smd runs, through the API alone (extra ``smd-startup[otel]``).

Spans go through the global tracer provider (or the one given); the app's
SDK decides whether they go anywhere. Without an SDK the API's tracer does
nothing and this observer costs next to nothing (``benchmarks/observability.py``).
Importing :mod:`smd` or this module never imports ``opentelemetry``;
:func:`observer` does, and returns ``None`` when the API is not installed::

    tracing = smd.otel.observer()          # None without opentelemetry-api
    startup = smd.Startup("api", observers=[tracing] if tracing else [])

One run's spans; every time is an explicit timestamp from the run's own clock
readings, so children nest exactly (also with a :class:`~smd.clock.ManualClock`)::

    smd.startup        smd.startup.name/environment/mode/budget/state/duration/exit_code
    ├── config         a span per phase, named after it: smd.phase.outcome, .deadline,
    ├── db             .deadline_source, .attempt_deadline, .attempts; smd.failure.kind,
    │   ├── smd.attempt    .code, .message; smd.bypass.action, .mode, .forced, .reason;
    │   └── smd.attempt    status ERROR when failed or bypassed
    └── smd.teardown   a rollback inside a failed run
    smd.teardown       at shutdown (the startup span has ended): linked to smd.startup
    smd.recovery       a background recovery: a trace of its own, linked to smd.startup

``smd.startup`` is a child of the span current when the run starts (if any);
a teardown at shutdown is in the context current then. Every string
attribute passes :func:`smd.secrets.redact`. Runs are told apart by startup
name (two concurrent runs of one startup in a process would mix).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smd._report import Outcome, PhaseReport, Report, State
from smd._timeout_base import TimeoutDecision
from smd.events import (
    AttemptMade,
    Event,
    PhaseFinished,
    PhaseStarted,
    Recovered,
    StartupFinished,
    StartupStarted,
    TeardownFinished,
    TimeoutComputed,
)
from smd.secrets import redact

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanContext, Tracer, TracerProvider

__all__ = ["STARTUP_SPAN", "SpanObserver", "available", "observer"]

#: The root span of every run.
STARTUP_SPAN = "smd.startup"
ATTEMPT_SPAN = "smd.attempt"
TEARDOWN_SPAN = "smd.teardown"
RECOVERY_SPAN = "smd.recovery"

Attributes = dict[str, Any]


def available() -> bool:
    """Whether the OpenTelemetry API can be imported (``smd-startup[otel]``)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def observer(*, tracer_provider: TracerProvider | None = None) -> SpanObserver | None:
    """A span observer on the global tracer provider (or ``tracer_provider``).

    ``None`` when ``opentelemetry-api`` is not installed. The tracer is
    ``get_tracer("smd", smd.__version__)``: a provider the application sets
    later (``trace.set_tracer_provider``) is used from then on.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    import smd

    version = str(smd.__version__)
    return SpanObserver(trace.get_tracer("smd", version, tracer_provider=tracer_provider))


def _clean(attributes: Mapping[str, object]) -> Attributes:
    """Attributes OpenTelemetry accepts: no ``None``, strings redacted, sequences of strings."""
    out: Attributes = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = redact(value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [redact(str(v)) for v in value]
        else:
            out[key] = redact(str(value))
    return out


@dataclass(slots=True)
class _Phase:
    span: Span
    context: Context
    start: float
    last: float  # latest end of a child (seconds since the run began)


@dataclass(slots=True)
class _Run:
    """What one run's spans need: the time base and the open spans."""

    base_ns: int  # wall-clock nanoseconds of the run's start
    origin: float  # the run clock's reading at the start
    root: Span | None  # None: a no-op tracer, nothing to record
    context: Context | None = None
    link: SpanContext | None = None
    finished: bool = False
    latest: float = 0.0
    open: dict[str, _Phase] = field(default_factory=dict)
    timeouts: dict[str, tuple[str, TimeoutDecision]] = field(default_factory=dict)
    ended: dict[str, tuple[float, float]] = field(default_factory=dict)

    def ns(self, seconds: float) -> int:
        """Nanoseconds since the epoch of ``seconds`` after the run began."""
        return self.base_ns + round(seconds * 1e9)


class SpanObserver:
    """Turns run events into OpenTelemetry spans (see the module docstring).

    Thread-safe: one observer may be registered process-wide
    (:func:`smd.events.register_observer`) and see runs on several threads.
    """

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, trace

        self.tracer = tracer
        self._trace = trace
        self._empty: Context = context.Context()
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def __repr__(self) -> str:
        return f"SpanObserver(tracer={type(self.tracer).__name__})"

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartupStarted):
            with self._lock:
                self._started(event)
            return
        # Without an SDK this is all a run costs: one lookup per event (a
        # dict read needs no lock, and a stored run never changes whether it records).
        run = self._runs.get(event.startup)
        if run is None or run.root is None:
            return
        with self._lock:
            if isinstance(event, TimeoutComputed):
                run.timeouts[event.phase] = (event.target, event.timeout)
            elif isinstance(event, PhaseStarted):
                self._phase_started(run, event)
            elif isinstance(event, AttemptMade):
                self._attempt(run, event)
            elif isinstance(event, PhaseFinished):
                self._phase_finished(run, event.report)
            elif isinstance(event, TeardownFinished):
                self._teardown(run, event)
            elif isinstance(event, StartupFinished):
                self._finished(run, event.report)
            elif isinstance(event, Recovered):
                self._recovered(run, event)

    # -- the run -------------------------------------------------------------------

    def _started(self, event: StartupStarted) -> None:
        base = round(event.at * 1e9)
        root = self.tracer.start_span(
            STARTUP_SPAN,
            start_time=base,
            attributes=_clean(
                {
                    "smd.startup.name": event.startup,
                    "smd.startup.environment": event.environment,
                    "smd.startup.mode": event.mode,
                    "smd.startup.budget": event.budget,
                    "smd.startup.phases": len(event.phases),
                }
            ),
        )
        if not root.get_span_context().is_valid:
            # The API without an SDK: every span would be a no-op; skip the work.
            self._runs[event.startup] = _Run(base, event.t, None)
            return
        self._runs[event.startup] = _Run(
            base,
            event.t,
            root,
            self._trace.set_span_in_context(root),
            root.get_span_context(),
        )

    def _finished(self, run: _Run, report: Report) -> None:
        for rep in report.phases:
            if rep.name in run.open:  # cancelled: no PhaseFinished came
                self._phase_finished(run, rep)
        root = run.root
        assert root is not None
        run.finished = True
        failed = report.failed_phase
        root.set_attributes(
            _clean(
                {
                    "smd.startup.state": report.state.value,
                    "smd.startup.duration": report.duration,
                    "smd.startup.reasons": list(report.reasons) or None,
                    "smd.startup.failed_phase": failed.name if failed is not None else None,
                    "smd.startup.interrupted": report.interrupted,
                    "smd.startup.exit_code": report.exit_code(),
                }
            )
        )
        if report.state is State.FAILED:
            if report.interrupted:
                why = f"interrupted by {report.interrupted.upper()}"
            elif failed is not None:
                why = f"phase {failed.name!r} failed" + _failure_text(failed)
            else:
                why = "startup failed"
            root.set_status(self._trace.Status(self._trace.StatusCode.ERROR, redact(why)))
        root.end(end_time=run.ns(max(report.duration, run.latest)))
        run.open.clear()
        run.timeouts.clear()

    # -- phases --------------------------------------------------------------------

    def _phase_started(self, run: _Run, event: PhaseStarted) -> None:
        start = event.t - run.origin
        target, timeout = run.timeouts.pop(event.phase, ("", None))
        attributes = {
            "smd.phase.name": event.phase,
            "smd.phase.wave": event.wave,
            "smd.phase.target": target or None,
            "smd.phase.deadline": event.deadline,
            "smd.phase.deadline_source": event.deadline_source,
            "smd.phase.attempt_deadline": event.attempt_deadline,
        }
        if timeout is not None:
            attributes["smd.timeout.seconds"] = timeout.seconds
            attributes["smd.timeout.source"] = timeout.source
            attributes["smd.timeout.explanation"] = timeout.explanation
        span = self.tracer.start_span(
            event.phase,
            context=run.context,
            start_time=run.ns(start),
            attributes=_clean(attributes),
        )
        run.open[event.phase] = _Phase(span, self._trace.set_span_in_context(span), start, start)

    def _attempt(self, run: _Run, event: AttemptMade) -> None:
        phase = run.open.get(event.phase)
        if phase is None:
            return
        a = event.attempt
        start = max(a.start, phase.start)
        end = max(a.end, start)
        detail = {
            f"smd.attempt.{k}": v
            for k, v in a.detail.items()
            if isinstance(v, str | bool | int | float)
        }
        span = self.tracer.start_span(
            ATTEMPT_SPAN,
            context=phase.context,
            start_time=run.ns(start),
            attributes=_clean(
                {"smd.phase.name": event.phase, "smd.attempt.number": a.number, **detail}
            ),
        )
        span.set_attribute("smd.attempt.ok", a.ok)
        if not a.ok:
            why = a.detail.get("message") or a.detail.get("kind") or "attempt failed"
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, redact(str(why))))
        span.end(end_time=run.ns(end))
        phase.last = max(phase.last, end)

    def _phase_finished(self, run: _Run, rep: PhaseReport) -> None:
        phase = run.open.pop(rep.name, None)
        if phase is None:
            if rep.start is not None:
                return  # started before this observer saw the run: nothing to nest
            # Skipped (a requirement did not end ok): a zero-length span when
            # its last requirement ended, so the tree shows why it never ran.
            at = max((run.ended[r][1] for r in rep.requires if r in run.ended), default=0.0)
            span = self.tracer.start_span(
                rep.name,
                context=run.context,
                start_time=run.ns(at),
                attributes=_clean({"smd.phase.name": rep.name, "smd.phase.wave": rep.wave}),
            )
            phase = _Phase(span, self._empty, at, at)
        span = phase.span
        end = max(rep.end if rep.end is not None else phase.start, phase.last)
        failure, decision = rep.failure, rep.decision
        span.set_attributes(
            _clean(
                {
                    "smd.phase.outcome": rep.outcome.value,
                    "smd.phase.attempts": len(rep.attempts),
                    "smd.phase.reason": rep.reason or None,
                    "smd.phase.duration": end - phase.start,
                    "smd.failure.kind": failure.kind.value if failure else None,
                    "smd.failure.code": failure.code if failure else None,
                    "smd.failure.message": failure.message if failure else None,
                    "smd.bypass.action": decision.action.value if decision else None,
                    "smd.bypass.mode": (decision.mode or None) if decision else None,
                    "smd.bypass.forced": decision.forced if decision else None,
                    "smd.bypass.reason": decision.reason if decision else None,
                }
            )
        )
        if rep.outcome in (Outcome.FAILED, Outcome.BYPASSED):
            text = f"{rep.outcome.value}" + _failure_text(rep)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, redact(text)))
        span.end(end_time=run.ns(end))
        run.ended[rep.name] = (phase.start, end)
        run.latest = max(run.latest, end)

    # -- after the phases: teardown and recovery -------------------------------------

    def _links(self, run: _Run) -> list[Link]:
        return [self._trace.Link(run.link)] if run.link is not None else []

    def _teardown(self, run: _Run, event: TeardownFinished) -> None:
        during = not run.finished  # a rollback inside the run nests in its span
        span = self.tracer.start_span(
            TEARDOWN_SPAN,
            context=run.context if during else None,
            links=None if during else self._links(run),
            start_time=run.ns(event.start),
            attributes=_clean(
                {
                    "smd.startup.name": event.startup,
                    "smd.phase.name": event.phase,
                    "smd.teardown.ok": event.error is None,
                    "smd.teardown.error": event.error,
                }
            ),
        )
        if event.error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, redact(event.error)))
        end = max(event.end, event.start)
        span.end(end_time=run.ns(end))
        if during:
            run.latest = max(run.latest, end)

    def _recovered(self, run: _Run, event: Recovered) -> None:
        began, bypassed = run.ended.get(event.phase, (0.0, 0.0))
        end = max(began + event.time_to_ready, bypassed)
        span = self.tracer.start_span(
            RECOVERY_SPAN,
            context=self._empty,
            links=self._links(run),
            start_time=run.ns(bypassed),
            attributes=_clean(
                {
                    "smd.startup.name": event.startup,
                    "smd.phase.name": event.phase,
                    "smd.recovery.time_to_ready": event.time_to_ready,
                    "smd.recovery.probes": event.probes,
                }
            ),
        )
        span.end(end_time=run.ns(end))

    def forget(self, startups: Iterable[str] | None = None) -> None:
        """Drop what is kept of finished runs (all, or of ``startups``)."""
        with self._lock:
            for name in list(self._runs if startups is None else startups):
                run = self._runs.get(name)
                if run is not None and (run.finished or run.root is None):
                    del self._runs[name]


def _failure_text(rep: PhaseReport) -> str:
    f = rep.failure
    if f is None:
        return ""
    code = f" {f.code}" if f.code else ""
    return f": {f.kind.value}{code}: {f.message}"
