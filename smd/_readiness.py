"""Readiness: the state the health endpoints read, kept by an observer.

States and the only transitions allowed::

    starting -> ready | degraded | failed
    degraded -> ready            (every degraded reason has cleared)

``failed`` is final, and neither ``ready`` nor ``degraded`` can become
``failed``: readiness is the verdict of *startup*. Once the service serves,
a dependency that breaks later is a matter for its own error handling and
liveness, not for a verdict that would tell an orchestrator to kill a process
that is serving. Any other transition raises
:class:`~smd.exceptions.InvalidTransition`.

:class:`Readiness` is an observer: the run feeds it the same events it
gives every observer, and the final state is the report's (computed once,
by the run). A bypassed phase that recovers in the background clears its
reason (:meth:`Readiness.recovered`); when none is left, ``degraded ->
ready``. A phase *skipped* because a requirement was bypassed keeps its
reason: it never ran, so the service is still degraded without it.
Changes are published as :class:`~smd.events.ReadinessChanged` events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from smd._report import PhaseStatus, ReadinessSnapshot, State
from smd.clock import Clock, SystemClock
from smd.events import (
    Event,
    PhaseFinished,
    PhaseStarted,
    ReadinessChanged,
    Recovered,
    StartupFinished,
)
from smd.exceptions import InvalidTransition

__all__ = ["Readiness"]

_ALLOWED: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        State.STARTING: frozenset({State.READY, State.DEGRADED, State.FAILED}),
        State.DEGRADED: frozenset({State.READY}),
        State.READY: frozenset(),
        State.FAILED: frozenset(),
    }
)


class Readiness:
    """The readiness state machine of one startup (an observer of its run).

    ``emit`` receives the :class:`~smd.events.ReadinessChanged` events; the
    run passes its dispatch so every observer sees them.
    """

    def __init__(
        self,
        startup: str = "",
        *,
        clock: Clock | None = None,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.startup = startup
        self.clock: Clock = clock or SystemClock()
        self.emit = emit
        self._state = State.STARTING
        self._since = self.clock.wall()
        self._phases: dict[str, PhaseStatus] = {}
        self._failure = ""

    # ---------------------------------------------------------------- reading

    @property
    def state(self) -> State:
        return self._state

    def reasons(self) -> tuple[str, ...]:
        """Why the service is degraded (or failed), in phase order."""
        out = [
            st.reason or f"phase {st.name!r} {st.outcome}"
            for st in self._phases.values()
            if st.degraded
        ]
        if self._state is State.FAILED and self._failure:
            out.append(self._failure)
        return tuple(out)

    def snapshot(self) -> ReadinessSnapshot:
        """The current state, frozen."""
        return ReadinessSnapshot(self._state, self.reasons(), dict(self._phases), self._since)

    def phase(self, name: str) -> PhaseStatus:
        """One phase's status (``KeyError`` if readiness never heard of it)."""
        return self._phases[name]

    # ---------------------------------------------------------------- the observer

    def __call__(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            self._started(event.phase)
        elif isinstance(event, PhaseFinished):
            r = event.report
            old = self._phases.get(event.phase) or PhaseStatus(event.phase)
            self._phases[event.phase] = PhaseStatus(
                event.phase,
                r.outcome.value,
                r.reason,
                old.started_at,
                self.clock.monotonic(),
                old.recovered_at,
                old.probes,
                old.time_to_ready,
            )
        elif isinstance(event, StartupFinished):
            self._finished(event)

    # Runs once per phase on the startup's critical path: build the new value
    # directly (dataclasses.replace introspects fields every call).
    def _started(self, name: str) -> None:
        old = self._phases.get(name)
        now = self.clock.monotonic()
        if old is None:
            self._phases[name] = PhaseStatus(name, "running", "", now)
            return
        self._phases[name] = PhaseStatus(
            name,
            "running",
            old.reason,
            old.started_at if old.started_at is not None else now,
            old.finished_at,
            old.recovered_at,
            old.probes,
            old.time_to_ready,
        )

    def _finished(self, event: StartupFinished) -> None:
        # The report's phases are authoritative (recoveries already seen are
        # kept). Nothing changes unless the transition is allowed: a rejected
        # report must not leave readiness half-updated.
        report = event.report
        phases = dict(self._phases)
        for rep in report.phases:
            old = phases.get(rep.name) or PhaseStatus(rep.name)
            if (old.outcome, old.reason) != (rep.outcome.value, rep.reason):
                phases[rep.name] = replace(old, outcome=rep.outcome.value, reason=rep.reason)
        failure = ""
        if report.state is State.FAILED:
            failed = report.failed_phase
            failure = (
                failed.reason
                if failed is not None and failed.reason
                else f"interrupted by {report.interrupted.upper()}"
                if report.interrupted
                else "startup failed"
            )
            new = State.FAILED
        elif any(st.degraded for st in phases.values()):
            new = State.DEGRADED
        else:
            new = State.READY
        self._check(new)
        self._phases = phases
        self._failure = failure
        self._move(new)

    # ---------------------------------------------------------------- recovery

    def note_probe(self, name: str) -> None:
        """A recovery probe of ``name`` was made (shown in the snapshot)."""
        old = self._phases.get(name, PhaseStatus(name))
        self._phases[name] = replace(old, probes=old.probes + 1)

    def recovered(self, name: str, *, time_to_ready: float, probes: int = 0) -> State:
        """A bypassed phase's dependency answered: clear its reason, maybe become ready."""
        old = self._phases.get(name)
        if old is None or old.outcome != "bypassed":
            got = "unknown" if old is None else old.outcome
            raise InvalidTransition(f"phase {name!r} cannot recover: it is {got}, not bypassed")
        if old.recovered_at is None:
            self._phases[name] = replace(
                old, recovered_at=self.clock.monotonic(), time_to_ready=time_to_ready
            )
        if self.emit is not None:
            self.emit(Recovered(self.startup, name, time_to_ready, probes, self.clock.wall()))
        if self._state is State.DEGRADED:
            if any(st.degraded for st in self._phases.values()):
                self._publish(self._state)  # still degraded, with one reason fewer
            else:
                self._move(State.READY)
        return self._state

    # ---------------------------------------------------------------- internals

    def _check(self, new: State) -> None:
        old = self._state
        if new not in _ALLOWED[old]:
            raise InvalidTransition(f"readiness cannot move from {old.value} to {new.value}")

    def _move(self, new: State) -> None:
        old = self._state
        self._check(new)
        self._state = new
        self._since = self.clock.wall()
        self._publish(old)

    def _publish(self, previous: State) -> None:
        if self.emit is not None:
            self.emit(ReadinessChanged(self.startup, previous, self.snapshot()))
