"""Running one phase under its deadline: the unit the scheduler calls per phase.

For one phase it computes the deadline (:func:`smd.timeouts.phase_timeout`,
cut to what is left of the startup budget), runs the phase's callable under
that deadline, turns whatever happened into an outcome (a failure is
classified: the phase's own ``PhaseError`` keeps its kind, a deadline is
``timeout``, anything else the phase raised is ``application``), asks the
bypass policy about a failure, records what was learned, and publishes the
events. Times come from the run's one clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from smd import plugins
from smd._deadline import needs_history, phase_timeout
from smd._encode import iso
from smd._failures import Failure, FailureKind
from smd._history_handles import Histories
from smd._phase import Phase, PhaseContext
from smd._phase_failures import deadline_failure, genuinely_cancelled, phase_failure
from smd._plan import Plan
from smd._policy import Action, BypassPolicy, Decision, DecisionContext, decide
from smd._report import Outcome, PhaseReport
from smd._samples import TimingHistory
from smd._settings import Settings
from smd._timeout_base import TimeoutDecision
from smd.clock import Clock, loop_time
from smd.events import (
    AttemptMade,
    BypassDecided,
    Event,
    PhaseFinished,
    PhaseStarted,
    TimeoutComputed,
)
from smd.exceptions import PhaseError
from smd.retry import Attempt

__all__ = ["PhaseOutcome", "PhaseRunner"]

# A phase that returns after its deadline blocked the event loop (nothing
# else can make it late: the deadline cancels any phase that awaits), or,
# with an injected clock, moved the run's time past it (ManualClock). Timer
# and scheduling jitter on a loaded 2-core machine stay well under this
# (benchmarks/engine.py measures wake-ups late by about 1 ms), so a phase
# later than the grace did not merely lose a race with its own deadline.
OVERRUN_GRACE = 0.1


@dataclass(frozen=True, slots=True)
class PhaseOutcome:
    """What running one phase produced: its report, its value, and (when it
    stopped the startup) the error to raise."""

    report: PhaseReport
    value: Any = None
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class _Ran:
    """What happened while a phase ran, before it is judged and reported."""

    phase: Phase
    ctx: PhaseContext
    history: TimingHistory
    timeout: TimeoutDecision
    source: str
    length: float
    now: float
    end: float
    failure: Failure | None
    error: BaseException | None
    value: Any
    note: str = ""
    extended: str = ""


def _ceil(x: float) -> str:
    return f"{x:.3g}s"


class PhaseRunner:
    """Runs single phases for one run (shared state is passed in, never reached for)."""

    def __init__(
        self,
        *,
        startup: str,
        plan: Plan,
        settings: Settings,
        clock: Clock,
        histories: Histories,
        policy: BypassPolicy,
        emit: Callable[[Event], None],
        log: Any,
        origin: float,
        budget_deadline: float,
    ) -> None:
        self.startup = startup
        self.plan = plan
        self.settings = settings
        self.clock = clock
        self.histories = histories
        self.policy = policy
        self.emit = emit
        self.log = log
        self.origin = origin
        self.budget_deadline = budget_deadline
        self.environment = settings.environment.value
        #: name -> (started, deadline, context) of the phases running now.
        self.running: dict[str, tuple[float, float, PhaseContext]] = {}
        #: name -> start (seconds since the run began) of every phase that started.
        self.started: dict[str, float] = {}
        #: name -> (began, returned) on the event loop's clock, for the watchdog.
        self.spans: dict[str, tuple[float, float | None]] = {}
        #: name -> the cancel scope that enforces a running phase's deadline.
        self._scopes: dict[str, anyio.CancelScope] = {}
        #: name -> (new length, reason) of a phase whose deadline was extended.
        self._extended: dict[str, tuple[float, str]] = {}

    def _extend(self, name: str, seconds: float, reason: str) -> None:
        """``ctx.extend_deadline``: the phase may run until ``seconds`` after it
        began, if that is later than now allowed and within the startup budget."""
        running, scope = self.running.get(name), self._scopes.get(name)
        if running is None or scope is None:
            return
        began, deadline, ctx = running
        target = min(began + seconds, self.budget_deadline)
        if target <= deadline:
            return
        # The scope's deadline is on the loop's clock, the phase's on the run's.
        scope.deadline = self.spans[name][0] + (target - began)
        ctx.deadline = target
        self.running[name] = (began, target, ctx)
        self._extended[name] = (target - began, reason)

    async def run(self, phase: Phase, values: Mapping[str, Any]) -> PhaseOutcome:
        """Run ``phase`` once under its deadline; never raises for the phase's own failures."""
        name = phase.name
        key = self.histories.key(phase)
        policy = phase.timeout_policy()
        # The target's history: waited for only when the timeout is computed from it.
        if needs_history(policy):
            history = await self.histories.past(key)
        else:
            history = self.histories.now(key)
        timeout = phase_timeout(policy, history, self.settings)
        self.emit(TimeoutComputed(self.startup, name, key, timeout))
        now = self.clock.monotonic()
        own = now + timeout.seconds
        deadline = min(own, self.budget_deadline)
        if own <= self.budget_deadline:
            source = f"{timeout.source}: {timeout.explanation}"
        else:
            left = max(0.0, self.budget_deadline - now)
            source = (
                f"startup budget: {_ceil(left)} left of {self.settings.startup_budget:g}s "
                f"(phase timeout {timeout.seconds:.3g}s, {timeout.source})"
            )
        length = deadline - now

        def attempt_made(attempt: Attempt) -> None:
            self.emit(AttemptMade(self.startup, name, attempt))

        ctx = PhaseContext(
            phase=phase,
            settings=self.settings,
            log=self.log,
            results={r: values[r] for r in phase.requires},
            timeout=timeout,
            deadline=deadline,
            history=history,
            clock=self.clock,
            origin=self.origin,
            on_attempt=attempt_made,
            on_extend=self._extend,
        )
        attempt_deadline = min(timeout.attempt_seconds or timeout.seconds, length)
        self.running[name] = (now, deadline, ctx)
        self.started[name] = now - self.origin
        self.emit(
            PhaseStarted(
                self.startup, name, self.plan.wave_of(name), length, source, attempt_deadline, now
            )
        )
        error: BaseException | None = None
        value: Any = None
        note = ""
        # The deadline lives on the run's clock; the event loop enforces it.
        loop_start = loop_time()
        self.spans[name] = (loop_start, None)
        try:
            with anyio.CancelScope(deadline=loop_start + length) as scope:
                self._scopes[name] = scope
                try:
                    value, note = await self._call(phase, ctx)
                except BaseException as exc:
                    if genuinely_cancelled(exc):
                        raise
                    # Anything else the phase's code raised is its failure,
                    # BaseException subclasses included (SystemExit,
                    # KeyboardInterrupt, a CancelledError it raised itself).
                    error = exc
        finally:
            self.running.pop(name, None)
            self._scopes.pop(name, None)
            loop_end = loop_time()
            self.spans[name] = (loop_start, loop_end)
        end = self.clock.monotonic()
        elapsed = end - now
        loop_elapsed = loop_end - loop_start
        # The deadline the phase ended under (later if it was extended).
        length = ctx.deadline - now
        extended = ""
        if name in self._extended:
            seconds, extended = self._extended.pop(name)
            source += f"; extended to {_ceil(seconds)}: {extended}"
        failure: Failure | None = None
        if scope.cancelled_caught or (error is not None and scope.cancel_called):
            failure = deadline_failure(name, length, source, ctx.attempts, error, elapsed)
        elif error is not None:
            failure = phase_failure(name, error, elapsed)
        elif elapsed > length + OVERRUN_GRACE:
            # Late on the run's clock: with the system clock the loop was
            # blocked; with an injected clock (a ManualClock the phase slept
            # on) the run's time moved past the deadline without the loop's.
            why = (
                "it blocked the event loop (a deadline cannot preempt blocking code)"
                if loop_elapsed > length + OVERRUN_GRACE
                else f"the run's clock ({type(self.clock).__name__}) passed it while it ran"
            )
            failure = Failure(
                FailureKind.TIMEOUT,
                f"phase {name!r} overran its {length:.3g}s deadline by {elapsed - length:.3g}s; "
                + why,
                attempts=max(1, len(ctx.attempts)),
                elapsed=elapsed,
                deadline_reached=True,
            )
        return await self._conclude(
            _Ran(
                phase,
                ctx,
                history,
                timeout,
                source,
                length,
                now,
                end,
                failure,
                error,
                value,
                note,
                extended,
            )
        )

    async def _call(self, phase: Phase, ctx: PhaseContext) -> tuple[Any, str]:
        """Run the phase's code (through the fleet coordinator for ``once`` phases)."""
        if not phase.once:
            return await phase.run(ctx), ""
        coordinator = plugins.coordinator(self.settings)
        if coordinator is None:
            raise PhaseError(
                Failure(
                    FailureKind.CONFIGURATION,
                    f"phase {phase.name!r} runs once per fleet, but no fleet coordinator is "
                    "configured: set SMD_FLEET_URL (or SMD_DATABASE_URL) to the PostgreSQL "
                    "database the replicas share",
                )
            )
        key = phase.once_key or f"{self.startup}/{phase.name}"
        outcome = await coordinator.run_once(
            key, lambda: phase.run(ctx), deadline_seconds=max(0.0, ctx.remaining())
        )
        if outcome.ran:
            return outcome.value, ""
        when = iso(outcome.done_at) or "an earlier start"
        return None, f"done by another replica ({outcome.done_by or 'unknown'}) at {when}"

    async def _conclude(self, ran: _Ran) -> PhaseOutcome:
        phase, ctx, history, failure, error = (
            ran.phase,
            ran.ctx,
            ran.history,
            ran.failure,
            ran.error,
        )
        now, end = ran.now, ran.end
        name = phase.name
        key = self.histories.key(phase)
        decision: Decision | None = None
        reason = ""
        stop: Exception | None = None
        if failure is None:
            outcome = Outcome.OK
            # A once phase another replica had done took milliseconds here:
            # that is no time-to-ready of the work, and would teach a deadline
            # far too short for the next replica that really runs it.
            if not ran.note:
                history.record_success(end - now)
        else:
            # Decide first, on the past history: the verdict must not count
            # the failure it judges.
            past = await self.histories.past(key)
            decision = self.decide(phase, failure, past)
            # Censor by cause: a wait the deadline ended while the failure
            # could still heal is "ready after at least this long".
            if failure.kind is FailureKind.TIMEOUT or failure.deadline_reached:
                history.record_timeout(end - now)
            else:
                history.record_failure(failure.kind)
            if decision.action is Action.CONTINUE:
                outcome = Outcome.BYPASSED
                history.record_bypass()
                reason = f"{name}: {failure.kind.value} failure bypassed: {decision.reason}"
            else:
                outcome = Outcome.FAILED
                reason = decision.reason
                if isinstance(error, Exception):
                    stop = error
                else:
                    stop = PhaseError(failure)
                    if error is not None:
                        stop.__cause__ = error
        report = PhaseReport(
            name=name,
            wave=self.plan.wave_of(name),
            requires=phase.requires,
            outcome=outcome,
            start=now - self.origin,
            end=end - self.origin,
            timeout=ran.timeout,
            deadline=ran.length,
            deadline_source=ran.source,
            deadline_extended=ran.extended,
            failure=failure,
            decision=decision,
            reason=reason,
            attempts=tuple(ctx.attempts),
            target=key,
            note=ran.note,
        )
        self.emit(PhaseFinished(self.startup, name, report))
        return PhaseOutcome(report, ran.value if failure is None else None, stop)

    def decide(self, phase: Phase, failure: Failure, history: TimingHistory) -> Decision:
        """The bypass verdict on a phase's failure (published as ``BypassDecided``)."""
        context = DecisionContext(
            phase=phase.name,
            environment=self.environment,
            essential=phase.essential,
            target=self.histories.key(phase),
            history=history,
            clock=self.clock,
            settings=self.settings.bypass,
        )
        decision = decide(phase.bypass or self.policy, failure, context)
        self.emit(
            BypassDecided(
                self.startup, phase.name, self.environment, context.target, failure, decision
            )
        )
        return decision

    def skipped(self, phase: Phase, reason: str) -> PhaseReport:
        """The report of a phase that did not run because a requirement did not end ``ok``."""
        report = PhaseReport(
            name=phase.name,
            wave=self.plan.wave_of(phase.name),
            requires=phase.requires,
            outcome=Outcome.SKIPPED,
            reason=reason,
            target=self.histories.key(phase),
        )
        self.emit(PhaseFinished(self.startup, phase.name, report))
        return report
