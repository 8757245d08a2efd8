"""The engine side of once-per-fleet phases: the coordinator plug point.

The PostgreSQL coordinator (advisory locks) is tested against the real cluster
in tests/test_fleet.py; here an in-process coordinator, a complete (single
process) implementation of the protocol, shows what the runner does with
its answers: the key, the skip with its note, failures, and a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from smd import Outcome, Phase, PhaseContext, Startup, State
from smd.plugins import OnceOutcome, Plugin, plugins, register
from smd.testing import run, test_settings


class InProcessCoordinator:
    """Runs each key's work at most once in this process (a lock per key)."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[str, float]] = {}
        self.keys: list[str] = []

    async def run_once(
        self,
        key: str,
        work: Callable[[], Awaitable[Any]],
        *,
        deadline_seconds: float,
        lock_key: str | None = None,
    ) -> OnceOutcome:
        self.keys.append(key)
        if key in self.done:
            by, at = self.done[key]
            return OnceOutcome(False, done_by=by, done_at=at)
        value = await work()  # raises: nothing recorded, a later start retries
        self.done[key] = ("replica-a", time.time())
        return OnceOutcome(True, value)

    async def forget(self, key: str, *, deadline_seconds: float) -> bool:
        return self.done.pop(key, None) is not None


@pytest.fixture
def coordinator() -> Iterator[InProcessCoordinator]:
    import smd.plugins as registry

    made = InProcessCoordinator()
    plugin = Plugin("in-process-fleet", coordinator=lambda settings: made)
    register(plugin)
    yield made
    registry._registered.remove(plugin)
    registry._loaded = None
    assert plugin not in plugins()


def startup_with(runs: list[str], *, fail: bool = False, key: str | None = None) -> Startup:
    s = Startup("svc")

    async def migrate(ctx: PhaseContext) -> str:
        runs.append("migrate")
        if fail:
            raise RuntimeError("migration 3 failed")
        return "at head"

    s.add(Phase("migrate", migrate, once=True, once_key=key))
    return s


async def test_a_once_phase_runs_then_later_starts_skip_it(
    coordinator: InProcessCoordinator,
) -> None:
    runs: list[str] = []
    first = await run(startup_with(runs))
    second = await run(startup_with(runs))
    assert runs == ["migrate"]
    assert coordinator.keys == ["svc/migrate", "svc/migrate"]
    assert first.report.phase("migrate").note == ""
    rep = second.report.phase("migrate")
    assert rep.outcome is Outcome.OK
    assert rep.note.startswith("done by another replica (replica-a) at ")
    assert second.report.state is State.READY


async def test_the_once_key_names_the_work(coordinator: InProcessCoordinator) -> None:
    await run(startup_with([], key="migrations@v42"))
    assert coordinator.keys == ["migrations@v42"]


async def test_a_failed_once_phase_records_nothing_and_is_retried(
    coordinator: InProcessCoordinator,
) -> None:
    runs: list[str] = []
    failed = await run(startup_with(runs, fail=True))
    assert failed.report.state is State.FAILED
    assert failed.report.phase("migrate").failure is not None
    retried = await run(startup_with(runs))
    assert runs == ["migrate", "migrate"]
    assert retried.report.state is State.READY


async def test_without_a_coordinator_the_phase_fails_as_configuration() -> None:
    settings = test_settings()
    assert not any(p.coordinator and p.coordinator(settings) for p in plugins())
    result = await run(startup_with([]), settings=settings)
    failure = result.report.phase("migrate").failure
    assert failure is not None
    assert failure.kind.value == "configuration"
    assert "SMD_FLEET_URL" in failure.message
    assert result.report.exit_code() == 78


def test_once_key_without_once_is_an_invalid_plan() -> None:
    from smd import InvalidPlan

    async def work(ctx: PhaseContext) -> None:
        return None

    with pytest.raises(InvalidPlan, match="once_key is set but once is not True"):
        Phase("x", work, once_key="k")
    with pytest.raises(InvalidPlan, match="once_key must be a non-empty string"):
        Phase("x", work, once=True, once_key=" ")


def test_plan_shows_the_once_phases_and_their_keys() -> None:
    from smd._cli_plan import plan_document, render_plan

    doc = plan_document(startup_with([], key="migrate@v7"), test_settings())
    (phase,) = doc["phases"]
    assert phase["once_key"] == "migrate@v7"
    assert "  migrate: key 'migrate@v7'" in render_plan(doc).splitlines()
    plain = plan_document(startup_with([]), test_settings())
    assert plain["phases"][0]["once_key"] == "svc/migrate"
