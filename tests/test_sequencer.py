"""The sequencer: outcomes, failure kinds, rollback, budget, modes, no leaked tasks.

Order and outcomes are asserted, never durations: events make the schedule
deterministic, and a test that relied on concurrency would deadlock (and hit
its phase deadline) without it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from smd import (
    Failure,
    FailureKind,
    Outcome,
    Phase,
    PhaseContext,
    PhaseError,
    Report,
    Settings,
    Startup,
    StartupFailed,
    StartupRun,
    State,
    lifecycle,
    load_settings,
    run_startup,
)
from smd.bypass import PermissivePolicy, StrictPolicy
from smd.clock import ManualClock
from smd.history import MemoryHistoryStore
from smd.timeouts import AdaptiveTimeout, Series, TimeoutDecision, TimingHistory

PhaseFn = Callable[[PhaseContext], Awaitable[Any]]


def make_settings(**kw: Any) -> Settings:
    kw.setdefault("environment", "test")
    return load_settings(**kw)


async def run(startup: Startup, **kw: Any) -> Report:
    kw.setdefault("settings", make_settings())
    kw.setdefault("store", MemoryHistoryStore())
    kw.setdefault("policy", StrictPolicy())
    return await run_startup(startup, **kw)


async def fail_run(startup: Startup, **kw: Any) -> StartupFailed:
    with pytest.raises(StartupFailed) as info:
        await run(startup, **kw)
    return info.value


def returning(value: Any) -> PhaseFn:
    async def fn(ctx: PhaseContext) -> Any:
        return value

    return fn


def raising(exc: BaseException) -> PhaseFn:
    async def fn(ctx: PhaseContext) -> Any:
        raise exc

    return fn


async def forever(ctx: PhaseContext) -> None:
    await anyio.sleep_forever()


def outcomes(report: Report) -> dict[str, str]:
    return {p.name: p.outcome.value for p in report.phases}


# -- outcomes ------------------------------------------------------------------


async def test_all_ok_is_ready_and_values_flow_to_dependents() -> None:
    s = Startup("api")
    seen: dict[str, Any] = {}

    @s.phase()
    async def config(ctx: PhaseContext) -> dict[str, str]:
        return {"dsn": "x"}

    @s.phase(requires=["config"])
    async def db(ctx: PhaseContext) -> str:
        seen["config"] = ctx["config"]
        seen["env"] = ctx.environment
        return "pool"

    @s.phase(requires=["db", "config"])
    async def api(ctx: PhaseContext) -> None:
        seen["db"] = ctx["db"]
        with pytest.raises(KeyError, match="can only read the phases it requires"):
            ctx["nope"]

    report = await run(s)
    assert report.state is State.READY
    assert outcomes(report) == {"config": "ok", "db": "ok", "api": "ok"}
    assert seen == {"config": {"dsn": "x"}, "env": "test", "db": "pool"}
    assert report.reasons == ()
    assert report.exit_code() == 0
    for p in report.phases:
        assert p.start is not None
        assert p.end is not None
        assert p.start <= p.end
        assert p.failure is None
        assert p.decision is None


async def test_bypassed_with_permissive_policy_is_degraded_and_dependents_skipped() -> None:
    s = Startup("api")
    s.add(Phase(name="cache", run=raising(ConnectionRefusedError("refused"))))
    s.add(Phase(name="warm", run=returning(1), requires=("cache",)))
    s.add(Phase(name="db", run=returning(2)))
    s.add(Phase(name="api", run=returning(3), requires=("db",)))
    report = await run(s, policy=PermissivePolicy())
    assert report.state is State.DEGRADED
    assert report.exit_code() == 0
    assert outcomes(report) == {"cache": "bypassed", "warm": "skipped", "db": "ok", "api": "ok"}
    cache = report.phase("cache")
    assert cache.decision is not None
    assert cache.decision.mode == "permissive"
    assert cache.failure is not None
    assert cache.failure.kind is FailureKind.APPLICATION
    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("cache: application")
    warm = report.phase("warm")
    assert warm.reason == "requirement 'cache' ended bypassed"
    assert warm.start is None


async def test_per_phase_bypass_policy_wins_over_the_run_policy() -> None:
    s = Startup("api")
    s.add(Phase(name="optional", run=raising(RuntimeError("x")), bypass=PermissivePolicy()))
    s.add(Phase(name="core", run=returning(1)))
    report = await run(s, policy=StrictPolicy())
    assert report.state is State.DEGRADED
    assert outcomes(report) == {"optional": "bypassed", "core": "ok"}


async def test_startup_level_bypass_policy_is_used_when_no_policy_given() -> None:
    s = Startup("api", bypass=PermissivePolicy())
    s.add(Phase(name="optional", run=raising(RuntimeError("x"))))
    report = await run_startup(s, settings=make_settings(), store=MemoryHistoryStore())
    assert report.state is State.DEGRADED


async def test_failed_stops_startup_and_skips_dependents_naming_the_failure() -> None:
    s = Startup("api")
    s.add(Phase(name="config", run=returning(1)))
    s.add(Phase(name="db", run=raising(RuntimeError("boom")), requires=("config",)))
    s.add(Phase(name="api", run=returning(1), requires=("db",)))
    exc = await fail_run(s)
    report = exc.report
    assert report.state is State.FAILED
    assert outcomes(report) == {"config": "ok", "db": "failed", "api": "skipped"}
    assert "'db'" in report.phase("api").reason
    assert report.failed_phase is not None
    assert report.failed_phase.name == "db"
    db = report.phase("db")
    assert db.decision is not None
    assert db.decision.action.value == "fail"
    assert db.reason == db.decision.reason


async def test_sequential_skip_reason_names_the_requirement() -> None:
    s = Startup("api")
    s.add(Phase(name="a", run=raising(RuntimeError("x"))))
    s.add(Phase(name="b", run=returning(1)))
    s.add(Phase(name="c", run=returning(1), requires=("b", "a")))
    report = await run(s, policy=PermissivePolicy(), mode="sequential")
    assert outcomes(report) == {"a": "bypassed", "b": "ok", "c": "skipped"}
    assert report.phase("c").reason == "requirement 'a' ended bypassed"


async def test_skipped_chain_names_the_direct_requirement() -> None:
    s = Startup("api")
    s.add(Phase(name="a", run=raising(RuntimeError("x"))))
    s.add(Phase(name="b", run=returning(1), requires=("a",)))
    s.add(Phase(name="c", run=returning(1), requires=("b",)))
    report = await run(s, policy=PermissivePolicy())
    assert report.phase("b").reason == "requirement 'a' ended bypassed"
    assert report.phase("c").reason == "requirement 'b' ended skipped"


async def test_phases_running_when_another_fails_are_cancelled() -> None:
    s = Startup("api")
    slow_started = anyio.Event()
    reached_end: list[str] = []

    async def slow(ctx: PhaseContext) -> None:
        slow_started.set()
        await anyio.sleep_forever()
        reached_end.append("slow")  # pragma: no cover - must be cancelled

    async def bad(ctx: PhaseContext) -> None:
        await slow_started.wait()
        raise RuntimeError("boom")

    s.add(Phase(name="slow", run=slow, timeout=60))
    s.add(Phase(name="bad", run=bad))
    s.add(Phase(name="after_slow", run=returning(1), requires=("slow",)))
    exc = await fail_run(s)
    report = exc.report
    assert outcomes(report) == {"slow": "cancelled", "bad": "failed", "after_slow": "skipped"}
    slow_rep = report.phase("slow")
    assert slow_rep.start is not None
    assert slow_rep.end is not None
    assert "cancelled" in slow_rep.reason
    assert "'bad'" in slow_rep.reason
    assert reached_end == []


async def test_phase_cleaning_up_after_cancellation_is_still_cancelled() -> None:
    # A phase whose cleanup awaits (shielded) must still end "cancelled", its
    # cleanup must run, and it must not be torn down as if it had completed.
    s = Startup("api")
    started = anyio.Event()
    cleaned: list[str] = []
    torn: list[str] = []

    async def careful(ctx: PhaseContext) -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
                cleaned.append("careful")
        return "unreachable"  # pragma: no cover

    async def close(value: object) -> None:
        torn.append(str(value))  # pragma: no cover - must not run

    async def bad(ctx: PhaseContext) -> None:
        await started.wait()
        raise RuntimeError("boom")

    s.add(Phase(name="careful", run=careful, timeout=60, teardown=close))
    s.add(Phase(name="bad", run=bad))
    report = (await fail_run(s)).report
    assert report.phase("careful").outcome is Outcome.CANCELLED
    assert cleaned == ["careful"]
    assert torn == []


# -- failure kinds -----------------------------------------------------------------


async def test_raised_exception_is_an_application_failure_with_its_cause() -> None:
    def inner() -> None:
        raise KeyError("missing")

    async def fn(ctx: PhaseContext) -> None:
        try:
            inner()
        except KeyError as e:
            raise RuntimeError("config broken") from e

    s = Startup("api")
    s.add(Phase(name="config", run=fn))
    exc = await fail_run(s)
    failure = exc.report.phase("config").failure
    assert failure is not None
    assert failure.kind is FailureKind.APPLICATION
    assert failure.message == "phase 'config' raised RuntimeError: config broken"
    assert failure.causes == ("RuntimeError: config broken", "KeyError: 'missing'")
    assert exc.report.exit_code() == 70
    assert isinstance(exc.exceptions[0], RuntimeError)


async def test_deadline_is_a_timeout_naming_phase_deadline_and_source() -> None:
    s = Startup("api")
    s.add(Phase(name="blackhole", run=forever, timeout=0.05))
    exc = await fail_run(s)
    rep = exc.report.phase("blackhole")
    assert rep.failure is not None
    assert rep.failure.kind is FailureKind.TIMEOUT
    msg = rep.failure.message
    assert "'blackhole'" in msg
    assert "0.05s" in msg
    assert "fixed timeout of 0.05s set on the phase" in msg
    assert rep.deadline == pytest.approx(0.05)
    assert rep.deadline_source.startswith("fixed:")
    assert rep.timeout is not None
    assert rep.timeout.source == "fixed"
    assert exc.report.exit_code() == 75
    assert isinstance(exc.exceptions[0], PhaseError)


async def test_default_timeout_comes_from_settings_and_says_so() -> None:
    s = Startup("api")
    s.add(Phase(name="slow", run=forever))
    exc = await fail_run(s, settings=make_settings(phase_timeout=0.05))
    rep = exc.report.phase("slow")
    assert rep.failure is not None
    assert rep.failure.kind is FailureKind.TIMEOUT
    assert "settings phase_timeout = 0.05s" in rep.failure.message
    assert rep.deadline_source.startswith("default:")


async def test_phase_error_keeps_its_classification() -> None:
    failure = Failure(
        FailureKind.CONFIGURATION,
        "password authentication failed",
        code="28P01",
        details={"sqlstate": "28P01"},
    )
    s = Startup("api")
    s.add(Phase(name="db", run=raising(PhaseError(failure))))
    exc = await fail_run(s)
    got = exc.report.phase("db").failure
    assert got == failure
    assert got is not None
    assert got.code == "28P01"
    assert dict(got.details) == {"sqlstate": "28P01"}
    assert exc.report.exit_code() == 78


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (FailureKind.INFRASTRUCTURE, 75),
        (FailureKind.TIMEOUT, 75),
        (FailureKind.CONFIGURATION, 78),
        (FailureKind.APPLICATION, 70),
        (FailureKind.UNKNOWN, 69),
    ],
)
async def test_exit_code_per_failure_kind(kind: FailureKind, code: int) -> None:
    s = Startup("api")
    s.add(Phase(name="p", run=raising(PhaseError(Failure(kind, "it broke")))))
    exc = await fail_run(s)
    assert exc.report.exit_code() == code
    assert exc.report.to_dict()["exit_code"] == code


# -- rollback ------------------------------------------------------------------------


def tracked(
    s: Startup,
    log: list[str],
    name: str,
    *requires: str,
    run: PhaseFn | None = None,
    teardown_error: Exception | None = None,
    **kw: Any,
) -> None:
    async def teardown(value: Any) -> None:
        log.append(f"{name}={value}")
        if teardown_error is not None:
            raise teardown_error

    s.add(
        Phase(
            name=name,
            run=run or returning(name.upper()),
            requires=requires,
            teardown=teardown,
            **kw,
        )
    )


async def test_rollback_tears_down_exactly_the_completed_phases_in_reverse_plan_order() -> None:
    s = Startup("api")
    torn: list[str] = []
    hang_started = anyio.Event()

    async def hang(ctx: PhaseContext) -> None:
        hang_started.set()
        await anyio.sleep_forever()

    async def explode(ctx: PhaseContext) -> None:
        await hang_started.wait()
        raise RuntimeError("boom")

    tracked(s, torn, "a")
    tracked(s, torn, "hang", run=hang, timeout=60)  # cancelled
    tracked(s, torn, "c", "a")
    tracked(s, torn, "b", "a")
    tracked(s, torn, "d", "b", "c")
    tracked(s, torn, "e", "d", run=explode)  # failed
    tracked(s, torn, "f", "e")  # skipped
    tracked(s, torn, "g", "hang")  # skipped
    plan = s.plan()
    assert plan.order == ("a", "hang", "c", "b", "d", "e", "f", "g")
    exc = await fail_run(s)
    assert outcomes(exc.report) == {
        "a": "ok",
        "hang": "cancelled",
        "c": "ok",
        "b": "ok",
        "d": "ok",
        "e": "failed",
        "f": "skipped",
        "g": "skipped",
    }
    # Reverse plan order (d, b, c, a), not reverse completion order; each
    # teardown gets its phase's value.
    assert torn == ["d=D", "b=B", "c=C", "a=A"]


async def test_rollback_in_sequential_mode() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    tracked(s, torn, "b")
    tracked(s, torn, "c", run=raising(RuntimeError("boom")))
    tracked(s, torn, "d")
    exc = await fail_run(s, mode="sequential")
    # d was never started: sequential mode stops at the first failure.
    assert outcomes(exc.report) == {"a": "ok", "b": "ok", "c": "failed", "d": "skipped"}
    assert "not started" in exc.report.phase("d").reason
    assert torn == ["b=B", "a=A"]


async def test_teardown_errors_are_raised_with_the_original_failure_and_others_still_run() -> None:
    s = Startup("api")
    torn: list[str] = []
    original = RuntimeError("phase broke")
    t1 = OSError("close failed")
    t2 = ValueError("flush failed")
    tracked(s, torn, "a", teardown_error=t2)
    tracked(s, torn, "b", "a")
    tracked(s, torn, "c", "b", teardown_error=t1)
    tracked(s, torn, "d", "c", run=raising(original))
    exc = await fail_run(s)
    assert torn == ["c=C", "b=B", "a=A"]
    assert list(exc.exceptions) == [original, t1, t2]
    assert exc.report.teardown_errors == ("OSError: close failed", "ValueError: flush failed")
    # except* sees each of them.
    seen: list[type[BaseException]] = []
    try:
        raise exc
    except* OSError as g:
        seen += [type(e) for e in g.exceptions]
    except* ValueError as g:
        seen += [type(e) for e in g.exceptions]
    except* RuntimeError as g:
        seen += [type(e) for e in g.exceptions]
    assert sorted(t.__name__ for t in seen) == ["OSError", "RuntimeError", "ValueError"]


async def test_teardown_errors_after_a_ready_startup_are_raised_together() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a", teardown_error=OSError("a"))
    tracked(s, torn, "b", "a")
    tracked(s, torn, "c", "b", teardown_error=OSError("c"))
    with pytest.raises(ExceptionGroup) as info:
        await run(s)
    assert torn == ["c=C", "b=B", "a=A"]
    assert [str(e) for e in info.value.exceptions] == ["c", "a"]


async def test_rollback_after_caller_cancellation_then_cancellation_propagates() -> None:
    s = Startup("api")
    torn: list[str] = []
    b_started = anyio.Event()

    async def b(ctx: PhaseContext) -> None:
        b_started.set()
        await anyio.sleep_forever()

    tracked(s, torn, "a")
    tracked(s, torn, "b", "a", run=b, timeout=60)
    tracked(s, torn, "c", "b")
    tracked(s, torn, "x")
    startup_run = StartupRun(
        s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy()
    )
    after: list[str] = []
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:

            async def cancel_when_b_runs() -> None:
                await b_started.wait()
                outer.cancel()

            tg.start_soon(cancel_when_b_runs)
            await startup_run.start()
            after.append("start returned")  # pragma: no cover - must not happen
    assert outer.cancelled_caught
    assert after == []
    assert torn == ["x=X", "a=A"]
    report = startup_run.report
    assert report is not None
    assert report.state is State.FAILED
    assert outcomes(report) == {"a": "ok", "x": "ok", "b": "cancelled", "c": "skipped"}
    assert "interrupted" in report.phase("b").reason


async def test_run_startup_cancelled_by_the_caller_tears_down() -> None:
    # The same through run_startup, cancelled from a sibling task.
    s = Startup("api")
    torn: list[str] = []
    hang_started = anyio.Event()

    async def hang(ctx: PhaseContext) -> None:
        hang_started.set()
        await anyio.sleep_forever()

    tracked(s, torn, "a")
    tracked(s, torn, "hang", "a", run=hang, timeout=60)
    async with anyio.create_task_group() as tg:

        async def cancel_when_hanging() -> None:
            await hang_started.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_when_hanging)
        await run(s)
    assert tg.cancel_scope.cancelled_caught
    assert torn == ["a=A"]


async def test_budget_exhaustion_caps_the_phase_and_says_so() -> None:
    s = Startup("api")
    s.add(Phase(name="quick", run=returning(1), timeout=0.1))
    s.add(Phase(name="hang", run=forever, timeout=60, requires=("quick",)))
    exc = await fail_run(s, settings=make_settings(startup_budget=0.6))
    quick = exc.report.phase("quick")
    assert quick.outcome is Outcome.OK
    assert quick.deadline == pytest.approx(0.1)
    assert quick.deadline_source.startswith("fixed:")
    hang = exc.report.phase("hang")
    assert hang.failure is not None
    assert hang.failure.kind is FailureKind.TIMEOUT
    assert hang.deadline is not None
    assert hang.deadline <= 0.6
    assert hang.deadline_source.startswith("startup budget:")
    assert "of 0.6s" in hang.deadline_source
    assert "phase timeout 60s" in hang.deadline_source
    assert "startup budget" in hang.failure.message
    assert "'hang'" in hang.failure.message
    assert exc.report.exit_code() == 75


async def test_own_timeout_below_budget_is_reported_as_its_own() -> None:
    s = Startup("api")
    s.add(Phase(name="hang", run=forever, timeout=0.05))
    exc = await fail_run(s, settings=make_settings(startup_budget=30))
    hang = exc.report.phase("hang")
    assert hang.deadline == pytest.approx(0.05)
    assert hang.deadline_source.startswith("fixed:")


async def test_deadline_is_min_of_timeout_and_budget_left() -> None:
    s = Startup("api")
    seen: dict[str, float] = {}

    async def probe(ctx: PhaseContext) -> None:
        seen["remaining"] = ctx.remaining()
        seen["timeout"] = ctx.timeout.seconds

    s.add(Phase(name="p", run=probe, timeout=50))
    report = await run(s, settings=make_settings(startup_budget=10))
    assert seen["timeout"] == 50
    assert 0 < seen["remaining"] <= 10
    assert report.phase("p").deadline_source.startswith("startup budget:")


# -- modes ---------------------------------------------------------------------


def counting_phases(s: Startup, live: list[int], peak: list[int], starts: list[str]) -> None:
    def make(name: str) -> PhaseFn:
        async def fn(ctx: PhaseContext) -> None:
            starts.append(name)
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            for _ in range(5):  # give every other task the chance to start
                await anyio.lowlevel.checkpoint()
            live[0] -= 1

        return fn

    for name, reqs in [("a", ()), ("b", ()), ("c", ("a",)), ("d", ()), ("e", ("c", "b"))]:
        s.add(Phase(name=name, run=make(name), requires=reqs))


async def test_sequential_runs_one_phase_at_a_time_in_plan_order() -> None:
    s = Startup("api")
    live, peak = [0], [0]
    starts: list[str] = []
    counting_phases(s, live, peak, starts)
    report = await run(s, mode="sequential")
    assert report.state is State.READY
    assert peak[0] == 1
    assert starts == list(s.plan().order)
    assert report.mode == "sequential"


async def test_concurrent_overlaps_independent_phases() -> None:
    s = Startup("api")
    live, peak = [0], [0]
    starts: list[str] = []
    counting_phases(s, live, peak, starts)
    report = await run(s)
    assert report.state is State.READY
    assert peak[0] >= 3  # a, b and d are independent
    assert report.mode == "concurrent"


def rendezvous(s: Startup, timeout: float) -> None:
    # Each phase waits for the other: only possible if both run at once.
    a_in, b_in = anyio.Event(), anyio.Event()

    async def a(ctx: PhaseContext) -> None:
        a_in.set()
        await b_in.wait()

    async def b(ctx: PhaseContext) -> None:
        b_in.set()
        await a_in.wait()

    s.add(Phase(name="a", run=a, timeout=timeout))
    s.add(Phase(name="b", run=b, timeout=timeout))


async def test_concurrent_mode_runs_independent_phases_together() -> None:
    s = Startup("api")
    rendezvous(s, timeout=30)
    report = await run(s)
    assert outcomes(report) == {"a": "ok", "b": "ok"}


async def test_sequential_mode_would_deadlock_on_the_same_rendezvous() -> None:
    s = Startup("api")
    rendezvous(s, timeout=0.1)
    exc = await fail_run(s, mode="sequential")
    assert outcomes(exc.report) == {"a": "failed", "b": "skipped"}
    failure = exc.report.phase("a").failure
    assert failure is not None
    assert failure.kind is FailureKind.TIMEOUT


async def test_a_phase_starts_when_its_requirements_end_not_when_its_wave_does() -> None:
    # slow (wave 0) waits for late (wave 1). If waves were barriers, late
    # could not start before slow ends: deadlock.
    s = Startup("api")
    late_ran = anyio.Event()

    async def slow(ctx: PhaseContext) -> None:
        await late_ran.wait()

    async def late(ctx: PhaseContext) -> None:
        late_ran.set()

    s.add(Phase(name="first", run=returning(1)))
    s.add(Phase(name="slow", run=slow, timeout=30))
    s.add(Phase(name="late", run=late, requires=("first",)))
    report = await run(s)
    assert s.plan().waves == (("first", "slow"), ("late",))
    assert outcomes(report) == {"first": "ok", "slow": "ok", "late": "ok"}


async def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mode 'parallel'"):
        StartupRun(Startup("s"), mode="parallel", settings=make_settings())  # type: ignore[arg-type]


# -- report order ----------------------------------------------------------------


async def test_report_lists_phases_in_plan_order_not_completion_order() -> None:
    s = Startup("api")
    finished: list[str] = []
    c_done, b_done = anyio.Event(), anyio.Event()

    async def a(ctx: PhaseContext) -> None:
        await b_done.wait()
        finished.append("a")

    async def b(ctx: PhaseContext) -> None:
        await c_done.wait()
        finished.append("b")
        b_done.set()

    async def c(ctx: PhaseContext) -> None:
        finished.append("c")
        c_done.set()

    for name, fn in [("a", a), ("b", b), ("c", c)]:
        s.add(Phase(name=name, run=fn, timeout=30))
    report = await run(s)
    assert finished == ["c", "b", "a"]
    assert [p.name for p in report.phases] == ["a", "b", "c"] == list(report.plan.order)
    ends = {p.name: p.end for p in report.phases}
    assert ends["c"] is not None
    assert ends["a"] is not None
    assert ends["c"] <= ends["a"]


# -- no task outlives the run --------------------------------------------------------


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_no_task_outlives_a_ready_run() -> None:
    before = other_tasks()
    s = Startup("api")
    s.add(Phase(name="a", run=returning(1)))
    s.add(Phase(name="b", run=returning(1), requires=("a",)))
    s.add(Phase(name="c", run=returning(1)))
    await run(s, settings=make_settings(progress_interval=0.01))
    assert other_tasks() == before == set()


async def test_no_task_outlives_a_failed_run() -> None:
    s = Startup("api")
    started = anyio.Event()

    async def bad(ctx: PhaseContext) -> None:
        await started.wait()
        raise RuntimeError("x")

    async def hang(ctx: PhaseContext) -> None:
        started.set()
        await anyio.sleep_forever()

    s.add(Phase(name="hang", run=hang, timeout=60))
    s.add(Phase(name="bad", run=bad))
    s.add(Phase(name="waiter", run=returning(1), requires=("hang",)))
    await fail_run(s)
    assert other_tasks() == set()


async def test_no_task_outlives_a_cancelled_run() -> None:
    s = Startup("api")
    s.add(Phase(name="hang", run=forever, timeout=60))
    s.add(Phase(name="waiter", run=returning(1), requires=("hang",)))
    with anyio.move_on_after(0.02):
        await run(s)
    assert other_tasks() == set()


async def test_no_task_outlives_a_timed_out_run() -> None:
    s = Startup("api")
    s.add(Phase(name="hang", run=forever, timeout=0.02))
    await fail_run(s, mode="sequential")
    assert other_tasks() == set()


# -- history ------------------------------------------------------------------------


async def test_history_samples_are_recorded_per_target() -> None:
    store = MemoryHistoryStore()
    s = Startup("api")
    s.add(Phase(name="ok", run=returning(1), target="db:primary"))
    s.add(Phase(name="slow", run=forever, timeout=0.02))
    s.add(Phase(name="broken", run=raising(RuntimeError("x"))))
    s.add(
        Phase(name="down", run=raising(PhaseError(Failure(FailureKind.INFRASTRUCTURE, "refused"))))
    )
    report = await run(s, store=store, policy=PermissivePolicy())
    assert report.state is State.DEGRADED
    assert sorted(store.targets()) == sorted(
        [
            "api/db:primary@test",
            "api/phase:slow@test",
            "api/phase:broken@test",
            "api/phase:down@test",
        ]
    )
    info = store.targets()["api/db:primary@test"]
    assert (info.startup, info.dependency, info.environment, info.phase) == (
        "api",
        "db:primary",
        "test",
        "ok",
    )

    ok = store.load("api/db:primary@test")
    assert len(ok.ready) == 1
    assert not ok.ready[0].censored
    assert ok.bypasses == ()
    assert ok.failures == ()

    slow = store.load("api/phase:slow@test")
    assert len(slow.ready) == 1
    assert slow.ready[0].censored
    assert slow.ready[0].seconds is not None
    assert slow.ready[0].seconds > 0
    assert len(slow.bypasses) == 1

    broken = store.load("api/phase:broken@test")
    assert broken.ready == ()
    assert [f.kind for f in broken.failures] == [FailureKind.APPLICATION]
    assert len(broken.bypasses) == 1

    # An infrastructure failure that gave up long before its deadline is a
    # failed start, not a censored latency sample.
    down = store.load("api/phase:down@test")
    assert down.ready == ()
    assert [f.kind for f in down.failures] == [FailureKind.INFRASTRUCTURE]
    assert down.consecutive_bypasses() == 1


async def test_history_is_persisted_after_a_failed_run_and_accumulates() -> None:
    store = MemoryHistoryStore()
    s = Startup("api")
    s.add(Phase(name="a", run=returning(1)))
    s.add(Phase(name="b", run=raising(RuntimeError("x")), requires=("a",)))
    await fail_run(s, store=store)
    await fail_run(s, store=store)
    a = store.load("api/phase:a@test")
    assert len(a.ready) == 2
    assert [x.series for x in store.load("api/phase:b@test").all_samples()] == [
        Series.FAILURE,
        Series.FAILURE,
    ]


async def test_history_key_includes_the_environment() -> None:
    store = MemoryHistoryStore()
    s = Startup("api")
    s.add(Phase(name="a", run=returning(1)))
    await run(s, store=store, settings=make_settings(environment="staging"))
    assert list(store.targets()) == ["api/phase:a@staging"]


async def test_two_startups_with_a_phase_of_the_same_name_keep_separate_histories() -> None:
    """Issue 10 section 5: keys name the startup; 'cache' in 'api' is not 'cache' in 'jobs'."""
    store = MemoryHistoryStore()
    api, jobs = Startup("api"), Startup("jobs")
    api.add(Phase(name="cache", run=returning(1)))
    jobs.add(Phase(name="cache", run=raising(PhaseError(Failure(FailureKind.TIMEOUT, "slow")))))
    await run(api, store=store)
    await run(jobs, store=store, policy=PermissivePolicy())
    await run(api, store=store)
    assert sorted(store.targets()) == ["api/phase:cache@test", "jobs/phase:cache@test"]
    assert {k: i.startup for k, i in store.targets().items()} == {
        "api/phase:cache@test": "api",
        "jobs/phase:cache@test": "jobs",
    }
    api_h = store.load("api/phase:cache@test")
    jobs_h = store.load("jobs/phase:cache@test")
    # api's two successes are its own; jobs' censored timeout and bypass are jobs'.
    assert [(x.series, x.censored) for x in api_h.all_samples()] == [
        (Series.READY, False),
        (Series.READY, False),
    ]
    assert api_h.bypasses == ()
    assert [x.series for x in jobs_h.all_samples()] == [Series.READY, Series.BYPASS]
    assert jobs_h.ready[0].censored
    # What a run reads back is its own startup's history.
    seen: dict[str, int] = {}

    async def count(ctx: PhaseContext) -> None:
        seen[ctx.phase.name] = len(ctx.history.ready)

    again = Startup("api")
    again.add(Phase(name="cache", run=count, timeout=AdaptiveTimeout()))
    await run(again, store=store)
    assert seen == {"cache": 2}


# -- one clock -----------------------------------------------------------------------


async def test_an_injected_manual_clock_gives_consistent_recorded_samples() -> None:
    """Issue 10 section 3: durations, deadlines and samples all come from the injected clock."""
    clock = ManualClock()
    store = MemoryHistoryStore()
    s = Startup("clocked")
    seen: dict[str, float] = {}

    @s.phase(timeout=5)
    async def quick(ctx: PhaseContext) -> None:
        seen["deadline_left"] = ctx.remaining()
        await ctx.clock.sleep(0.2)
        seen["after"] = ctx.remaining()

    @s.phase(timeout=1, requires=["quick"])
    async def late(ctx: PhaseContext) -> None:
        await ctx.clock.sleep(3)  # past its 1 s deadline, on the run's clock

    # Sequential: the phases share the one clock, so each must be alone to
    # own the time it advances.
    report = await run(s, store=store, clock=clock, policy=PermissivePolicy(), mode="sequential")
    # The phase saw its deadline on the same clock it slept on.
    assert seen["deadline_left"] == pytest.approx(5.0)
    assert seen["after"] == pytest.approx(4.8)
    q = report.phase("quick")
    assert q.outcome is Outcome.OK
    assert q.duration == pytest.approx(0.2)
    (ready,) = store.load("clocked/phase:quick@test").series(Series.READY)
    assert ready.seconds == pytest.approx(0.2)
    assert not ready.censored
    # Past its deadline: a timeout, recorded as a censored sample of the
    # time it took on that clock (never 0.0).
    lt = report.phase("late")
    assert lt.outcome is Outcome.BYPASSED
    assert lt.failure is not None
    assert lt.failure.kind is FailureKind.TIMEOUT
    assert lt.failure.deadline_reached
    assert "overran its 1s deadline by 2s" in lt.failure.message
    assert "blocked the event loop" not in lt.failure.message  # the loop never stalled
    (censored,) = store.load("clocked/phase:late@test").series(Series.READY)
    assert censored.censored
    assert censored.seconds == pytest.approx(3.0)
    # The report's times are the same clock's: quick from 0 to 0.2, late from 0.2 to 3.2.
    assert q.start == pytest.approx(0.0)
    assert q.end == pytest.approx(0.2)
    assert lt.start == pytest.approx(0.2)
    assert lt.end == pytest.approx(3.2)
    assert report.duration == pytest.approx(3.2)
    assert clock.monotonic() == pytest.approx(3.2)  # nothing else moved it


# -- lifecycle ---------------------------------------------------------------------


async def test_lifecycle_starts_on_enter_and_tears_down_on_exit() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    tracked(s, torn, "b", "a")
    async with lifecycle(
        s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy()
    ) as started:
        assert started.values == {"a": "A", "b": "B"}
        assert started.report is not None
        assert started.report.state is State.READY
        assert torn == []
    assert torn == ["b=B", "a=A"]
    assert other_tasks() == set()


async def test_lifecycle_tears_down_when_the_body_raises() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    with pytest.raises(KeyError):
        async with lifecycle(
            s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy()
        ):
            raise KeyError("body")
    assert torn == ["a=A"]


async def test_lifecycle_raises_startup_failed_after_rolling_back() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    tracked(s, torn, "b", "a", run=raising(RuntimeError("boom")))
    body: list[str] = []
    with pytest.raises(StartupFailed) as info:
        async with lifecycle(
            s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy()
        ):
            body.append("entered")  # pragma: no cover
    assert body == []
    assert torn == ["a=A"]
    assert info.value.report.state is State.FAILED


async def test_stop_twice_tears_down_once() -> None:
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    r = StartupRun(s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy())
    await r.start()
    await r.stop()
    await r.stop()
    assert torn == ["a=A"]


async def test_startup_failed_carries_the_report_and_a_clear_message() -> None:
    s = Startup("api")
    s.add(Phase(name="db", run=raising(RuntimeError("no route"))))
    exc = await fail_run(s)
    assert isinstance(exc, ExceptionGroup)
    assert exc.report.startup == "api"
    assert str(exc).startswith("startup 'api': phase 'db' failed (application)")
    # derive() (used by except* splitting) keeps working.
    match, rest = exc.split(RuntimeError)
    assert match is not None
    assert rest is None


async def test_a_run_built_beforehand_is_driven_by_lifecycle_once() -> None:
    # The one driver also takes a StartupRun built beforehand (the ASGI
    # lifespan publishes its readiness first); a run starts only once.
    s = Startup("api")
    torn: list[str] = []
    tracked(s, torn, "a")
    r = StartupRun(s, settings=make_settings(), store=MemoryHistoryStore(), policy=StrictPolicy())
    assert r.readiness.state is State.STARTING
    async with lifecycle(r) as started:
        assert started is r
        assert started.readiness.state is State.READY
    assert torn == ["a=A"]
    with pytest.raises(RuntimeError, match="already started"):
        async with lifecycle(r):
            pytest.fail("a run must not start twice")  # pragma: no cover
    fresh = StartupRun(s, settings=make_settings(), store=MemoryHistoryStore())
    with pytest.raises(TypeError, match="give the options to StartupRun"):
        async with lifecycle(fresh, mode="sequential"):
            pytest.fail("options with a run are refused")  # pragma: no cover
    assert not hasattr(s, "run")  # Startup.run() is gone: one driver
    assert torn == ["a=A"]


# -- properties on random graphs -------------------------------------------------------


@st.composite
def failing_dags(draw: st.DrawFn) -> tuple[list[tuple[str, tuple[str, ...]]], set[str]]:
    """A random DAG (declared in a random order) and the phases that raise."""
    n = draw(st.integers(min_value=1, max_value=14))
    names = [f"p{i}" for i in range(n)]
    decl = []
    for i in range(n):
        reqs = draw(
            st.lists(st.sampled_from(names[:i]), unique=True, max_size=3) if i else st.just([])
        )
        decl.append((names[i], tuple(reqs)))
    order = draw(st.permutations(decl))
    failing = draw(st.sets(st.sampled_from(names), max_size=3))
    return list(order), failing


def build_random(
    decl: list[tuple[str, tuple[str, ...]]], failing: set[str], trace: list[str]
) -> Startup:
    s = Startup("random")

    def make(name: str) -> PhaseFn:
        async def fn(ctx: PhaseContext) -> str:
            trace.append(f"start:{name}")
            await anyio.lowlevel.checkpoint()
            trace.append(f"end:{name}")
            if name in failing:
                raise RuntimeError(name)
            return name

        return fn

    async def teardown(value: Any) -> None:
        trace.append(f"teardown:{value}")

    for name, reqs in decl:
        s.add(Phase(name=name, run=make(name), requires=reqs, teardown=teardown))
    return s


@hsettings(max_examples=60, deadline=None)
@given(failing_dags(), st.sampled_from(["concurrent", "sequential"]))
def test_permissive_outcomes_follow_the_graph(
    graph: tuple[list[tuple[str, tuple[str, ...]]], set[str]], mode: str
) -> None:
    decl, failing = graph
    trace: list[str] = []
    s = build_random(decl, failing, trace)
    report = anyio.run(lambda: run(s, policy=PermissivePolicy(), mode=mode))
    got = outcomes(report)
    expected: dict[str, str] = {}
    for name in s.plan().order:
        reqs = dict(decl)[name]
        if any(expected[r] != "ok" for r in reqs):
            expected[name] = "skipped"
        else:
            expected[name] = "bypassed" if name in failing else "ok"
    assert got == expected
    assert report.state is (State.DEGRADED if "bypassed" in got.values() else State.READY)
    # A phase starts only after every requirement ended.
    for name, reqs in decl:
        if f"start:{name}" in trace:
            for r in reqs:
                assert trace.index(f"end:{r}") < trace.index(f"start:{name}")
    # Teardown (at the end of run_startup) of exactly the ok phases, reverse plan order.
    torn = [t.removeprefix("teardown:") for t in trace if t.startswith("teardown:")]
    assert torn == [n for n in reversed(s.plan().order) if got[n] == "ok"]
    if mode == "sequential":
        starts = [t.removeprefix("start:") for t in trace if t.startswith("start:")]
        assert starts == [n for n in s.plan().order if got[n] != "skipped"]


@hsettings(max_examples=60, deadline=None)
@given(failing_dags(), st.sampled_from(["concurrent", "sequential"]))
def test_strict_rollback_matches_the_report(
    graph: tuple[list[tuple[str, tuple[str, ...]]], set[str]], mode: str
) -> None:
    decl, failing = graph
    trace: list[str] = []
    s = build_random(decl, failing, trace)

    async def go() -> Report:
        try:
            return await run(s, policy=StrictPolicy(), mode=mode)
        except StartupFailed as exc:
            return exc.report

    report = anyio.run(go)
    got = outcomes(report)
    if not failing:
        assert report.state is State.READY
    else:
        assert report.state is State.FAILED
        assert list(got.values()).count("failed") >= 1
        assert {n for n, o in got.items() if o == "failed"} <= failing
    torn = [t.removeprefix("teardown:") for t in trace if t.startswith("teardown:")]
    assert torn == [n for n in reversed(s.plan().order) if got[n] == "ok"]
    # Nothing marked ok without having run to its end; nothing skipped has started.
    for name, outcome in got.items():
        if outcome == "ok":
            assert f"end:{name}" in trace
        if outcome == "skipped":
            assert f"start:{name}" not in trace


async def test_a_quick_infrastructure_failure_is_not_a_censored_sample() -> None:
    """A refused single try says nothing about latency; waiting out the deadline does."""
    startup = Startup("censor")

    @startup.phase(timeout=5)
    async def quick(ctx: PhaseContext) -> None:
        raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "refused"))

    @startup.phase(timeout=0.05)
    async def slow(ctx: PhaseContext) -> None:
        await anyio.sleep(10)

    store = MemoryHistoryStore()
    await run_startup(
        startup,
        settings=load_settings(environment="development"),
        store=store,
        policy=PermissivePolicy(),
    )
    quick_h = store.load("censor/phase:quick@development")
    assert quick_h.series(Series.READY) == ()
    assert [s.kind for s in quick_h.series(Series.FAILURE)] == [FailureKind.INFRASTRUCTURE]
    slow_h = store.load("censor/phase:slow@development")
    assert [s.censored for s in slow_h.series(Series.READY)] == [True]


class OffsetClockLoop(asyncio.SelectorEventLoop):
    """asyncio's default loop, with a clock a million seconds ahead of time.monotonic()."""

    OFFSET = 1e6

    def time(self) -> float:
        return time.monotonic() + self.OFFSET


def test_the_system_clock_is_the_event_loops_clock() -> None:
    # Deadlines are enforced on the loop's clock and durations read from the
    # run's: SystemClock must be that same clock (read without anyio's
    # backend lookup on asyncio), and time.monotonic() when no loop runs.
    # Stock asyncio's loop.time() *is* time.monotonic(), so the two could not
    # be told apart: the loop here keeps its own clock, far from the system's.
    from smd.clock import SystemClock

    clock = SystemClock()

    async def readings() -> tuple[tuple[float, float, float, float], tuple[float, float, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, OffsetClockLoop)
        before = loop.time()
        now = clock.monotonic()
        after = loop.time()
        system = time.monotonic()

        def outside() -> tuple[float, float, float]:
            return time.monotonic(), clock.monotonic(), time.monotonic()

        # A worker thread has no running loop, even while this one runs.
        return (before, now, after, system), await anyio.to_thread.run_sync(outside)

    with asyncio.Runner(loop_factory=OffsetClockLoop) as runner:
        (before, now, after, system), (a, b, c) = runner.run(readings())

    assert before <= now <= after  # the loop's clock...
    assert now - system == pytest.approx(OffsetClockLoop.OFFSET, abs=60)  # ...not the system's
    assert a <= b <= c  # no loop: time.monotonic()


async def test_a_phase_may_move_its_deadline_later_within_the_budget() -> None:
    async def patient(ctx: PhaseContext) -> str:
        left = ctx.extend_deadline(0.05, "earlier: ignored")  # never earlier
        assert left == pytest.approx(ctx.remaining(), abs=0.01)
        ctx.extend_deadline(0.6, "the dependency said it is busy")
        await anyio.sleep(0.3)  # past the phase's own 0.1 s
        return "done"

    async def greedy(ctx: PhaseContext) -> None:
        ctx.extend_deadline(600, "more than the budget")
        await anyio.sleep_forever()

    s = Startup("api")
    s.add(Phase(name="patient", run=patient, timeout=0.1))
    ok = await run(s)
    rep = ok.phase("patient")
    assert rep.outcome is Outcome.OK
    assert rep.duration is not None
    assert rep.duration >= 0.3
    assert rep.deadline == pytest.approx(0.6)
    assert rep.deadline_source.endswith("; extended to 0.6s: the dependency said it is busy")
    assert "earlier" not in rep.deadline_source
    # The reason of the extension that took effect, structured (not the ignored earlier one).
    assert rep.deadline_extended == "the dependency said it is busy"
    assert rep.to_dict()["deadline_extended"] == "the dependency said it is busy"

    g = Startup("api")
    g.add(Phase(name="greedy", run=greedy, timeout=0.1))
    failed = await fail_run(g, settings=make_settings(startup_budget=0.4))
    rep = failed.report.phase("greedy")
    assert rep.failure is not None
    assert rep.failure.kind is FailureKind.TIMEOUT
    assert rep.deadline is not None
    assert rep.start is not None
    assert rep.deadline == pytest.approx(0.4 - rep.start)  # what the budget left, not 600 s
    assert "extended to" in rep.deadline_source
    assert rep.deadline_extended == "more than the budget"

    ctx_of_nothing = PhaseContext(
        phase=Phase(name="x", run=returning(1)),
        settings=make_settings(),
        log=None,
        results={},
        timeout=TimeoutDecision(1.0, "fixed", "test"),
        deadline=1.0,
        history=TimingHistory(),
        clock=ManualClock(),
    )
    with pytest.raises(ValueError, match="positive and finite"):
        ctx_of_nothing.extend_deadline(float("nan"), "bad")
    assert ctx_of_nothing.extend_deadline(5.0, "no runner") == 1.0  # outside a run: unchanged
