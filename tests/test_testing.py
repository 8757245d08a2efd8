"""smd.testing and the pytest plugin, used the way docs/testing.md shows users.

The first test is the documented example (docs/testing.md includes it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from smd import Failure, FailureKind, PhaseContext, PhaseError, Startup
from smd.clock import ManualClock
from smd.events import PhaseFinished, ReadinessChanged, StartupFinished
from smd.testing import RunResult, assert_plan, decisions, outcomes, run

# --8<-- [start:example]
startup = Startup("shop")


@startup.phase(timeout=5)
async def config(ctx: PhaseContext) -> dict[str, str]:
    return {"cache": "redis://cache:6379"}


@startup.phase(requires=["config"], timeout=3)
async def cache(ctx: PhaseContext) -> None:
    await ctx.clock.sleep(1.5)  # a ManualClock advances instead of sleeping
    raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "cache refused the connection"))


async def test_the_shop_starts_degraded_without_its_cache(
    smd_run: Callable[..., Awaitable[RunResult]],
) -> None:
    assert_plan(startup, order=["config", "cache"], waves=[["config"], ["cache"]])
    result = await smd_run(startup, environment="development")  # permissive: continue
    assert result.report.state.value == "degraded"
    assert outcomes(result.report) == {"config": "ok", "cache": "bypassed"}
    assert decisions(result.report) == {"cache": "continue"}
    assert result.report.phase("cache").duration == 1.5  # exact: one clock


async def test_production_stops_on_the_same_failure(
    smd_run: Callable[..., Awaitable[RunResult]],
) -> None:
    result = await smd_run(startup, environment="production")  # strict: fail
    assert result.report.state.value == "failed"
    assert result.report.exit_code() == 75
    assert decisions(result.report) == {"cache": "fail"}


# --8<-- [end:example]


async def test_run_records_every_event_in_order() -> None:
    result = await run(startup, environment="development")
    finished = result.of(PhaseFinished)
    assert [e.phase for e in finished] == ["config", "cache"]
    # Readiness publishes its change while StartupFinished is delivered, so the
    # recorder (after readiness) sees ReadinessChanged first; nothing follows.
    assert isinstance(result.events[-1], StartupFinished)
    assert result.of(ReadinessChanged)[-1].snapshot.state.value == "degraded"
    assert isinstance(result.clock, ManualClock)
    assert result.clock.monotonic() == pytest.approx(1.5)


def test_assert_plan_names_both_sides() -> None:
    with pytest.raises(AssertionError, match=r"expected \('cache', 'config'\)"):
        assert_plan(startup, order=["cache", "config"])
