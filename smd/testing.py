"""Testing your own startups: run one instantly and assert on what it did.

::

    from smd.testing import run, outcomes, decisions

    async def test_startup_degrades_without_the_cache():
        result = await run(startup, environment="development")
        assert result.report.state.value == "degraded"
        assert outcomes(result.report) == {"config": "ok", "cache": "bypassed"}
        assert decisions(result.report) == {"cache": "continue"}

:func:`run` uses a :class:`~smd.clock.ManualClock` (waits advance it
instead of sleeping, so retries and backoff cost nothing and recorded times
are exact), an in-memory history store (nothing touches the disk) and the
``test`` environment's settings, and records every event. The same is
available as pytest fixtures (``smd_run``, ``smd_clock``, ``smd_settings``)
once smd is installed: its pytest plugin is registered through the
``pytest11`` entry point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from smd._lifecycle import run_startup
from smd._report import Report
from smd._scheduler import Mode
from smd._settings import Settings
from smd._settings_load import load_settings
from smd._startup import Startup
from smd._store import HistoryStore, MemoryHistoryStore
from smd.bypass import BypassPolicy
from smd.clock import Clock, ManualClock
from smd.events import Event, Observer
from smd.exceptions import StartupFailed

__all__ = [
    "Recorder",
    "RunResult",
    "assert_plan",
    "decisions",
    "outcomes",
    "run",
    "test_settings",
]

E = TypeVar("E")


class Recorder:
    """An observer that keeps every event of the runs it observes."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        """The recorded events of one class, in order."""
        return [e for e in self.events if isinstance(e, kind)]


@dataclass(frozen=True, slots=True)
class RunResult:
    """What :func:`run` saw: the report (ready, degraded or failed) and every event."""

    report: Report
    events: tuple[Event, ...]
    clock: Clock

    def of(self, kind: type[E]) -> list[E]:
        """The events of one class, in order."""
        return [e for e in self.events if isinstance(e, kind)]


def test_settings(**overrides: Any) -> Settings:
    """Settings for a test: the ``test`` environment (strict bypass) and no history file."""
    overrides.setdefault("environment", "test")
    overrides.setdefault("history_enabled", False)
    return load_settings(**overrides)


# pytest must not collect the helper above as a test.
test_settings.__test__ = False  # type: ignore[attr-defined]


async def run(
    startup: Startup,
    *,
    environment: str = "test",
    settings: Settings | None = None,
    clock: Clock | None = None,
    store: HistoryStore | None = None,
    policy: BypassPolicy | None = None,
    mode: Mode = "concurrent",
    observers: Iterable[Observer] = (),
) -> RunResult:
    """Run ``startup`` as a gate (phases, then teardown) and return what happened.

    A failed startup is a result too (``result.report.state`` is ``failed``),
    not an exception: tests assert on outcomes and decisions either way.
    """
    recorder = Recorder()
    clock = clock or ManualClock()
    cfg = settings if settings is not None else test_settings(environment=environment)
    try:
        report = await run_startup(
            startup,
            settings=cfg,
            clock=clock,
            store=store if store is not None else MemoryHistoryStore(),
            policy=policy,
            mode=mode,
            observers=[recorder, *observers],
        )
    except StartupFailed as exc:
        report = exc.report
    return RunResult(report, tuple(recorder.events), clock)


def outcomes(report: Report) -> dict[str, str]:
    """Every phase's outcome by name, in plan order."""
    return {p.name: p.outcome.value for p in report.phases}


def decisions(report: Report) -> dict[str, str]:
    """The bypass action (``fail`` / ``continue``) of every phase that failed."""
    return {p.name: p.decision.action.value for p in report.phases if p.decision is not None}


def assert_plan(
    startup: Startup,
    *,
    order: Sequence[str] | None = None,
    waves: Sequence[Sequence[str]] | None = None,
) -> None:
    """Assert the plan's order and/or waves (``AssertionError`` shows both sides)."""
    plan = startup.plan()
    if order is not None:
        assert tuple(order) == plan.order, f"plan order is {plan.order}, expected {tuple(order)}"
    if waves is not None:
        expected = tuple(tuple(w) for w in waves)
        assert expected == plan.waves, f"plan waves are {plan.waves}, expected {expected}"
