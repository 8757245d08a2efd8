"""Readiness: the state machine fed by a run's events, backoff, and background recovery.

Readiness is an observer: the tests feed it the events of real runs (or read
``run.readiness`` of a real run) and drive recovery through
:func:`smd.lifecycle` with a :class:`~smd.clock.ManualClock`, whose sleeps
advance it instead of waiting: the backoff between probes costs no time.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from smd import (
    Failure,
    FailureKind,
    Phase,
    PhaseContext,
    PhaseError,
    Report,
    Startup,
    StartupFailed,
    State,
    lifecycle,
    load_settings,
    run_startup,
)
from smd._encode import iso
from smd.bypass import PermissivePolicy, StrictPolicy
from smd.clock import ManualClock
from smd.events import (
    Event,
    PhaseStarted,
    ReadinessChanged,
    Recovered,
    StartupFinished,
)
from smd.exceptions import InvalidTransition
from smd.history import MemoryHistoryStore, TargetInfo
from smd.readiness import Readiness
from smd.retry import Backoff
from smd.timeouts import Sample, Series

S = State
RECOVERY = Backoff.recovery()


def infra(message: str = "connection refused") -> PhaseError:
    return PhaseError(Failure(FailureKind.INFRASTRUCTURE, message))


async def ok(ctx: PhaseContext) -> str:
    return "ok"


def down(message: str = "connection refused") -> Callable[[PhaseContext], Any]:
    async def fn(ctx: PhaseContext) -> None:
        raise infra(message)

    return fn


def raising(exc: BaseException) -> Callable[[PhaseContext], Any]:
    async def fn(ctx: PhaseContext) -> None:
        raise exc

    return fn


async def run_events(startup: Startup, **kw: Any) -> tuple[Report, list[Event]]:
    """Run ``startup`` for real (no background recovery); its report and every event."""
    events: list[Event] = []
    kw.setdefault("settings", load_settings(environment="test"))
    kw.setdefault("store", MemoryHistoryStore())
    kw.setdefault("policy", PermissivePolicy())
    try:
        report = await run_startup(startup, observers=[events.append], **kw)
    except StartupFailed as err:
        report = err.report
    return report, events


def feed(readiness: Readiness, events: Iterable[Event]) -> Readiness:
    for event in events:
        readiness(event)
    return readiness


def finished(events: Sequence[Event]) -> StartupFinished:
    (last,) = [e for e in events if isinstance(e, StartupFinished)]
    return last


def startup_of(*phases: Phase) -> Startup:
    s = Startup("svc")
    for p in phases:
        s.add(p)
    return s


async def degraded_run(*names: str) -> tuple[Report, list[Event]]:
    """A real run whose phases ``names`` were bypassed and ``ok`` succeeded."""
    report, events = await run_events(
        startup_of(Phase(name="ok", run=ok), *(Phase(name=n, run=down()) for n in names))
    )
    assert report.state is S.DEGRADED
    return report, events


async def ready_run() -> tuple[Report, list[Event]]:
    report, events = await run_events(startup_of(Phase(name="a", run=ok)))
    assert report.state is S.READY
    return report, events


async def failed_run() -> tuple[Report, list[Event]]:
    report, events = await run_events(
        startup_of(
            Phase(
                name="cfg",
                run=raising(PhaseError(Failure(FailureKind.CONFIGURATION, "cfg: bad password"))),
            )
        ),
        policy=StrictPolicy(),
    )
    assert report.state is S.FAILED
    return report, events


# ------------------------------------------------------------------ transitions


async def test_starting_to_ready() -> None:
    _, events = await ready_run()
    clock = ManualClock()
    r = Readiness("svc", clock=clock)
    assert r.snapshot().state is S.STARTING
    changes: list[Event] = []
    r.emit = changes.append
    feed(r, [e for e in events if not isinstance(e, StartupFinished)])
    assert r.snapshot().state is S.STARTING  # phases alone never conclude
    assert r.phase("a").outcome == "ok"
    clock.advance(1)
    r(finished(events))
    assert r.state is S.READY
    snap = r.snapshot()
    assert snap.state is S.READY
    assert snap.reasons == ()
    assert snap.serving
    assert snap.since == clock.wall()
    assert snap.phases["a"].outcome == "ok"
    (change,) = changes
    assert isinstance(change, ReadinessChanged)
    assert (change.startup, change.previous, change.snapshot.state) == ("svc", S.STARTING, S.READY)


async def test_a_real_run_keeps_its_readiness() -> None:
    startup = startup_of(Phase(name="a", run=ok))
    async with lifecycle(
        startup, settings=load_settings(environment="test"), store=MemoryHistoryStore()
    ) as run:
        assert run.readiness.state is S.READY
        assert run.report is not None
        assert run.readiness.state is run.report.state  # computed once, by the run


async def test_starting_to_degraded_and_back_to_ready() -> None:
    report, events = await degraded_run("db", "cache")
    clock = ManualClock()
    r = feed(Readiness(clock=clock), events)
    assert r.state is S.DEGRADED
    assert r.reasons() == (report.phase("db").reason, report.phase("cache").reason)
    assert r.reasons() == report.reasons
    assert report.phase("db").reason.startswith("db: infrastructure failure bypassed: ")
    clock.advance(5)
    assert r.recovered("db", time_to_ready=5.0) is S.DEGRADED  # cache still down
    assert r.reasons() == (report.phase("cache").reason,)
    assert r.recovered("cache", time_to_ready=6.0) is S.READY
    assert r.snapshot().reasons == ()
    assert r.phase("db").time_to_ready == 5.0
    assert r.phase("db").recovered_at == clock.monotonic()


@pytest.mark.parametrize("with_cancelled", [False, True])
async def test_starting_to_failed(with_cancelled: bool) -> None:
    phases = [
        Phase(
            name="db",
            run=raising(
                PhaseError(Failure(FailureKind.CONFIGURATION, "db: configuration failure"))
            ),
        )
    ]
    if with_cancelled:

        async def slow(ctx: PhaseContext) -> None:
            await anyio.sleep_forever()

        phases.insert(0, Phase(name="slow", run=slow))
    report, events = await run_events(startup_of(*phases), policy=StrictPolicy())
    if with_cancelled:
        assert report.phase("slow").outcome.value == "cancelled"
    r = feed(Readiness(clock=ManualClock()), events)
    assert r.state is S.FAILED
    snap = r.snapshot()
    assert not snap.serving
    failed = report.failed_phase
    assert failed is not None
    assert failed.name == "db"
    assert snap.reasons == (failed.reason,)
    assert "strict mode" in failed.reason


async def test_failed_is_final_and_ready_cannot_fail() -> None:
    _, failed_events = await failed_run()
    _, ready_events = await ready_run()
    r = feed(Readiness(clock=ManualClock()), failed_events)
    before = r.snapshot()
    for event in (finished(ready_events), finished(failed_events)):
        with pytest.raises(InvalidTransition, match="from failed to"):
            r(event)
    assert r.state is S.FAILED
    assert r.snapshot() == before  # a rejected report changes nothing

    ready = feed(Readiness(clock=ManualClock()), ready_events)
    before = ready.snapshot()
    with pytest.raises(InvalidTransition, match="from ready to failed"):
        ready(finished(failed_events))
    with pytest.raises(InvalidTransition, match="from ready to ready"):
        ready(finished(ready_events))
    assert ready.state is S.READY
    assert ready.snapshot() == before


async def test_degraded_cannot_fail() -> None:
    _, events = await degraded_run("db")
    _, failed_events = await failed_run()
    r = feed(Readiness(clock=ManualClock()), events)
    with pytest.raises(InvalidTransition, match="from degraded to failed"):
        r(finished(failed_events))
    assert r.state is S.DEGRADED


async def test_only_a_bypassed_phase_can_recover() -> None:
    _, events = await degraded_run("db")
    r = feed(Readiness(clock=ManualClock()), events)
    with pytest.raises(InvalidTransition, match="'ok' cannot recover: it is ok"):
        r.recovered("ok", time_to_ready=1.0)
    with pytest.raises(InvalidTransition, match="it is unknown"):
        r.recovered("nope", time_to_ready=1.0)
    assert r.state is S.DEGRADED


async def test_skipped_dependent_keeps_the_service_degraded() -> None:
    """Recovery of a requirement does not run the phase that was skipped for it."""
    clock = ManualClock()
    recovered = anyio.Event()

    async def probe(ctx: PhaseContext) -> None:
        return None

    def observe(event: Event) -> None:
        if isinstance(event, Recovered):
            recovered.set()

    startup = startup_of(
        Phase(name="db", run=down(), recovery=probe),
        Phase(name="migrations", run=ok, requires=("db",)),
    )
    async with lifecycle(
        startup,
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=clock,
        observers=[observe],
    ) as run:
        assert run.report is not None
        assert run.report.phase("migrations").outcome.value == "skipped"
        assert run.readiness.state is S.DEGRADED
        with anyio.fail_after(10):  # a hang here is a bug, not a slow machine
            await recovered.wait()
        assert run.readiness.state is S.DEGRADED
        assert run.readiness.reasons() == ("requirement 'db' ended bypassed",)
        assert run.readiness.phase("db").recovered_at is not None
        assert "migrations" not in run.values  # it never ran


async def test_recovery_before_startup_concluded_counts() -> None:
    _, events = await degraded_run("db")
    r = Readiness(clock=ManualClock())
    feed(r, [e for e in events if not isinstance(e, StartupFinished)])
    assert r.recovered("db", time_to_ready=1.0) is S.STARTING
    r(finished(events))
    assert r.state is S.READY


async def test_the_report_is_authoritative() -> None:
    report, events = await degraded_run("db")
    r = Readiness(clock=ManualClock())
    r(next(e for e in events if isinstance(e, PhaseStarted) and e.phase == "db"))
    r(finished(events))  # no PhaseFinished: the report says how each phase ended
    assert r.state is S.DEGRADED
    assert r.reasons() == (report.phase("db").reason,)
    assert r.phase("db").outcome == "bypassed"

    failed_report, failed_events = await failed_run()
    f = Readiness(clock=ManualClock())
    f(finished(failed_events))
    assert f.state is S.FAILED
    cfg = failed_report.phase("cfg")
    assert f.reasons() == (cfg.reason,)
    assert f.phase("cfg").outcome == "failed"


# ------------------------------------------------------------------ observers, snapshot


async def test_observers_see_every_change_and_a_broken_one_is_reported_once() -> None:
    clock = ManualClock()
    seen: list[tuple[S, S, tuple[str, ...]]] = []
    broken_calls = 0
    both = anyio.Event()
    b_probes = 0

    def observe(event: Event) -> None:
        if isinstance(event, ReadinessChanged):
            seen.append((event.previous, event.snapshot.state, event.snapshot.reasons))
            if event.snapshot.state is S.READY:
                both.set()

    def broken(event: Event) -> None:
        nonlocal broken_calls
        broken_calls += 1
        raise RuntimeError("observer bug")

    async def a_probe(ctx: PhaseContext) -> None:
        return None

    async def b_probe(ctx: PhaseContext) -> None:
        nonlocal b_probes
        b_probes += 1
        if b_probes == 1:  # b answers only after a backoff, so a recovers first
            raise ConnectionRefusedError

    startup = startup_of(
        Phase(name="a", run=down("a down"), recovery=a_probe),
        Phase(name="b", run=down("b down"), recovery=b_probe),
    )
    with capture_logs() as logs:
        async with lifecycle(
            startup,
            settings=load_settings(environment="development"),
            store=MemoryHistoryStore(),
            clock=clock,
            observers=[broken, observe],
        ) as run:
            with anyio.fail_after(10):
                await both.wait()
            assert run.report is not None
            a_reason, b_reason = run.report.phase("a").reason, run.report.phase("b").reason
    assert seen == [
        (S.STARTING, S.DEGRADED, (a_reason, b_reason)),
        (S.DEGRADED, S.DEGRADED, (b_reason,)),
        (S.DEGRADED, S.READY, ()),
    ]
    failures = [e for e in logs if e["event"] == "smd.observer.failed"]
    assert len(failures) == 1
    assert "observer bug" in failures[0]["error"]
    assert broken_calls > 1  # still called, never breaking the run


async def test_snapshot_is_frozen_and_serialisable() -> None:
    report, events = await degraded_run("db")
    clock = ManualClock()
    r = feed(Readiness(clock=clock), events)
    r.note_probe("db")
    snap = r.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.state = S.READY  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.phases["x"] = snap.phases["db"]  # type: ignore[index]
    r.recovered("db", time_to_ready=2.0)
    assert snap.state is S.DEGRADED  # an old snapshot does not change
    d = snap.to_dict()
    assert d["state"] == "degraded"
    assert d["reasons"] == [report.phase("db").reason]
    assert d["since"] == iso(clock.wall())  # ISO-8601 text, the one timestamp format
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
            "reason": report.phase("db").reason,
            "recovered": False,
            "probes": 1,
            "time_to_ready": None,
        },
    }
    assert r.snapshot().to_dict()["phases"]["db"] == {  # type: ignore[index]
        "outcome": "bypassed",
        "reason": report.phase("db").reason,
        "recovered": True,
        "probes": 1,
        "time_to_ready": 2.0,
    }


# ------------------------------------------------------------------ backoff


def test_recovery_backoff_ceilings_grow_and_stay_bounded() -> None:
    assert (RECOVERY.initial, RECOVERY.multiplier, RECOVERY.cap, RECOVERY.jitter) == (
        0.5,
        2.0,
        30.0,
        "full",
    )
    assert [RECOVERY.ceiling(n) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    # No overflow however long an outage lasts.
    assert RECOVERY.ceiling(5000) == 30
    assert RECOVERY.delay(10**9, random.Random(1)) <= 30


@pytest.mark.parametrize(
    ("jitter", "low"),
    [("full", lambda c: 0.0), ("equal", lambda c: c / 2), ("none", lambda c: c)],
)
def test_backoff_jitter_stays_within_bounds(jitter: str, low: Callable[[float], float]) -> None:
    b = Backoff(initial=0.5, multiplier=2.0, cap=30.0, jitter=jitter)  # type: ignore[arg-type]
    rng = random.Random(7)
    pairs = [(b.delay(n, rng), b.ceiling(n)) for n in range(200)]
    for delay, ceiling in pairs:
        assert low(ceiling) <= delay <= ceiling
    if jitter != "none":
        # Jittered: the delays are not the ceilings (a fleet does not probe in lockstep).
        assert len({round(d, 9) for d, _ in pairs[10:]}) > 100


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [RECOVERY.delay(n, rng) for n in range(20)]

    assert delays(42) == delays(42)
    assert delays(42) != delays(43)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"initial": 5, "cap": 1},
        {"multiplier": 0.5},
        {"jitter": "decorrelated"},
        {"cap": float("inf")},
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ recovery through a real run


class Probe:
    """A recovery probe that raises or returns the next item of ``results``,
    noting the run clock's time of every call."""

    def __init__(self, results: Sequence[object]) -> None:
        self.results = list(results)
        self.calls: list[float] = []
        self.deadlines: list[float] = []

    async def __call__(self, ctx: PhaseContext) -> object:
        now = ctx.clock.monotonic()
        self.calls.append(now)
        self.deadlines.append(ctx.deadline - now)
        item = self.results[min(len(self.calls), len(self.results)) - 1]
        if isinstance(item, BaseException):
            raise item
        return item


class Recording:
    """An observer keeping every event, with an anyio event per ``Recovered``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.recovered = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Recovered):
            self.recovered.set()

    def of(self, kind: type[Any], phase: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (phase is None or getattr(e, "phase", None) == phase)
        ]

    async def wait(self) -> None:
        with anyio.fail_after(10):  # a hang here is a bug, not a slow machine
            await self.recovered.wait()


def gaps(times: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_a_recovered_value_is_published_before_readiness_says_ready() -> None:
    """Whoever the readiness change wakes (a route, the ASGI state, an observer)
    must already find the value the recovery probe returned."""
    clock = ManualClock()
    seen_at_change: list[object] = []
    run_ref: list[Any] = []
    ready = anyio.Event()
    held = anyio.Event()  # the probe answers once the test holds the run

    async def probe(ctx: PhaseContext) -> str:
        await held.wait()
        return "pool"

    def observe(event: Event) -> None:
        if isinstance(event, ReadinessChanged) and event.snapshot.state is S.READY:
            seen_at_change.append(run_ref[0].values.get("db", "missing"))
            ready.set()

    startup = startup_of(Phase(name="db", run=down(), recovery=probe))
    async with lifecycle(
        startup,
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=clock,
        observers=[observe],
    ) as run:
        run_ref.append(run)
        held.set()
        with anyio.fail_after(10):  # a hang here is a bug, not a slow machine
            await ready.wait()
    assert seen_at_change == ["pool"]


async def test_recovery_backs_off_then_records_true_time_to_ready() -> None:
    clock = ManualClock()
    store = MemoryHistoryStore()
    probe = Probe(
        [ConnectionRefusedError(), infra(), False, OSError("reset"), "pool"],
    )
    closed: list[object] = []

    async def close(value: object) -> None:
        closed.append(value)

    startup = startup_of(Phase(name="db", run=down(), recovery=probe, teardown=close))
    seen = Recording()
    settings = load_settings(environment="development")
    with capture_logs() as logs:
        async with lifecycle(
            startup, settings=settings, store=store, clock=clock, observers=[seen]
        ) as run:
            assert run.readiness.snapshot().state is S.DEGRADED
            await seen.wait()
            key = run.target(startup.phases[0])
            assert run.readiness.state is S.READY
            assert run.values["db"] == "pool"  # what the probe returned is published

    assert len(probe.calls) == 5
    # Every probe has the settings' phase_timeout as its deadline.
    assert probe.deadlines == [pytest.approx(settings.phase_timeout)] * 5
    # Between probes: the recovery backoff, bounded by its ceilings and jittered
    # (full jitter never lands on the ceiling itself).
    delays = gaps(probe.calls)
    assert len(delays) == 4
    for n, delay in enumerate(delays):
        assert 0.0 <= delay < RECOVERY.ceiling(n)
    assert len(set(delays)) == 4

    # The true time-to-ready counts from the phase's first start.
    (started,) = seen.of(PhaseStarted, "db")
    (rec,) = seen.of(Recovered, "db")
    ttr = probe.calls[-1] - started.t
    assert rec.time_to_ready == pytest.approx(ttr, abs=1e-9)
    assert rec.time_to_ready >= sum(delays)
    assert rec.probes == 5
    assert run.readiness.phase("db").probes == 5
    assert run.readiness.phase("db").time_to_ready == rec.time_to_ready

    # Recorded (and persisted once) as an uncensored time-to-ready sample.
    history = store.load(key)
    ready = [s for s in history.ready if not s.censored]
    assert [(s.series, s.censored) for s in ready] == [(Series.READY, False)]
    assert ready[0].seconds == pytest.approx(rec.time_to_ready, abs=1e-6)
    assert history.outcomes()[-1][1] is True
    assert [s.kind for s in history.failures] == [FailureKind.INFRASTRUCTURE]  # the failed start

    # degraded -> ready, published and logged.
    changes = [(e.previous, e.snapshot.state) for e in seen.of(ReadinessChanged)]
    assert changes == [(S.STARTING, S.DEGRADED), (S.DEGRADED, S.READY)]
    recovered_logs = [e for e in logs if e["event"] == "smd.readiness.recovered"]
    assert len(recovered_logs) == 1
    assert recovered_logs[0]["phase"] == "db"
    assert recovered_logs[0]["probes"] == 5
    assert recovered_logs[0]["time_to_ready"] == pytest.approx(rec.time_to_ready, abs=1e-6)
    failed = [
        (e["probe"], e["kind"], e["error"])
        for e in logs
        if e["event"] == "smd.readiness.probe_failed"
    ]
    assert failed == [
        (1, "application", "phase 'db' raised ConnectionRefusedError"),
        (2, "infrastructure", "connection refused"),
        (3, "infrastructure", "the probe returned False"),
        (4, "application", "phase 'db' raised OSError: reset"),
    ]
    # A recovered phase is torn down like one that succeeded at first.
    assert closed == ["pool"]


class ReadOnlyStore(MemoryHistoryStore):
    """A third-party store that can read but whose every write fails."""

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        raise PermissionError("read-only store")


async def test_a_store_that_cannot_write_does_not_stop_recovery() -> None:
    clock = ManualClock()
    seen = Recording()
    startup = startup_of(Phase(name="db", run=down(), recovery=Probe(["pool"])))
    store = ReadOnlyStore()
    async with lifecycle(
        startup,
        settings=load_settings(environment="development"),
        store=store,
        clock=clock,
        observers=[seen],
    ) as run:
        await seen.wait()
        assert run.readiness.state is S.READY
        assert run.values["db"] == "pool"
    assert store.targets() == {}


async def test_a_hanging_probe_counts_as_a_failed_probe() -> None:
    clock = ManualClock()
    seen = Recording()
    calls = 0

    async def probe(ctx: PhaseContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()

    startup = startup_of(Phase(name="db", run=down(), recovery=probe))
    settings = load_settings(environment="development", phase_timeout=0.05)
    with capture_logs() as logs:
        async with lifecycle(
            startup, settings=settings, store=MemoryHistoryStore(), clock=clock, observers=[seen]
        ) as run:
            await seen.wait()
            assert run.readiness.state is S.READY
    assert calls == 2
    (rec,) = seen.of(Recovered)
    assert rec.probes == 2
    failed = [e for e in logs if e["event"] == "smd.readiness.probe_failed"]
    assert [(e["probe"], e["kind"]) for e in failed] == [(1, "timeout")]
    assert "no answer within 0.05s" in failed[0]["error"]


async def test_probing_stops_at_shutdown() -> None:
    clock = ManualClock()
    probe = Probe([ConnectionRefusedError()])
    probed_twice = anyio.Event()

    async def counting(ctx: PhaseContext) -> object:
        try:
            return await probe(ctx)
        finally:
            if len(probe.calls) >= 2:
                probed_twice.set()

    seen = Recording()
    startup = startup_of(Phase(name="db", run=down(), recovery=counting))
    with capture_logs() as logs:
        async with lifecycle(
            startup,
            settings=load_settings(environment="development"),
            store=MemoryHistoryStore(),
            clock=clock,
            observers=[seen],
        ) as run:
            with anyio.fail_after(10):
                await probed_twice.wait()
        probes = len(probe.calls)
        for _ in range(20):  # give a probe that outlived the block every chance to run
            await anyio.lowlevel.checkpoint()
    assert len(probe.calls) == probes  # no task outlives the block
    assert run.readiness.state is S.DEGRADED
    assert seen.of(Recovered) == []
    assert "smd.readiness.recovery_stopped" in [e["event"] for e in logs]
    # Every wait between those probes was a bounded backoff delay.
    for n, delay in enumerate(gaps(probe.calls)):
        assert 0.0 <= delay <= RECOVERY.ceiling(n)


async def test_time_to_ready_counts_from_the_first_start() -> None:
    """The startup went on for a while after the phase failed: that time counts."""
    clock = ManualClock()
    seen = Recording()

    async def failing(ctx: PhaseContext) -> None:
        clock.advance(2.0)
        raise infra()

    async def after(ctx: PhaseContext) -> None:
        clock.advance(4.0)

    async def probe(ctx: PhaseContext) -> None:
        clock.advance(1.0)

    startup = startup_of(
        Phase(name="db", run=failing, recovery=probe), Phase(name="after", run=after)
    )
    async with lifecycle(
        startup,
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=clock,
        observers=[seen],
        mode="sequential",
    ) as run:
        await seen.wait()
        assert run.readiness.state is S.READY
        (started,) = seen.of(PhaseStarted, "db")
        recovered_at = clock.monotonic()
    (rec,) = seen.of(Recovered)
    assert rec.time_to_ready == pytest.approx(recovered_at - started.t, abs=1e-9)
    assert rec.time_to_ready >= 2.0 + 4.0 + 1.0


async def test_lifecycle_recovery_with_an_injected_clock_records_exact_times() -> None:
    """End to end through ``lifecycle``: degraded, then ready, the sample persisted.

    Only the phase and the probe move the injected clock (2 s + 1 s), so the
    recorded time-to-ready is exactly 3 s: one clock, consistent figures.
    """
    clock = ManualClock()
    probes = 0

    async def recover(ctx: PhaseContext) -> None:
        nonlocal probes
        probes += 1
        clock.advance(1.0)

    startup = Startup("svc")

    @startup.phase(recovery=recover, target="cache")
    async def cache(ctx: PhaseContext) -> None:
        clock.advance(2.0)
        raise infra("refused")

    seen = Recording()
    store = MemoryHistoryStore()
    settings = load_settings(environment="development")
    async with lifecycle(
        startup, settings=settings, store=store, clock=clock, observers=[seen]
    ) as run:
        await seen.wait()
        target = run.target(startup.phases[0])
        assert run.report is not None
        cache_report = run.report.phase("cache")
    states = [e.snapshot.state for e in seen.of(ReadinessChanged)]
    assert states == [S.DEGRADED, S.READY]
    assert probes == 1
    assert target == "svc/cache@development"
    assert cache_report.duration == pytest.approx(2.0)
    ready = [s for s in store.load(target).ready if not s.censored]
    assert [s.seconds for s in ready] == [pytest.approx(3.0)]
