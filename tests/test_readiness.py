"""Readiness: the state machine, backoff, and background recovery (no sleeping)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from smd import Failure, FailureKind, ManualClock, PhaseError, Sample, Series, TimingHistory
from smd._readiness import (
    Backoff,
    InvalidTransition,
    Readiness,
    ReadinessSnapshot,
    ReadinessState,
    RecoveryLoop,
)

S = ReadinessState


def degraded_readiness(clock: ManualClock, *names: str) -> Readiness:
    """A readiness whose phases ``names`` were bypassed and ``ok`` succeeded."""
    r = Readiness(clock=clock)
    r.starting()
    r.phase_started("ok")
    r.phase_finished("ok", "ok")
    for name in names:
        r.phase_started(name)
        r.phase_finished(name, "bypassed", f"{name}: infrastructure failure bypassed")
    assert r.finished() is S.DEGRADED
    return r


# ------------------------------------------------------------------ transitions


def test_starting_to_ready() -> None:
    clock = ManualClock()
    r = Readiness(clock=clock)
    assert r.state is S.STARTING
    r.starting()
    r.phase_started("a")
    clock.advance(1)
    r.phase_finished("a", "ok")
    assert r.finished() is S.READY
    snap = r.snapshot()
    assert snap.state is S.READY
    assert snap.reasons == ()
    assert snap.serving
    assert snap.since == clock.wall()
    assert snap.phases["a"].outcome == "ok"


def test_starting_to_degraded_and_back_to_ready() -> None:
    clock = ManualClock()
    r = degraded_readiness(clock, "db", "cache")
    assert r.reasons() == (
        "db: infrastructure failure bypassed",
        "cache: infrastructure failure bypassed",
    )
    clock.advance(5)
    assert r.recovered("db", time_to_ready=5.0) is S.DEGRADED  # cache still down
    assert r.reasons() == ("cache: infrastructure failure bypassed",)
    assert r.recovered("cache") is S.READY
    assert r.snapshot().reasons == ()
    assert r.phase("db").time_to_ready == 5.0
    assert r.phase("db").recovered_at == clock.monotonic()


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_starting_to_failed(outcome: str) -> None:
    r = Readiness(clock=ManualClock())
    r.phase_started("db")
    r.phase_finished("db", outcome, "db: configuration failure: bad password")
    assert r.finished() is S.FAILED
    snap = r.snapshot()
    assert not snap.serving
    assert snap.reasons == ("db: configuration failure: bad password",)


def test_failed_is_final_and_ready_cannot_fail() -> None:
    r = Readiness(clock=ManualClock())
    r.fail("boom")
    for move in (lambda: r.finished(), lambda: r.fail("again"), r.starting):
        with pytest.raises(InvalidTransition):
            move()
    assert r.state is S.FAILED

    ready = Readiness(clock=ManualClock())
    ready.finished()
    with pytest.raises(InvalidTransition, match="from ready to failed"):
        ready.fail("later")
    with pytest.raises(InvalidTransition, match="cannot start again"):
        ready.starting()
    assert ready.state is S.READY


def test_degraded_cannot_fail() -> None:
    r = degraded_readiness(ManualClock(), "db")
    with pytest.raises(InvalidTransition, match="from degraded to failed"):
        r.fail("x")
    assert r.state is S.DEGRADED


def test_only_a_bypassed_phase_can_recover() -> None:
    r = degraded_readiness(ManualClock(), "db")
    with pytest.raises(InvalidTransition, match="'ok' cannot recover: it is ok"):
        r.recovered("ok")
    with pytest.raises(InvalidTransition, match="it is unknown"):
        r.recovered("nope")


def test_skipped_dependent_keeps_the_service_degraded() -> None:
    """Recovery of a requirement does not run the phase that was skipped for it."""
    r = Readiness(clock=ManualClock())
    r.phase_started("db")
    r.phase_finished("db", "bypassed", "db bypassed")
    r.phase_finished("migrations", "skipped", "requirement 'db' ended bypassed")
    assert r.finished() is S.DEGRADED
    assert r.recovered("db") is S.DEGRADED
    assert r.reasons() == ("requirement 'db' ended bypassed",)


def test_recovery_before_startup_concluded_counts() -> None:
    r = Readiness(clock=ManualClock())
    r.phase_started("db")
    r.phase_finished("db", "bypassed", "db bypassed")
    assert r.recovered("db") is S.STARTING
    assert r.finished() is S.READY


def test_finished_with_a_report_uses_its_phases() -> None:
    @dataclasses.dataclass
    class Rep:
        name: str
        outcome: str
        reason: str = ""

    @dataclasses.dataclass
    class Report:
        state: str
        phases: tuple[Rep, ...]
        failed_phase: Rep | None = None

    r = Readiness(clock=ManualClock())
    r.phase_started("db")  # no phase_finished: the report is authoritative
    assert r.finished(Report("degraded", (Rep("db", "bypassed", "db down"),))) is S.DEGRADED
    assert r.reasons() == ("db down",)

    f = Readiness(clock=ManualClock())
    bad = Rep("cfg", "failed", "cfg: bad value")
    assert f.finished(Report("failed", (bad,), failed_phase=bad)) is S.FAILED
    assert f.reasons() == ("cfg: bad value",)


# ------------------------------------------------------------------ listeners, snapshot


def test_listeners_see_every_change_and_can_unsubscribe() -> None:
    clock = ManualClock()
    r = Readiness(clock=clock)
    seen: list[tuple[S, S, tuple[str, ...]]] = []
    also: list[S] = []

    def listener(previous: S, snap: ReadinessSnapshot) -> None:
        seen.append((previous, snap.state, snap.reasons))

    def broken(previous: S, snap: ReadinessSnapshot) -> None:
        raise RuntimeError("listener bug")

    r.on_change(broken)
    r.on_change(listener)
    unsubscribe = r.on_change(lambda p, s: also.append(s.state))
    r.phase_finished("a", "bypassed", "a down")
    r.phase_finished("b", "bypassed", "b down")
    with capture_logs() as logs:
        r.finished()
    assert "smd.readiness.listener_failed" in [e["event"] for e in logs]
    unsubscribe()
    r.recovered("a")
    r.recovered("b")
    assert seen == [
        (S.STARTING, S.DEGRADED, ("a down", "b down")),
        (S.DEGRADED, S.DEGRADED, ("b down",)),
        (S.DEGRADED, S.READY, ()),
    ]
    assert also == [S.DEGRADED]


def test_snapshot_is_frozen_and_serialisable() -> None:
    r = degraded_readiness(ManualClock(), "db")
    r.note_probe("db")
    snap = r.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = S.READY  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.phases["x"] = snap.phases["db"]  # type: ignore[index]
    r.recovered("db")
    assert snap.state is S.DEGRADED  # an old snapshot does not change
    d = snap.to_dict()
    assert d["state"] == "degraded"
    assert d["reasons"] == ["db: infrastructure failure bypassed"]
    assert d["phases"] == {
        "ok": {
            "outcome": "ok",
            "reason": "",
            "recovered": False,
            "probes": 0,
            "time_to_ready": None,
        },
        "db": {
            "outcome": "bypassed",
            "reason": "db: infrastructure failure bypassed",
            "recovered": False,
            "probes": 1,
            "time_to_ready": None,
        },
    }


# ------------------------------------------------------------------ backoff


def test_backoff_ceilings_grow_and_stay_bounded() -> None:
    b = Backoff(initial=0.5, factor=2, max=30)
    assert list(itertools.islice(b.ceilings(), 9)) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    # No overflow however long an outage lasts.
    assert list(itertools.islice(b.ceilings(), 5000))[-1] == 30


@pytest.mark.parametrize(
    ("jitter", "low"),
    [("full", lambda c: 0.0), ("equal", lambda c: c / 2), ("none", lambda c: c)],
)
def test_backoff_jitter_stays_within_bounds(jitter: str, low: Callable[[float], float]) -> None:
    b = Backoff(jitter=jitter, seed=7)  # type: ignore[arg-type]
    pairs = list(itertools.islice(zip(b.delays(), b.ceilings(), strict=False), 200))
    for delay, ceiling in pairs:
        assert low(ceiling) <= delay <= ceiling
    if jitter != "none":
        # Jittered: the delays are not the ceilings (a fleet does not probe in lockstep).
        assert len({round(d, 9) for d, _ in pairs[10:]}) > 100


def test_backoff_is_reproducible_and_injectable() -> None:
    b = Backoff(seed=42)
    first = list(itertools.islice(b.delays(), 20))
    assert first == list(itertools.islice(b.delays(), 20))
    assert first != list(itertools.islice(Backoff(seed=43).delays(), 20))
    assert list(itertools.islice(b.delays(lambda: 1.0), 4)) == [0.5, 1.0, 2.0, 4.0]
    assert list(itertools.islice(b.delays(lambda: 0.0), 3)) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 5, "max": 1}, {"factor": 0.5}, {"jitter": "decorrelated"}],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ recovery


class FakeSleep:
    """Records delays and moves the manual clock instead of sleeping."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)
        await anyio.lowlevel.checkpoint()


def flaky(results: list[object]) -> Callable[[], object]:
    """A probe that raises or returns the next item of ``results``."""
    it = iter(results)

    async def probe() -> object:
        item = next(it)
        if isinstance(item, BaseException):
            raise item
        return item

    return probe


async def test_recovery_backs_off_then_records_true_time_to_ready() -> None:
    clock = ManualClock()
    r = degraded_readiness(clock, "db")
    started = r.phase("db").started_at
    assert started is not None
    clock.advance(2.0)  # the startup went on degraded for a while
    history = TimingHistory(clock=clock)
    recorded: list[Sample] = []
    sleep = FakeSleep(clock)
    infra = PhaseError(Failure(FailureKind.INFRASTRUCTURE, "connection refused"))
    probe = flaky([ConnectionRefusedError(), infra, False, OSError("reset"), "ok"])

    async def record(sample: Sample) -> None:
        recorded.append(sample)

    loop = RecoveryLoop(
        "db",
        probe,  # type: ignore[arg-type]
        readiness=r,
        started_at=started,
        clock=clock,
        history=history,
        record=record,
        backoff=Backoff(seed=1),
        sleep=sleep,
    )
    with capture_logs() as logs:
        seconds = await loop.run()

    assert loop.attempts == 5
    assert sleep.calls == loop.delays
    assert len(loop.delays) == 4
    for delay, ceiling in zip(loop.delays, Backoff().ceilings(), strict=False):
        assert 0.0 <= delay <= ceiling
    assert seconds == pytest.approx(2.0 + sum(loop.delays))
    assert loop.time_to_ready == seconds
    assert loop.done
    # Recorded as an uncensored time-to-ready sample, handed to the store, not pending twice.
    (sample,) = history.ready
    assert (sample.series, sample.censored, sample.seconds) == (Series.READY, False, seconds)
    assert recorded == [sample]
    assert sample not in history.pending
    assert history.outcomes()[-1][1] is True
    # degraded -> ready, with the event logged.
    assert r.state is S.READY
    assert r.phase("db").probes == 5
    assert r.phase("db").time_to_ready == seconds
    recovered = [e for e in logs if e["event"] == "smd.readiness.recovered"]
    assert recovered == [
        {
            "event": "smd.readiness.recovered",
            "log_level": "info",
            "phase": "db",
            "time_to_ready": round(seconds, 6),
            "probes": 5,
            "state": "ready",
        }
    ]
    failures = [e["error"] for e in logs if e["event"] == "smd.readiness.probe_failed"]
    assert failures == [
        "ConnectionRefusedError",
        "infrastructure: connection refused",
        "probe returned False",
        "OSError",
    ]


async def test_a_failing_record_loses_only_that_write() -> None:
    clock = ManualClock()
    r = degraded_readiness(clock, "db")
    history = TimingHistory(clock=clock)

    def record(sample: Sample) -> None:
        raise PermissionError("read-only store")

    loop = RecoveryLoop(
        "db",
        flaky(["ok"]),  # type: ignore[arg-type]
        readiness=r,
        clock=clock,
        history=history,
        record=record,
        sleep=FakeSleep(clock),
    )
    with capture_logs() as logs:
        await loop.run()
    assert r.state is S.READY
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "smd.readiness.record_failed"
    ]
    assert len(history.pending) == 1  # still pending: a later flush can persist it


async def test_a_hanging_probe_counts_as_a_failed_probe() -> None:
    clock = ManualClock()
    calls = 0

    async def probe() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()

    loop = RecoveryLoop(
        "db", probe, clock=clock, sleep=FakeSleep(clock), probe_timeout=0.01, backoff=Backoff()
    )
    await loop.run()
    assert loop.attempts == 2
    assert len(loop.delays) == 1


async def test_cancellation_stops_the_loop_cleanly() -> None:
    clock = ManualClock()
    r = degraded_readiness(clock, "db")
    sleeping = anyio.Event()

    async def park(seconds: float) -> None:
        sleeping.set()
        await anyio.sleep_forever()

    async def down() -> None:
        raise ConnectionRefusedError

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            loop = r.watch(tg, "db", down, sleep=park)
            await sleeping.wait()
            tg.cancel_scope.cancel()
    assert not loop.done
    assert loop.attempts == 1
    assert r.state is S.DEGRADED
    assert "smd.readiness.recovery_stopped" in [e["event"] for e in logs]


async def test_watch_needs_a_start_time() -> None:
    r = Readiness(clock=ManualClock())
    r.phase_finished("db", "bypassed", "db down")

    async def probe() -> None:
        return None

    async with anyio.create_task_group() as tg:
        with pytest.raises(ValueError, match="no recorded start"):
            r.watch(tg, "db", probe)


async def test_watch_counts_from_the_first_start() -> None:
    clock = ManualClock()
    r = Readiness(clock=clock)
    r.phase_started("db")
    clock.advance(3)
    r.phase_started("db")  # a retry does not move the first start
    r.phase_finished("db", "bypassed", "db down")
    r.finished()
    clock.advance(4)

    async def probe() -> None:
        return None

    async with anyio.create_task_group() as tg:
        loop = r.watch(tg, "db", probe, sleep=FakeSleep(clock))
    assert loop.time_to_ready == 7.0
    assert r.state is S.READY


# ------------------------------------------------------------------ with the sequencer


async def test_sequencer_recovers_a_bypassed_phase(tmp_path: Path) -> None:
    """End to end through ``lifecycle``: degraded, then ready, the sample persisted."""
    sequencer = pytest.importorskip("smd._sequencer")
    from smd import MemoryHistoryStore, Startup, load_settings

    clock = ManualClock()
    probes = 0

    async def recover(ctx: object) -> None:
        nonlocal probes
        probes += 1
        clock.advance(1.0)

    startup = Startup("svc")

    @startup.phase(recovery=recover, target="cache")
    async def cache(ctx: object) -> None:
        clock.advance(2.0)
        raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "refused"))

    readiness = Readiness(clock=clock)
    states: list[S] = []
    became_ready = anyio.Event()

    def listen(previous: S, snap: ReadinessSnapshot) -> None:
        states.append(snap.state)
        if snap.state is S.READY:
            became_ready.set()

    readiness.on_change(listen)
    store = MemoryHistoryStore()
    settings = load_settings(environment="development", history_path=tmp_path / "h.sqlite3")
    async with sequencer.lifecycle(
        startup, settings=settings, store=store, clock=clock, readiness=readiness
    ) as run:
        with anyio.fail_after(10):  # a hang here is a bug, not a slow machine
            await became_ready.wait()
        target = run.target(startup.phases[0])
    assert states == [S.DEGRADED, S.READY]
    assert probes == 1
    ready = [s for s in store.load(target).ready if not s.censored]
    assert [s.seconds for s in ready] == [pytest.approx(3.0)]
