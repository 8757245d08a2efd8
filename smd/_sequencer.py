"""Runs a plan: every phase as soon as its requirements are ``ok`` (or one at a
time in ``sequential`` mode), each under min(its timeout, budget left).

Lifecycle semantics follow uber-go/fx: stop at the first failure the bypass
policy will not let through, roll back only what completed, in reverse plan
order, keep going on teardown errors and raise them together with the
original failure.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc

from smd._clock import Clock, SystemClock
from smd._failures import Failure, FailureKind, PhaseError
from smd._logging import get_logger
from smd._phase import Phase, PhaseContext, Startup
from smd._policy import Action, BypassPolicy, Decision, DecisionContext
from smd._redact import redact
from smd._report import Outcome, PhaseReport, Report, StartupFailed, State
from smd._samples import TimingHistory
from smd._settings import Settings, load_settings
from smd._store import HistoryStore
from smd._timeout_base import TimeoutContext, TimeoutDecision

__all__ = ["Mode", "StartupRun", "default_policy", "default_store", "lifecycle", "run_startup"]

Mode = Literal["concurrent", "sequential"]
# A phase that used this share of its deadline "timed out" for learning purposes
# (DatabasePhase stops a hair before the deadline on purpose).
_CENSOR_FRACTION = 0.9


def default_policy(settings: Settings) -> BypassPolicy:
    """The bypass matrix for the settings' environment."""
    from smd._matrix import BypassMatrix

    policy: BypassPolicy = BypassMatrix.from_settings(settings)
    return policy


def default_store(settings: Settings, *, readonly: bool = False) -> HistoryStore:
    """The embedded history store the settings point at (never raises)."""
    from smd._sqlite_store import open_store

    return open_store(settings, readonly=readonly)


def _ceil(x: float) -> str:
    return f"{x:.3g}s"


class StartupRun:
    """One run of a startup: start it, read its values and report, stop it.

    ``start()`` runs the phases; on failure it rolls back and raises
    :class:`StartupFailed`. ``stop()`` tears down the completed phases in
    reverse plan order. Use :func:`lifecycle` to get both plus background
    recovery of bypassed phases.
    """

    def __init__(
        self,
        startup: Startup,
        *,
        settings: Settings | None = None,
        mode: Mode = "concurrent",
        store: HistoryStore | None = None,
        policy: BypassPolicy | None = None,
        clock: Clock | None = None,
        log: Any = None,
        readiness: Any = None,
    ) -> None:
        if mode not in ("concurrent", "sequential"):
            raise ValueError(f"unknown mode {mode!r}; accepted: concurrent, sequential")
        self.startup = startup
        self.plan = startup.plan()
        self.settings = settings if settings is not None else load_settings()
        self.mode: Mode = mode
        self.store = store if store is not None else default_store(self.settings)
        self.policy = policy or startup.bypass or default_policy(self.settings)
        self.clock = clock or SystemClock()
        self.log = log if log is not None else get_logger("smd", startup=startup.name)
        # Built on first use: `smd plan` makes a StartupRun but never runs it,
        # and should not pay for importing readiness (issue 6, cold start).
        self._readiness: Any = readiness
        self.env = self.settings.environment.value
        self.values: dict[str, Any] = {}
        self.report: Report | None = None
        self.histories: dict[str, TimingHistory] = {}
        self._phase_reports: dict[str, PhaseReport] = {}
        # Created by start(): an anyio.Event made outside an event loop imports
        # anyio's synchronization module, a cost `smd plan` need not pay.
        self._done: dict[str, anyio.Event] = {}
        self._running: dict[str, tuple[float, float, PhaseContext]] = {}
        self._started_at: dict[str, float] = {}
        self._failed: str | None = None
        self._phase_errors: list[Exception] = []
        self._reasons: list[str] = []
        self._recover: list[Phase] = []
        self._torn_down = False
        self._teardown_exc: list[Exception] = []
        self.recovered: set[str] = set()
        self._targets: dict[str, str] = {}
        self._t0 = 0.0
        self._anyio_t0 = 0.0
        self._wall0 = 0.0
        self._budget_deadline = math.inf

    # -- helpers ---------------------------------------------------------

    def target(self, phase: Phase) -> str:
        """The history key of a phase's dependency in this environment.

        Resolved once per phase: a target computed from settings (a DSN) is
        parsed once, not at every lookup on the phase's path.
        """
        key = self._targets.get(phase.name)
        if key is None:
            key = self._targets[phase.name] = f"{phase.target_key(self.settings)}@{self.env}"
        return key

    @property
    def readiness(self) -> Any:
        """The :class:`~smd.Readiness` this run reports to (made on first use)."""
        if self._readiness is None:
            from smd._readiness import Readiness

            self._readiness = Readiness(clock=self.clock, log=self.log)
        return self._readiness

    def _rel(self) -> float:
        return self.clock.monotonic() - self._t0

    def _notify(self, method: str, *args: Any) -> None:
        getattr(self.readiness, method)(*args)

    def compute_timeout(self, phase: Phase, history: TimingHistory) -> TimeoutDecision:
        """The phase's own deadline from its timeout policy (or the default)."""
        policy = phase.timeout_policy()
        if policy is None:
            s = self.settings.phase_timeout
            return TimeoutDecision(
                s, "default", f"no timeout on the phase: settings phase_timeout = {s:g}s"
            )
        context = TimeoutContext(
            self.env,
            self.settings.timeouts.for_env(self.settings.environment),
            self.settings.timeouts.profile,
            self.settings.timeouts.min_samples,
        )
        try:
            return policy.compute(history, context)
        except Exception as exc:  # a broken policy must not hide the phase
            s = self.settings.phase_timeout
            self.log.warning("smd.timeout.error", phase=phase.name, error=redact(repr(exc)))
            return TimeoutDecision(s, "default", f"timeout policy raised {exc!r}; using {s:g}s")

    def policy_for(self, phase: Phase) -> BypassPolicy:
        """The policy that judges this phase (its own, bound to the run's settings)."""
        from smd._matrix import BypassMatrix

        policy = phase.bypass or self.policy
        if isinstance(policy, BypassMatrix):
            return policy.bind(self.settings)
        return policy

    def _decide(self, phase: Phase, failure: Failure, history: TimingHistory) -> Decision:
        from smd._matrix import BypassMatrix, apply_force, decision_event

        policy = self.policy_for(phase)
        ctx = DecisionContext(
            phase=phase.name,
            environment=self.env,
            essential=phase.essential,
            target=self.target(phase),
            history=history,
            clock=self.clock,
        )
        try:
            decision = policy.decide(failure, ctx)
            if not isinstance(policy, BypassMatrix):
                # The matrix applies force itself; user policies get the same rule.
                decision = apply_force(decision, failure, ctx, self.settings.bypass, log=self.log)
        except Exception as exc:
            decision = Decision(
                Action.FAIL, f"bypass policy raised {type(exc).__name__}: {exc}; failing safe"
            )
        # One mechanism: every decision of every policy is logged here, once.
        self.log.info("smd.bypass.decided", **decision_event(failure, ctx, decision))
        return decision

    # -- running -----------------------------------------------------------

    async def _run_phase(self, phase: Phase) -> None:
        name = phase.name
        history = self.histories[self.target(phase)]
        decision_t = self.compute_timeout(phase, history)
        now = anyio.current_time()
        own = now + decision_t.seconds
        deadline = min(own, self._budget_deadline)
        if own <= self._budget_deadline:
            source = f"{decision_t.source}: {decision_t.explanation}"
        else:
            left = max(0.0, self._budget_deadline - now)
            source = (
                f"startup budget: {_ceil(left)} left of {self.settings.startup_budget:g}s "
                f"(phase timeout {decision_t.seconds:.3g}s, {decision_t.source})"
            )
        log = self.log.bind(phase=name)
        ctx = PhaseContext(
            phase=phase,
            settings=self.settings,
            log=log,
            results={r: self.values[r] for r in phase.requires},
            timeout=decision_t,
            deadline=deadline,
            history=history,
            clock=self.clock,
            origin=self._t0,
        )
        start = self._rel()
        self._started_at[name] = start
        self._running[name] = (now, deadline, ctx)
        self._notify("phase_started", name)
        log.info(
            "smd.phase.started",
            wave=self.plan.wave_of(name),
            deadline=round(deadline - now, 6),
            deadline_source=source,
        )
        error: Exception | None = None
        value: Any = None
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                try:
                    value = await phase.run(ctx)
                except Exception as exc:
                    error = exc
        finally:
            self._running.pop(name, None)
        end = self._rel()
        elapsed = end - start
        failure: Failure | None = None
        if scope.cancelled_caught or (error is not None and scope.cancel_called):
            failure = Failure(
                FailureKind.TIMEOUT,
                f"phase {name!r} did not finish within its deadline of {deadline - now:.3g}s ({source})",
                cause=error,
                attempts=max(1, len(ctx.attempts)),
                elapsed=elapsed,
            )
        elif isinstance(error, PhaseError):
            failure = error.failure
        elif error is not None:
            failure = Failure(
                FailureKind.APPLICATION,
                f"phase {name!r} raised {type(error).__name__}: {error}",
                cause=error,
                elapsed=elapsed,
            )
        decision: Decision | None = None
        reason = ""
        if failure is None:
            outcome = Outcome.OK
            self.values[name] = value
            history.record_success(elapsed)
        else:
            # Decide first: the verdict must not count the failure it judges.
            decision = self._decide(phase, failure, history)
            # A start that waited out (nearly) its whole deadline is a censored
            # time-to-ready sample: "at least this long". One that gave up
            # early (a single refused try) says nothing about latency.
            if failure.kind is FailureKind.TIMEOUT or (
                failure.kind.may_heal and elapsed >= _CENSOR_FRACTION * (deadline - now)
            ):
                history.record_timeout(elapsed)
            else:
                history.record_failure(failure.kind)
            if decision.action is Action.CONTINUE:
                outcome = Outcome.BYPASSED
                history.record_bypass()
                reason = f"{name}: {failure.kind.value} failure bypassed: {decision.reason}"
                self._reasons.append(reason)
                if phase.recovery is not None:
                    self._recover.append(phase)
            else:
                outcome = Outcome.FAILED
                reason = decision.reason
                if self._failed is None:
                    self._failed = name
                    self._phase_errors.append(error if error is not None else PhaseError(failure))
        self._phase_reports[name] = PhaseReport(
            name=name,
            wave=self.plan.wave_of(name),
            requires=phase.requires,
            outcome=outcome,
            start=start,
            end=end,
            timeout=decision_t,
            deadline=deadline - now,
            deadline_source=source,
            failure=failure,
            decision=decision,
            reason=reason,
            attempts=tuple(ctx.attempts),
            target=self.target(phase),
        )
        self._notify("phase_finished", name, outcome.value, reason)
        log.info(
            "smd.phase.finished",
            outcome=outcome.value,
            duration=round(elapsed, 6),
            **({"kind": failure.kind.value, "error": failure.message} if failure else {}),
        )

    def _skip(self, phase: Phase, reason: str) -> None:
        self._phase_reports[phase.name] = PhaseReport(
            name=phase.name,
            wave=self.plan.wave_of(phase.name),
            requires=phase.requires,
            outcome=Outcome.SKIPPED,
            reason=reason,
            target=self.target(phase),
        )
        self._notify("phase_finished", phase.name, Outcome.SKIPPED.value, reason)
        self.log.info("smd.phase.finished", phase=phase.name, outcome="skipped", reason=reason)

    def _blocked_by(self, phase: Phase) -> str | None:
        for req in phase.requires:
            rep = self._phase_reports.get(req)
            if rep is None or rep.outcome is not Outcome.OK:
                got = rep.outcome.value if rep else "not run"
                return f"requirement {req!r} ended {got}"
        return None

    async def _concurrent_task(self, phase: Phase, tg: anyio.abc.TaskGroup) -> None:
        for req in phase.requires:
            await self._done[req].wait()
        blocked = self._blocked_by(phase)
        if blocked is not None:
            self._skip(phase, blocked)
        else:
            await self._run_phase(phase)
            if self._failed is not None:
                tg.cancel_scope.cancel()
        self._done[phase.name].set()

    async def _sequential(self) -> None:
        for name in self.plan.order:
            phase = self.plan.phase(name)
            blocked = self._blocked_by(phase)
            if blocked is not None:
                self._skip(phase, blocked)
                continue
            await self._run_phase(phase)
            if self._failed is not None:
                return

    async def _progress(self, stop: anyio.Event) -> None:
        interval = self.settings.progress_interval
        while not stop.is_set():
            with anyio.move_on_after(interval):
                await stop.wait()
            if stop.is_set():
                return
            now = anyio.current_time()
            for name, (began, deadline, ctx) in list(self._running.items()):
                if now - began >= interval:
                    self.log.info(
                        "smd.phase.waiting",
                        phase=name,
                        waited=round(now - began, 3),
                        deadline=round(deadline - began, 3),
                        left=round(deadline - now, 3),
                        attempts=len(ctx.attempts),
                    )

    async def _load_histories(self) -> None:
        def load() -> dict[str, TimingHistory]:
            out: dict[str, TimingHistory] = {}
            for p in self.plan.phases:
                key = self.target(p)
                if key not in out:
                    out[key] = self.store.load(key, clock=self.clock)
            return out

        self.histories = await anyio.to_thread.run_sync(load)

    async def persist(self) -> None:
        """Write every new sample to the store (shielded: nothing learned is lost)."""
        batches = {k: list(h.pending) for k, h in self.histories.items() if h.pending}
        for h in self.histories.values():
            h.pending.clear()
        if not batches:
            return

        def write() -> None:
            self.store.append_many(batches)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(write)

    async def start(self, task_group: anyio.abc.TaskGroup | None = None) -> Report:
        """Run the phases. Raises :class:`StartupFailed` after rolling back."""
        self._done = {p.name: anyio.Event() for p in self.plan.phases}
        self._t0 = self.clock.monotonic()
        self._wall0 = self.clock.wall()
        self._anyio_t0 = anyio.current_time()
        self._budget_deadline = self._anyio_t0 + self.settings.startup_budget
        self._notify("starting")
        self.log.info(
            "smd.startup.started",
            environment=self.env,
            mode=self.mode,
            phases=len(self.plan.phases),
            budget=self.settings.startup_budget,
        )
        try:
            await self._load_histories()
            stop = anyio.Event()
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._progress, stop)
                try:
                    if self.mode == "sequential":
                        await self._sequential()
                    else:
                        async with anyio.create_task_group() as tg:
                            for name in self.plan.order:
                                tg.start_soon(self._concurrent_task, self.plan.phase(name), tg)
                finally:
                    stop.set()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._rollback()
                await self.persist()
                # Built after the rollback so that it carries the teardown errors.
                self.report = self._build_report(interrupted=True)
                self._notify("finished", self.report)
                self.log.warning(
                    "smd.startup.finished",
                    state="failed",
                    interrupted=True,
                    duration=round(self.report.duration, 6),
                )
            raise
        if self._failed is not None:
            await self._rollback()
            await self.persist()
            self.report = report = self._build_report()
            self._notify("finished", report)
            self.log.error(
                "smd.startup.finished",
                state="failed",
                failed_phase=self._failed,
                duration=round(report.duration, 6),
            )
            raise StartupFailed(report, [*self._phase_errors, *self._teardown_exc])
        self.report = report = self._build_report()
        self._notify("finished", report)
        self.log.info(
            "smd.startup.finished",
            state=report.state.value,
            duration=round(report.duration, 6),
            reasons=list(report.reasons),
        )
        # After readiness flips: what was learned is written (shielded), but
        # the service does not wait on the disk to be declared ready.
        await self.persist()
        if task_group is not None and self._recover:
            for phase in self._recover:
                task_group.start_soon(self._recovery_loop, phase)
        return report

    async def _rollback(self) -> None:
        errors: list[Exception] = []
        if self._torn_down:
            return
        self._torn_down = True
        done = [
            n
            for n in reversed(self.plan.order)
            if n in self.recovered
            or ((r := self._phase_reports.get(n)) is not None and r.outcome is Outcome.OK)
        ]
        with anyio.CancelScope(shield=True):
            for name in done:
                phase = self.plan.phase(name)
                if phase.teardown is None:
                    continue
                try:
                    with anyio.fail_after(self.settings.phase_timeout):
                        await phase.teardown(self.values.get(name))
                    self.log.info("smd.phase.teardown", phase=name, ok=True)
                except Exception as exc:
                    errors.append(exc)
                    self.log.error(
                        "smd.phase.teardown",
                        phase=name,
                        ok=False,
                        error=redact(f"{type(exc).__name__}: {exc}"),
                    )
        self._teardown_exc = errors

    async def stop(self) -> None:
        """Tear down completed phases in reverse plan order; raise their errors together."""
        await self._rollback()
        await self.persist()
        if self._teardown_exc:
            raise ExceptionGroup(
                f"{len(self._teardown_exc)} teardown(s) failed in startup {self.startup.name!r}",
                self._teardown_exc,
            )

    async def _recovery_loop(self, phase: Phase) -> None:
        from smd._readiness import run_recovery

        await run_recovery(self, phase)

    def _build_report(self, interrupted: bool = False) -> Report:
        phases: list[PhaseReport] = []
        for name in self.plan.order:
            rep = self._phase_reports.get(name)
            if rep is None:
                phase = self.plan.phase(name)
                started = name in self._started_at
                why = (
                    f"startup stopped after phase {self._failed!r} failed"
                    if self._failed
                    else "startup was interrupted"
                )
                rep = PhaseReport(
                    name=name,
                    wave=self.plan.wave_of(name),
                    requires=phase.requires,
                    outcome=Outcome.CANCELLED if started else Outcome.SKIPPED,
                    start=self._started_at.get(name),
                    end=self._rel() if started else None,
                    reason=("cancelled: " if started else "not started: ") + why,
                    target=self.target(phase),
                )
            phases.append(rep)
        if self._failed is not None or interrupted:
            state = State.FAILED
        elif self._reasons:
            state = State.DEGRADED
        else:
            state = State.READY
        return Report(
            startup=self.startup.name,
            environment=self.env,
            mode=self.mode,
            state=state,
            plan=self.plan,
            phases=tuple(phases),
            started_at=self._wall0,
            duration=self._rel(),
            budget=self.settings.startup_budget,
            reasons=tuple(self._reasons),
            teardown_errors=tuple(redact(f"{type(e).__name__}: {e}") for e in self._teardown_exc),
        )


async def run_startup(startup: Startup, **options: Any) -> Report:
    """Run a startup as a gate: run every phase, then tear down what started.

    Returns the report when ready or degraded; raises :class:`StartupFailed`
    (with ``.report``) otherwise. Options are those of :class:`StartupRun`.
    """
    run = StartupRun(startup, **options)
    report = await run.start()
    await run.stop()
    return report


@asynccontextmanager
async def lifecycle(
    startup: Startup, *, recover: bool = True, **options: Any
) -> AsyncIterator[StartupRun]:
    """Start on enter, tear down on exit; bypassed phases with a recovery probe
    are probed in the background meanwhile (and stopped at exit)."""
    run = StartupRun(startup, **options)
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        try:
            await run.start(tg if recover else None)
            try:
                yield run
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await run.stop()
        except Exception as exc:
            # Raised from the task group's host, it would come out wrapped in
            # an ExceptionGroup: StartupFailed and the body's own errors must
            # reach the caller as themselves.
            error = exc
    if error is not None:
        raise error
