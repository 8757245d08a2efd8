"""One run of a startup: start it, read its values and report, stop it.

Lifecycle semantics follow uber-go/fx: stop at the first failure the bypass
policy will not let through, roll back only what completed, in reverse plan
order, within a stop budget of its own, keep going on teardown errors and
raise them together with the original failure.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.abc

from smd._history_handles import Histories
from smd._logging import get_logger
from smd._matrix import BypassMatrix
from smd._observers import dispatch
from smd._open_store import open_store
from smd._phase import Phase
from smd._policy import BypassPolicy
from smd._readiness import Readiness
from smd._recovery import recover
from smd._report import Outcome, PhaseReport, Report, State
from smd._runner import PhaseRunner
from smd._scheduler import Mode, Scheduler
from smd._settings import Settings
from smd._settings_load import load_settings
from smd._startup import Startup
from smd._store import HistoryStore
from smd.clock import Clock, SystemClock
from smd.events import (
    Dispatch,
    LoopBlocked,
    Observer,
    PhaseWaiting,
    StartupFinished,
    StartupStarted,
    TeardownFinished,
)
from smd.exceptions import StartupFailed

__all__ = ["StartupRun"]

# The watchdog wakes this often to see whether the event loop kept up; a
# wake-up later than BLOCKED_AFTER means something blocked the loop (a
# phase calling time.sleep or heavy CPU work), reported once per stall.
# 50 ms costs nothing measurable (20 wake-ups/s) and 0.25 s is far above
# scheduling jitter yet short enough to catch the stall while it matters.
_WATCH_TICK = 0.05
BLOCKED_AFTER = 0.25

_SIGNALS = {"sigterm": _signal.SIGTERM, "sigint": _signal.SIGINT, "sighup": _signal.SIGHUP}


class StartupRun:
    """One run of a startup (short-lived; the :class:`~smd.Startup` is the definition).

    Use it through :func:`smd.lifecycle` (or :func:`smd.run_startup`), which
    start it, keep it while the block runs, and stop it. ``values`` holds what
    the ``ok`` (and recovered) phases returned, ``report`` the run's report once
    started, ``readiness`` its readiness state machine.
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
        observers: Iterable[Observer] = (),
        log: Any = None,
    ) -> None:
        self.startup = startup
        self.plan = startup.plan()
        self.settings = settings if settings is not None else load_settings()
        self.clock: Clock = clock or SystemClock()
        self.store: HistoryStore = store if store is not None else open_store(self.settings)
        self.policy: BypassPolicy = policy or startup.bypass or BypassMatrix()
        self.log = log if log is not None else get_logger("smd", startup=startup.name)
        self.readiness = Readiness(startup.name, clock=self.clock)
        self.emit: Dispatch = dispatch(
            self.settings, self.log, self.readiness, startup.observers, observers
        )
        self.readiness.emit = self.emit
        self.histories = Histories(
            self.store,
            startup=startup.name,
            phases=self.plan.phases,
            settings=self.settings,
            clock=self.clock,
            log=self.log,
        )
        self.scheduler = Scheduler(self.plan, self._runner(0.0, 0.0), mode)
        self.mode: Mode = mode
        self.values = self.scheduler.values
        self.report: Report | None = None
        self.recovered: set[str] = set()
        self.interrupted: str | None = None
        #: Whether :meth:`start` was called (a run starts once).
        self.started = False
        self._origin = 0.0
        self._wall0 = 0.0
        self._stopping: anyio.CancelScope | None = None
        self._torn_down = False
        self._teardown_errors: list[Exception] = []
        self._teardown_skipped: list[str] = []
        self._teardowns_done: set[str] = set()

    def _runner(self, origin: float, budget_deadline: float) -> PhaseRunner:
        return PhaseRunner(
            startup=self.startup.name,
            plan=self.plan,
            settings=self.settings,
            clock=self.clock,
            histories=self.histories,
            policy=self.policy,
            emit=self.emit,
            log=self.log,
            origin=origin,
            budget_deadline=budget_deadline,
        )

    @property
    def env(self) -> str:
        """The environment's name."""
        return self.settings.environment.value

    def target(self, phase: Phase) -> str:
        """The history key of a phase's dependency in this startup and environment."""
        return self.histories.key(phase)

    # -- signals --------------------------------------------------------------------

    def interrupt(self, name: str) -> None:
        """Note that a signal (``sigterm``, ``sigint``, ``sighup``) interrupts this run.

        The caller cancels the run; the report then says ``interrupted`` and
        the exit code is the signal's. A second signal while teardown runs
        abandons the remaining teardowns (they are named in the report).
        """
        if name not in _SIGNALS:
            raise ValueError(f"unknown signal {name!r}; accepted: {', '.join(_SIGNALS)}")
        if self.interrupted is None:
            self.interrupted = name
        elif self._stopping is not None:
            self._stopping.cancel()

    # -- starting ---------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup | None = None) -> Report:
        """Run the phases. Raises :class:`~smd.StartupFailed` after rolling back.

        With ``task_group``, bypassed phases that have a recovery probe are
        probed in it until they recover (cancel the group to stop them).
        """
        if self.started:
            raise RuntimeError(f"this run of startup {self.startup.name!r} was already started")
        self.started = True
        self._origin = self.clock.monotonic()
        self._wall0 = self.clock.wall()
        runner = self.scheduler.runner = self._runner(
            self._origin, self._origin + self.settings.startup_budget
        )
        self.emit(
            StartupStarted(
                self.startup.name,
                self.env,
                self.mode,
                self.plan.order,
                self.settings.startup_budget,
                self._wall0,
                self._origin,
            )
        )
        try:
            async with anyio.create_task_group() as aux:
                aux.start_soon(self.histories.load)
                aux.start_soon(self._progress, runner)
                aux.start_soon(self._watchdog, runner)
                try:
                    await self.scheduler.run()
                finally:
                    aux.cancel_scope.cancel()
        except BaseException:
            # Interrupted (a signal, the caller's cancel scope): roll back what
            # completed, keep what was learned, say so, and let it propagate.
            with anyio.CancelScope(shield=True):
                await self._rollback()
                await self.histories.persist()
                self.report = self._build_report(interrupted=True)
                self.emit(StartupFinished(self.startup.name, self.report))
            raise
        if self.scheduler.failed is not None:
            await self._rollback()
            await self.histories.persist()
            self.report = self._build_report()
            self.emit(StartupFinished(self.startup.name, self.report))
            raise StartupFailed(self.report, [*self.scheduler.errors, *self._teardown_errors])
        self.report = report = self._build_report()
        self.emit(StartupFinished(self.startup.name, report))
        # After readiness flipped: what was learned is written (shielded), but
        # the service does not wait on the disk to be declared ready.
        await self.histories.persist()
        if task_group is not None:
            for phase in self.plan.phases:
                rep = report.phase(phase.name)
                if rep.outcome is Outcome.BYPASSED and phase.recovery is not None:
                    task_group.start_soon(self._recover, phase, rep)
        return report

    async def _recover(self, phase: Phase, rep: PhaseReport) -> None:
        await recover(
            phase,
            rep,
            values=self.values,
            settings=self.settings,
            clock=self.clock,
            log=self.log.bind(phase=phase.name),
            history=await self.histories.past(self.histories.key(phase)),
            readiness=self.readiness,
            origin=self._origin,
            publish=lambda value: self._publish_recovered(phase.name, value),
        )
        await self.histories.persist()

    def _publish_recovered(self, name: str, value: object) -> None:
        # A probe that returns a value (a pool, a client) publishes it like
        # the phase would have: later requests and teardown can use it.
        self.values[name] = value
        self.recovered.add(name)

    async def _progress(self, runner: PhaseRunner) -> None:
        """``PhaseWaiting`` for each running phase, every ``progress_interval`` after it began."""
        interval = self.settings.progress_interval
        done: dict[str, int] = {}  # phase -> intervals reported
        while True:
            now = self.clock.monotonic()
            wake = now + min(interval, 0.5)  # also notices phases that start meanwhile
            for name, (began, deadline, ctx) in list(runner.running.items()):
                n = done.get(name, 0)
                if began + interval * (n + 1) <= now:
                    done[name] = n = max(n + 1, int((now - began) // interval))  # once, if late
                    waited, limit = now - began, deadline - began
                    self.emit(
                        PhaseWaiting(self.startup.name, name, waited, limit, len(ctx.attempts))
                    )
                wake = min(wake, began + interval * (n + 1))
            # On the event loop, not the run's clock: a ManualClock moves when
            # slept on, and a reporter must not move the time it reports.
            await anyio.sleep(max(0.0, wake - now))

    async def _watchdog(self, runner: PhaseRunner) -> None:
        # The loop's own clock on purpose: this measures the event loop, not
        # the run's (possibly injected) time.
        while True:
            before = anyio.current_time()
            await anyio.sleep(_WATCH_TICK)
            lag = anyio.current_time() - before - _WATCH_TICK
            if lag >= BLOCKED_AFTER:
                # The phases whose code ran through most of the stall (a phase
                # that blocked has usually returned by now; one that merely
                # finished just before it did not run through it).
                now = anyio.current_time()
                blamed = tuple(
                    name
                    for name, (began, ended) in runner.spans.items()
                    if min(ended if ended is not None else now, now) - max(began, before) >= lag / 2
                )
                self.emit(LoopBlocked(self.startup.name, lag, blamed))

    # -- stopping ---------------------------------------------------------------------

    async def _rollback(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        reports = self.scheduler.reports
        done = [
            n
            for n in reversed(self.plan.order)
            if n in self.recovered
            or ((r := reports.get(n)) is not None and r.outcome is Outcome.OK)
        ]
        budget_end = self.clock.monotonic() + self.settings.stop_budget
        with anyio.CancelScope(shield=True):
            with anyio.CancelScope() as stopping:
                self._stopping = stopping
                for name in done:
                    teardown = self.plan.phase(name).teardown
                    if teardown is not None:
                        await self._teardown(name, teardown, budget_end)
            self._stopping = None
            if stopping.cancel_called:  # a second signal: what did not finish is skipped
                self._teardown_skipped = [
                    n
                    for n in done
                    if self.plan.phase(n).teardown is not None and n not in self._teardowns_done
                ]

    async def _teardown(self, name: str, teardown: Any, budget_end: float) -> None:
        start = self.clock.monotonic()
        error: str | None = None
        try:
            with anyio.fail_after(max(0.0, budget_end - start)):
                await teardown(self.values.get(name))
        except TimeoutError:
            error = (
                f"teardown did not finish within the stop budget of {self.settings.stop_budget:g}s"
            )
            self._teardown_errors.append(TimeoutError(f"phase {name!r}: {error}"))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._teardown_errors.append(exc)
        self._teardowns_done.add(name)
        end = self.clock.monotonic()
        self.emit(
            TeardownFinished(
                self.startup.name, name, start - self._origin, end - self._origin, error
            )
        )

    async def stop(self) -> None:
        """Tear down completed phases in reverse plan order; raise their errors together."""
        await self._rollback()
        await self.histories.persist()
        if self._teardown_errors:
            raise ExceptionGroup(
                f"{len(self._teardown_errors)} teardown(s) failed in startup {self.startup.name!r}",
                self._teardown_errors,
            )

    # -- the report -------------------------------------------------------------------

    def _build_report(self, interrupted: bool = False) -> Report:
        reports = self.scheduler.reports
        started = self.scheduler.runner.started
        failed = self.scheduler.failed
        phases: list[PhaseReport] = []
        for name in self.plan.order:
            rep = reports.get(name)
            if rep is None:
                phase = self.plan.phase(name)
                began = name in started
                why = (
                    f"startup stopped after phase {failed!r} failed"
                    if failed
                    else f"startup was interrupted by {self.interrupted.upper()}"
                    if self.interrupted
                    else "startup was interrupted"
                )
                rep = PhaseReport(
                    name=name,
                    wave=self.plan.wave_of(name),
                    requires=phase.requires,
                    outcome=Outcome.CANCELLED if began else Outcome.SKIPPED,
                    start=started.get(name),
                    end=self.clock.monotonic() - self._origin if began else None,
                    reason=("cancelled: " if began else "not started: ") + why,
                    target=self.histories.key(phase),
                )
            phases.append(rep)
        reasons = tuple(r.reason for r in phases if r.outcome is Outcome.BYPASSED)
        if failed is not None or interrupted:
            state = State.FAILED
        elif reasons:
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
            duration=self.clock.monotonic() - self._origin,
            budget=self.settings.startup_budget,
            reasons=reasons,
            teardown_errors=tuple(f"{type(e).__name__}: {e}" for e in self._teardown_errors),
            teardown_skipped=tuple(self._teardown_skipped),
            interrupted=self.interrupted if interrupted else None,
        )
