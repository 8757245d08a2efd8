"""Run events and the observers that receive them.

An observer is anything callable with one event: a function, or an object
with ``__call__``. Every event is a frozen value; ``match`` on its class::

    from smd.events import PhaseFinished, StartupFinished

    def alert(event):
        match event:
            case PhaseFinished(phase=name, report=r) if r.outcome.value == "bypassed":
                page(f"{name} bypassed: {r.reason}")
            case StartupFinished(report=r):
                print(r.state.value, f"{r.duration:.3f}s")

    startup = Startup("api", observers=[alert])

Observers are called synchronously, in registration order, from the task
that produced the event: keep them quick (hand slow work to a thread). One
that raises is logged once (``smd.observer.failed``) and never breaks a
startup. Logging, the report, the Chrome trace and readiness are observers
too, fed by the same events.

Process-wide observers (for tools: metrics, tracing) are added with
:func:`register_observer`; they see every run in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smd._failures import Failure
from smd._report import PhaseReport, Report, State
from smd._timeout_base import TimeoutDecision
from smd.retry import Attempt

if TYPE_CHECKING:
    from smd._policy import Decision
    from smd.readiness import ReadinessSnapshot

__all__ = [
    "AttemptMade",
    "BypassDecided",
    "Event",
    "LoopBlocked",
    "Observer",
    "PhaseFinished",
    "PhaseStarted",
    "PhaseWaiting",
    "ReadinessChanged",
    "Recovered",
    "StartupFinished",
    "StartupStarted",
    "TeardownFinished",
    "TimeoutComputed",
    "register_observer",
]


@dataclass(frozen=True, slots=True)
class StartupStarted:
    """A run began. ``at`` is wall-clock time; ``t`` the run clock's reading."""

    startup: str
    environment: str
    mode: str
    phases: tuple[str, ...]
    budget: float
    at: float
    t: float


@dataclass(frozen=True, slots=True)
class TimeoutComputed:
    """A phase's deadline was computed (before it starts), with its explanation."""

    startup: str
    phase: str
    target: str
    timeout: TimeoutDecision


@dataclass(frozen=True, slots=True)
class PhaseStarted:
    """A phase began; ``deadline`` seconds from now, and where that came from."""

    startup: str
    phase: str
    wave: int
    deadline: float
    deadline_source: str
    attempt_deadline: float
    t: float


@dataclass(frozen=True, slots=True)
class AttemptMade:
    """A phase made one attempt (a connection try). Times are seconds since the run began."""

    startup: str
    phase: str
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class PhaseWaiting:
    """A phase is still running after ``waited`` seconds (every ``progress_interval``)."""

    startup: str
    phase: str
    waited: float
    deadline: float
    attempts: int


@dataclass(frozen=True, slots=True)
class BypassDecided:
    """The bypass policy judged a failure: ``decision.action`` is fail or continue."""

    startup: str
    phase: str
    environment: str
    target: str
    failure: Failure
    decision: Decision


@dataclass(frozen=True, slots=True)
class PhaseFinished:
    """A phase ended (``report.outcome``: ok, bypassed, skipped, failed, cancelled)."""

    startup: str
    phase: str
    report: PhaseReport


@dataclass(frozen=True, slots=True)
class TeardownFinished:
    """A completed phase's teardown ran; ``error`` is set when it raised."""

    startup: str
    phase: str
    start: float
    end: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StartupFinished:
    """A run concluded: ``report.state`` is ready, degraded or failed."""

    startup: str
    report: Report


@dataclass(frozen=True, slots=True)
class ReadinessChanged:
    """Readiness moved (or, still degraded, lost a reason)."""

    startup: str
    previous: State
    snapshot: ReadinessSnapshot


@dataclass(frozen=True, slots=True)
class Recovered:
    """A bypassed phase's dependency answered in the background."""

    startup: str
    phase: str
    time_to_ready: float
    probes: int
    at: float


@dataclass(frozen=True, slots=True)
class LoopBlocked:
    """The event loop did not run for ``seconds`` while ``phases`` were running."""

    startup: str
    seconds: float
    phases: tuple[str, ...]


Event = (
    StartupStarted
    | TimeoutComputed
    | PhaseStarted
    | AttemptMade
    | PhaseWaiting
    | BypassDecided
    | PhaseFinished
    | TeardownFinished
    | StartupFinished
    | ReadinessChanged
    | Recovered
    | LoopBlocked
)


@runtime_checkable
class Observer(Protocol):
    """Receives every event of the runs it observes (called synchronously)."""

    def __call__(self, event: Event, /) -> None: ...


_lock = threading.Lock()
_global: list[Observer] = []


def register_observer(observer: Observer) -> Callable[[], None]:
    """Observe every run in this process (metrics, tracing); returns an unregister."""
    if not callable(observer):
        raise TypeError(f"an observer must be callable with an event, got {observer!r}")
    with _lock:
        _global.append(observer)

    def unregister() -> None:
        with _lock:
            if observer in _global:
                _global.remove(observer)

    return unregister


def process_observers() -> tuple[Observer, ...]:
    """The observers :func:`register_observer` added (a snapshot)."""
    with _lock:
        return tuple(_global)


class Dispatch:
    """Hands each event to every observer; one that raises is reported once."""

    __slots__ = ("_failed", "_observers", "_report_failure")

    def __init__(
        self,
        observers: Iterable[Observer],
        report_failure: Callable[[Observer, Exception], None],
    ) -> None:
        self._observers = tuple(observers)
        self._failed: set[int] = set()
        self._report_failure = report_failure

    def __call__(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception as exc:
                if id(observer) not in self._failed:
                    self._failed.add(id(observer))
                    self._report_failure(observer, exc)

    def extend(self, observers: Iterable[Observer]) -> Dispatch:
        """A dispatch to these observers and then ``observers``."""
        return Dispatch((*self._observers, *observers), self._report_failure)


def event_fields(event: Event) -> Mapping[str, object]:
    """An event's fields by name (for generic observers such as a logger)."""
    return {name: getattr(event, name) for name in event.__dataclass_fields__}
