"""Readiness: the state the health endpoints and the report read, and recovery.

States and the only transitions allowed::

    starting -> ready | degraded | failed
    degraded -> ready            (every degraded reason has cleared)

``failed`` is final, and neither ``ready`` nor ``degraded`` can become
``failed``: readiness is the verdict of *startup*. Once the service serves,
a dependency that breaks later is a matter for its own error handling and
liveness, not for a verdict that would tell an orchestrator to kill a process
that is serving. Any other transition raises :class:`InvalidTransition`.

A bypassed phase with a recovery probe is probed in the background
(:class:`RecoveryLoop`) with jittered, bounded exponential backoff. On the
first success the phase's degraded reason clears, ``smd.readiness.recovered``
is logged, the true time-to-ready (from the phase's first start) is recorded
as an uncensored sample, and the state moves ``degraded -> ready`` when no
reason is left. A phase *skipped* because a requirement was bypassed keeps
its reason: it never ran, so the service is still degraded without it.
"""

from __future__ import annotations

import enum
import inspect
import random as _random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import structlog

from smd._clock import Clock, SystemClock
from smd._failures import PhaseError
from smd._samples import Sample, TimingHistory

if TYPE_CHECKING:
    from smd._phase import Phase

__all__ = [
    "Backoff",
    "InvalidTransition",
    "PhaseStatus",
    "Readiness",
    "ReadinessSnapshot",
    "ReadinessState",
    "RecoveryLoop",
    "run_recovery",
]

_log = structlog.get_logger("smd")

Probe = Callable[[], Awaitable[object]]
Listener = Callable[["ReadinessState", "ReadinessSnapshot"], None]
Record = Callable[[Sample], object]


class ReadinessState(enum.StrEnum):
    """Where the service stands."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"


_ALLOWED: Mapping[ReadinessState, frozenset[ReadinessState]] = {
    ReadinessState.STARTING: frozenset(
        {ReadinessState.READY, ReadinessState.DEGRADED, ReadinessState.FAILED}
    ),
    ReadinessState.DEGRADED: frozenset({ReadinessState.READY}),
    ReadinessState.READY: frozenset(),
    ReadinessState.FAILED: frozenset(),
}

# Outcomes that leave the service degraded until cleared.
_DEGRADING = frozenset({"bypassed", "skipped"})


class InvalidTransition(RuntimeError):
    """A readiness transition the state machine does not allow."""


@dataclass(frozen=True, slots=True)
class PhaseStatus:
    """One phase as readiness sees it. Times are the clock's monotonic seconds."""

    name: str
    outcome: str = "pending"
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    recovered_at: float | None = None
    probes: int = 0
    time_to_ready: float | None = None

    @property
    def degraded(self) -> bool:
        """Whether this phase still keeps the service degraded."""
        return self.outcome in _DEGRADING and self.recovered_at is None

    def to_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "recovered": self.recovered_at is not None,
            "probes": self.probes,
            "time_to_ready": None if self.time_to_ready is None else round(self.time_to_ready, 6),
        }


@dataclass(frozen=True, slots=True)
class ReadinessSnapshot:
    """A consistent, immutable view for the ASGI endpoints and the report.

    ``since`` is the wall-clock time of the last state change; ``reasons``
    the degraded reasons (plus the failure reason when failed), in phase order.
    """

    state: ReadinessState
    reasons: tuple[str, ...]
    phases: Mapping[str, PhaseStatus]
    since: float

    @property
    def serving(self) -> bool:
        """Ready or degraded: startup let the service take traffic."""
        return self.state in (ReadinessState.READY, ReadinessState.DEGRADED)

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "reasons": list(self.reasons),
            "since": self.since,
            "phases": {name: st.to_dict() for name, st in self.phases.items()},
        }


class Readiness:
    """The readiness state machine; the sequencer calls its hooks.

    Hooks (as the sequencer calls them): :meth:`starting`,
    :meth:`phase_started`, :meth:`phase_finished`, :meth:`finished`. Recovery
    calls :meth:`recovered`. Listeners registered with :meth:`on_change` get
    ``(previous_state, snapshot)`` after every change; a listener that raises
    is logged and does not stop the others.
    """

    def __init__(self, *, clock: Clock | None = None, log: Any = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._log = log if log is not None else _log
        self._state = ReadinessState.STARTING
        self._since = self.clock.wall()
        self._phases: dict[str, PhaseStatus] = {}
        self._failure = ""
        self._listeners: list[Listener] = []

    # ---------------------------------------------------------------- reading

    @property
    def state(self) -> ReadinessState:
        return self._state

    def reasons(self) -> tuple[str, ...]:
        """Why the service is degraded (or failed), in phase order."""
        out = [
            st.reason or f"phase {st.name!r} {st.outcome}"
            for st in self._phases.values()
            if st.degraded
        ]
        if self._state is ReadinessState.FAILED and self._failure:
            out.append(self._failure)
        return tuple(out)

    def snapshot(self) -> ReadinessSnapshot:
        """The current state, frozen."""
        return ReadinessSnapshot(
            self._state, self.reasons(), MappingProxyType(dict(self._phases)), self._since
        )

    def phase(self, name: str) -> PhaseStatus:
        """One phase's status (``KeyError`` if readiness never heard of it)."""
        return self._phases[name]

    def on_change(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(previous_state, snapshot)`` after each change; returns an unsubscribe."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # ---------------------------------------------------------------- hooks

    def starting(self) -> None:
        """Startup began. A readiness tracks exactly one startup."""
        if self._state is not ReadinessState.STARTING:
            raise InvalidTransition(
                f"readiness is {self._state.value}: it tracks one startup and cannot start again"
            )

    # These two run once per phase on the startup's critical path: build the
    # new value directly (dataclasses.replace introspects fields every call).

    def phase_started(self, name: str) -> None:
        """A phase began (its first start is where time-to-ready counts from)."""
        old = self._phases.get(name)
        if old is None:
            self._phases[name] = PhaseStatus(name, "running", "", self.clock.monotonic())
            return
        started = old.started_at if old.started_at is not None else self.clock.monotonic()
        self._phases[name] = PhaseStatus(
            name,
            "running",
            old.reason,
            started,
            old.finished_at,
            old.recovered_at,
            old.probes,
            old.time_to_ready,
        )

    def phase_finished(self, name: str, outcome: str, reason: str = "") -> None:
        """A phase ended ``ok``, ``bypassed``, ``skipped``, ``failed`` or ``cancelled``."""
        old = self._phases.get(name) or PhaseStatus(name)
        self._phases[name] = PhaseStatus(
            name,
            str(outcome),
            reason,
            old.started_at,
            self.clock.monotonic(),
            old.recovered_at,
            old.probes,
            old.time_to_ready,
        )

    def finished(self, report: Any = None) -> ReadinessState:
        """Startup concluded: move to ``ready``, ``degraded`` or ``failed``.

        With a report (``smd.Report``), its phases are authoritative for the
        outcomes (recoveries already seen are kept) and its ``failed`` state
        wins. Without one, the outcomes reported to :meth:`phase_finished`
        decide: any ``failed``/``cancelled`` phase fails, any bypassed or
        skipped phase degrades.
        """
        failed_reason = ""
        if report is not None:
            for rep in getattr(report, "phases", ()):
                old = self._phases.get(rep.name) or PhaseStatus(rep.name)
                outcome = str(getattr(rep.outcome, "value", rep.outcome))
                if (old.outcome, old.reason) != (outcome, rep.reason):
                    self._phases[rep.name] = replace(old, outcome=outcome, reason=rep.reason)
            if str(getattr(report.state, "value", report.state)) == ReadinessState.FAILED.value:
                failed = getattr(report, "failed_phase", None)
                failed_reason = (
                    failed.reason if failed is not None and failed.reason else "startup failed"
                )
        if not failed_reason:
            for st in self._phases.values():
                if st.outcome in ("failed", "cancelled"):
                    failed_reason = st.reason or f"phase {st.name!r} {st.outcome}"
                    break
        if failed_reason:
            self.fail(failed_reason)
        elif any(st.degraded for st in self._phases.values()):
            self._move(ReadinessState.DEGRADED)
        else:
            self._move(ReadinessState.READY)
        return self._state

    def fail(self, reason: str) -> None:
        """Startup failed (from ``starting`` only)."""
        self._failure = reason
        self._move(ReadinessState.FAILED)

    def note_probe(self, name: str) -> None:
        """A recovery probe of ``name`` was made (shown in the snapshot)."""
        old = self._phases.get(name, PhaseStatus(name))
        self._phases[name] = replace(old, probes=old.probes + 1)

    def recovered(self, name: str, *, time_to_ready: float | None = None) -> ReadinessState:
        """A bypassed phase's dependency answered: clear its reason, maybe become ready.

        Before startup concluded the recovery is remembered and
        :meth:`finished` takes it into account.
        """
        old = self._phases.get(name)
        if old is None or old.outcome != "bypassed":
            got = "unknown" if old is None else old.outcome
            raise InvalidTransition(f"phase {name!r} cannot recover: it is {got}, not bypassed")
        if old.recovered_at is None:
            self._phases[name] = replace(
                old, recovered_at=self.clock.monotonic(), time_to_ready=time_to_ready
            )
        if self._state is ReadinessState.DEGRADED:
            if any(st.degraded for st in self._phases.values()):
                self._notify(self._state)  # still degraded, with one reason fewer
            else:
                self._move(ReadinessState.READY)
        return self._state

    # ---------------------------------------------------------------- internals

    def _move(self, new: ReadinessState) -> None:
        old = self._state
        if new not in _ALLOWED[old]:
            raise InvalidTransition(f"readiness cannot move from {old.value} to {new.value}")
        self._state = new
        self._since = self.clock.wall()
        self._log.info(
            "smd.readiness.changed",
            previous=old.value,
            state=new.value,
            reasons=list(self.reasons()),
        )
        self._notify(old)

    def _notify(self, previous: ReadinessState) -> None:
        snap = self.snapshot()
        for callback in list(self._listeners):
            try:
                callback(previous, snap)
            except Exception as exc:  # one broken listener must not hide the change
                self._log.warning(
                    "smd.readiness.listener_failed",
                    listener=repr(callback),
                    error=type(exc).__name__,
                )

    # ---------------------------------------------------------------- recovery

    def watch(
        self,
        task_group: anyio.abc.TaskGroup,
        phase: str,
        probe: Probe,
        **options: Any,
    ) -> RecoveryLoop:
        """Probe ``phase`` in ``task_group`` until it recovers; see :class:`RecoveryLoop`.

        ``started_at`` defaults to the phase's first start seen by
        :meth:`phase_started`. Cancelling the task group stops the loop.
        """
        if "started_at" not in options:
            st = self._phases.get(phase)
            if st is None or st.started_at is None:
                raise ValueError(
                    f"phase {phase!r} has no recorded start; pass started_at (monotonic seconds)"
                )
            options["started_at"] = st.started_at
        options.setdefault("clock", self.clock)
        loop = RecoveryLoop(phase, probe, readiness=self, **options)
        task_group.start_soon(loop.run)
        return loop


@dataclass(frozen=True, slots=True)
class Backoff:
    """Bounded exponential backoff with jitter between recovery probes.

    The ``k``-th ceiling is ``min(max, initial * factor**k)``; ``full`` jitter
    draws uniformly in ``[0, ceiling]`` (spreads a fleet best), ``equal`` in
    ``[ceiling/2, ceiling]``, ``none`` uses the ceiling. ``seed`` makes the
    draws reproducible; :meth:`delays` also takes any ``random()`` callable.
    """

    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: Literal["full", "equal", "none"] = "full"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.max >= self.initial and self.factor >= 1):
            raise ValueError(
                f"backoff needs initial > 0, max >= initial and factor >= 1 "
                f"(got initial={self.initial}, max={self.max}, factor={self.factor})"
            )
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(f"unknown jitter {self.jitter!r}; accepted: full, equal, none")

    def ceilings(self) -> Iterator[float]:
        """The un-jittered ceilings: initial, initial*factor, ..., max, max, ..."""
        ceiling = self.initial
        while True:
            yield ceiling
            # Grow multiplicatively but never past max (no overflow after many probes).
            ceiling = min(self.max, ceiling * self.factor)

    def delays(self, random: Callable[[], float] | None = None) -> Iterator[float]:
        """The jittered delays, forever."""
        draw = random if random is not None else _random.Random(self.seed).random
        for ceiling in self.ceilings():
            if self.jitter == "full":
                yield ceiling * draw()
            elif self.jitter == "equal":
                yield ceiling / 2 + ceiling / 2 * draw()
            else:
                yield ceiling


@dataclass(eq=False)
class RecoveryLoop:
    """Probes a bypassed phase until it answers, then marks it recovered.

    ``probe`` is an async callable with no argument; it succeeds when it
    returns anything but ``False`` within ``probe_timeout`` seconds, and fails
    when it raises an ``Exception``, returns ``False`` or times out.
    ``started_at`` is the phase's first start on ``clock.monotonic()``; the
    time-to-ready recorded on success is ``clock.monotonic() - started_at``,
    added to ``history`` with ``record_success`` (uncensored) and passed to
    ``record`` (sync or async, e.g. a store append); once ``record``
    returned, the sample is dropped from ``history.pending`` so that a later
    flush does not write it twice. ``sleep`` is injectable so tests do not
    sleep. Cancellation (shutdown) propagates at once.
    """

    phase: str
    probe: Probe
    readiness: Readiness | None = None
    started_at: float | None = None
    clock: Clock = field(default_factory=SystemClock)
    history: TimingHistory | None = None
    record: Record | None = None
    backoff: Backoff = field(default_factory=Backoff)
    random: Callable[[], float] | None = None
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep
    probe_timeout: float | None = 10.0
    log: Any = None
    attempts: int = field(default=0, init=False)
    delays: list[float] = field(default_factory=list, init=False)
    time_to_ready: float | None = field(default=None, init=False)
    done: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock.monotonic()
        if self.log is None:
            self.log = _log

    async def run(self) -> float:
        """Probe until success; return the time-to-ready in seconds."""
        delays = self.backoff.delays(self.random)
        try:
            while True:
                self.attempts += 1
                if self.readiness is not None:
                    self.readiness.note_probe(self.phase)
                error = await self._probe_once()
                if error is None:
                    return await self._succeeded()
                delay = next(delays)
                self.delays.append(delay)
                self.log.debug(
                    "smd.readiness.probe_failed",
                    phase=self.phase,
                    attempt=self.attempts,
                    error=error,
                    retry_in=round(delay, 6),
                )
                await self.sleep(delay)
        except anyio.get_cancelled_exc_class():
            self.log.debug("smd.readiness.recovery_stopped", phase=self.phase, probes=self.attempts)
            raise

    async def _probe_once(self) -> str | None:
        """``None`` on success, else a short description (never the raw message: secrets)."""
        try:
            if self.probe_timeout is None:
                result = await self.probe()
            else:
                result = None
                with anyio.move_on_after(self.probe_timeout) as scope:
                    result = await self.probe()
                if scope.cancelled_caught:
                    return f"no answer within {self.probe_timeout:g}s"
        except PhaseError as exc:
            return f"{exc.failure.kind.value}: {exc.failure.message}"
        except Exception as exc:
            return type(exc).__name__
        return "probe returned False" if result is False else None

    async def _succeeded(self) -> float:
        assert self.started_at is not None
        seconds = max(0.0, self.clock.monotonic() - self.started_at)
        self.time_to_ready = seconds
        if self.history is not None:
            sample = self.history.record_success(seconds)
            if self.record is not None:
                await self._record(sample)
        state = None
        if self.readiness is not None:
            try:
                state = self.readiness.recovered(self.phase, time_to_ready=seconds).value
            except InvalidTransition as exc:  # a background task must not crash the service
                self.log.warning("smd.readiness.recover_ignored", phase=self.phase, error=str(exc))
        self.done = True
        self.log.info(
            "smd.readiness.recovered",
            phase=self.phase,
            time_to_ready=round(seconds, 6),
            probes=self.attempts,
            state=state,
        )
        return seconds

    async def _record(self, sample: Sample) -> None:
        assert self.record is not None
        assert self.history is not None
        try:
            result = self.record(sample)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # losing one sample must not break recovery
            self.log.warning(
                "smd.readiness.record_failed", phase=self.phase, error=type(exc).__name__
            )
            return
        pending = self.history.pending
        for i, s in enumerate(pending):
            if s is sample:
                del pending[i]
                break


async def run_recovery(
    run: Any,
    phase: Phase,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> float:
    """Recover one bypassed phase of a ``StartupRun`` (the sequencer's hook).

    Calls ``phase.recovery`` with a fresh :class:`~smd.PhaseContext` per probe
    (deadline: the settings' ``phase_timeout``), records the time-to-ready in
    the target's history and persists it with ``run.persist()``, and tells
    ``run.readiness`` (when there is one).
    """
    from smd._phase import PhaseContext
    from smd._timeout_base import TimeoutDecision

    if phase.recovery is None:
        raise ValueError(f"phase {phase.name!r} has no recovery probe")
    recovery = phase.recovery
    target = run.target(phase)
    history: TimingHistory = run.histories[target]
    clock: Clock = run.clock
    per_probe = float(run.settings.phase_timeout)
    log = run.log.bind(phase=phase.name)

    async def probe() -> object:
        ctx = PhaseContext(
            phase=phase,
            settings=run.settings,
            log=log,
            results={r: run.values[r] for r in phase.requires if r in run.values},
            timeout=TimeoutDecision(per_probe, "fixed", "recovery probe: settings phase_timeout"),
            deadline=anyio.current_time() + per_probe,
            history=history,
            clock=clock,
        )
        value = await recovery(ctx)
        if value is not None and not isinstance(value, bool):
            # A probe that returns a value (a pool, a client) publishes it like
            # the phase would have: later requests and teardown can use it.
            run.values[phase.name] = value
            run.recovered.add(phase.name)
        return value

    # The phase's first start, from the report (seconds since the startup began).
    started_at = clock.monotonic()
    report = getattr(run, "report", None)
    if report is not None:
        rep = report.phase(phase.name)
        if rep.start is not None:
            began_wall = report.started_at + rep.start
            started_at -= max(0.0, clock.wall() - began_wall)

    async def persist(_: Sample) -> None:
        await run.persist()

    loop = RecoveryLoop(
        phase.name,
        probe,
        readiness=getattr(run, "readiness", None),
        started_at=started_at,
        clock=clock,
        history=history,
        record=persist,
        backoff=backoff or Backoff(),
        sleep=sleep or anyio.sleep,
        probe_timeout=per_probe,
        log=log,
    )
    return await loop.run()
