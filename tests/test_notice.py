"""Readiness noticed at once (issue 12): the retry loop's schedule and its rate bound.

The waits come from one rule (:class:`smd.retry.Backoff`): quick refusals in a
row wait the ladder's first step and restart it, anything the dependency
answered (or that took long) climbs the ladder, and no wait is shorter than
``floor``. The schedule is checked on a :class:`~smd.clock.ManualClock` (no
sleeping): exact times, exact bounds. Two tests against the real server show
that a real refusal is quick and a real 57P03 is expensive.

Figures (how many milliseconds after the server opened) live in
``benchmarks/notice_latency.py``, not here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pgbed.cluster import free_port
from pgbed.proxy import StartingStandby
from waitbed import RecordingClock

from smd import Failure, FailureKind
from smd.checks.postgres import PostgresCheck
from smd.clock import ManualClock
from smd.retry import Backoff, ProbeResult, retry_until_ready

BACKOFF = Backoff()


@dataclass
class Server:
    """A scripted dependency on a ManualClock: ``phases`` are (until, what it does):
    ``refuse`` (no answer, ``refuse_cost`` s), ``answer`` (57P03 after
    ``answer_cost`` s), ``silent`` (no answer until the attempt timeout); ready after."""

    clock: ManualClock
    phases: list[tuple[float, str]]
    refuse_cost: float = 0.0003
    answer_cost: float = 0.004
    ready_cost: float = 0.008
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    got: list[str] = field(default_factory=list)

    def state(self, now: float) -> str:
        for until, what in self.phases:
            if now < until:
                return what
        return "ready"

    async def probe(self, seconds: float) -> ProbeResult:
        now = self.clock.monotonic()
        self.starts.append(now)
        what = self.state(now)
        cost = {"refuse": self.refuse_cost, "answer": self.answer_cost}.get(what, self.ready_cost)
        if what == "silent" or cost > seconds:
            what = "silent"  # no answer within the attempt's timeout
        self.got.append(what)
        if what == "refuse":
            self.clock.advance(self.refuse_cost)
            result = ProbeResult(False, Failure(FailureKind.INFRASTRUCTURE, "refused"))
        elif what == "answer":
            self.clock.advance(self.answer_cost)
            failure = Failure(FailureKind.INFRASTRUCTURE, "starting up", code="57P03")
            result = ProbeResult(False, failure, self.answer_cost, answered=True)
        elif what == "silent":
            self.clock.advance(seconds)
            result = ProbeResult(False, Failure(FailureKind.TIMEOUT, "no answer"))
        else:
            self.clock.advance(self.ready_cost)
            result = ProbeResult(True, None, self.ready_cost, answered=True)
        self.ends.append(self.clock.monotonic())
        return result

    def gaps(self) -> list[float]:
        """Idle time between one attempt's end and the next one's start."""
        return [b - a for a, b in zip(self.ends, self.starts[1:], strict=False)]


def ladder_range(backoff: Backoff, step: int) -> tuple[float, float]:
    d = backoff.ceiling(step)
    return max(backoff.floor, d / 2), max(backoff.floor, d)


async def wait_for(
    server: Server,
    *,
    deadline: float = 30.0,
    backoff: Backoff = BACKOFF,
    seed: int = 1,
    **options: Any,
) -> tuple[Any, RecordingClock]:
    waits = RecordingClock(server.clock)
    result = await retry_until_ready(
        server.probe,
        target="scripted",
        deadline_seconds=deadline,
        backoff=backoff,
        clock=waits,
        rng=random.Random(seed),
        **options,
    )
    return result, waits


# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("seed", range(5))
async def test_a_refusing_dependency_is_polled_at_the_first_step_and_noticed_within_it(
    seed: int,
) -> None:
    clock = ManualClock()
    ready_at = 2.0 + seed * 0.1234
    server = Server(clock, [(ready_at, "refuse")])
    result, waits = await wait_for(server, seed=seed)
    assert result.ok
    lo, hi = ladder_range(BACKOFF, 0)
    # Every wait is the first step: 10-20 ms, never the ladder's later steps.
    assert waits.waits
    assert all(lo <= w <= hi for w in waits.waits), (min(waits.waits), max(waits.waits))
    assert len({round(w, 9) for w in waits.waits}) > len(waits.waits) // 2  # jittered
    # Noticed by the first attempt after it opened: within one step-0 wait
    # (plus the refusal that was under way) and the successful handshake.
    first_ok = server.got.index("ready")
    assert server.starts[first_ok] >= ready_at
    assert server.starts[first_ok] - ready_at <= hi + server.refuse_cost + 1e-9
    assert result.time_to_ready == pytest.approx(server.ends[-1] - server.starts[0])


async def test_answers_climb_the_ladder_as_before() -> None:
    """57P03 costs a handshake: each answered failure waits one step more, up to the cap."""
    clock = ManualClock()
    server = Server(clock, [(8.0, "answer")])
    result, waits = await wait_for(server)
    assert result.ok
    assert len(waits.waits) >= 8
    for step, w in enumerate(waits.waits):
        lo, hi = ladder_range(BACKOFF, step)
        assert lo <= w <= hi, (step, w)
    assert waits.waits[-1] >= BACKOFF.cap / 2  # it reached the cap


async def test_refusals_after_answers_restart_the_ladder_on_the_second() -> None:
    """A server that answered 57P03 for a while, then refuses (restarting), then is ready."""
    clock = ManualClock()
    server = Server(clock, [(3.0, "answer"), (4.0, "refuse")])
    result, waits = await wait_for(server)
    assert result.ok
    kinds = server.got[: len(waits.waits)]
    n_answers = kinds.index("refuse")
    assert n_answers >= 5
    # The first refusal keeps the spacing the answers earned (one step more) ...
    lo, hi = ladder_range(BACKOFF, n_answers)
    assert lo <= waits.waits[n_answers] <= hi
    # ... from the second one on, the first step.
    lo0, hi0 = ladder_range(BACKOFF, 0)
    later = waits.waits[n_answers + 1 :]
    assert later
    assert all(lo0 <= w <= hi0 for w in later)


async def test_a_refusal_then_an_answer_is_still_a_single_step() -> None:
    """pg_ctl start: refused while it boots, then one 57P03 ("starting up"), then ready.

    The 57P03 after a run of refusals waits the first step, not the ladder a
    long refusal would otherwise have climbed."""
    clock = ManualClock()
    server = Server(clock, [(1.5, "refuse"), (1.53, "answer")])
    result, waits = await wait_for(server)
    assert result.ok
    assert "answer" in server.got
    i = server.got.index("answer")
    lo, hi = ladder_range(BACKOFF, 0)
    assert lo <= waits.waits[i] <= hi


async def test_slow_unanswered_failures_are_expensive() -> None:
    """A blackholed dependency (timeouts) backs off along the ladder: slow is not cheap."""
    clock = ManualClock()
    server = Server(clock, [(6.0, "silent")])
    result, waits = await wait_for(server, deadline=20.0, attempt_seconds=0.5)
    assert result.ok
    assert len(waits.waits) >= 5
    for step, w in enumerate(waits.waits):
        lo, hi = ladder_range(BACKOFF, step)
        assert lo <= w <= hi, (step, w)


def test_what_is_quick_and_what_is_cheap() -> None:
    b = Backoff()
    assert b.is_quick(0.0003, answered=False)
    assert b.is_quick(0.004, answered=False)  # a refusal on a busy machine
    assert not b.is_quick(0.0003, answered=True)  # the server spoke: a handshake
    assert not b.is_quick(0.5, answered=False)  # a timeout
    # Two quick ones in a row are cheap: the first step, ladder restarted.
    assert b.next_step(4, quick=True, after_quick=True) == (0, 0)
    assert b.next_step(4, quick=True, after_quick=False) == (4, 5)
    assert b.next_step(4, quick=False, after_quick=True) == (4, 5)
    # Background recovery has no fast path.
    r = Backoff.recovery()
    assert not r.is_quick(0.0, answered=False)


def test_backoff_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="floor"):
        Backoff(floor=0.0)
    with pytest.raises(ValueError, match="floor"):
        Backoff(floor=1.0, cap=0.5)
    with pytest.raises(ValueError, match="cheap"):
        Backoff(cheap=-0.001)
    assert Backoff(cheap=0.0).is_quick(0.0, answered=False) is False


# --------------------------------------------------------------------------- the rate bound


def _backoffs() -> Iterator[Backoff]:
    yield Backoff()
    yield Backoff(jitter="full")
    yield Backoff(jitter="none")
    yield Backoff(initial=0.001, cap=0.05, jitter="full")  # a ladder below the floor
    yield Backoff(initial=0.001, cap=0.05, jitter="none", floor=0.02)


@pytest.mark.parametrize("backoff", list(_backoffs()), ids=repr)
async def test_no_wait_is_shorter_than_the_floor_whatever_fails(backoff: Backoff) -> None:
    """The cheapest possible failure (no answer, no time at all) for 10 s: the
    attempt rate stays under 1/floor per second, and only the last wait (squeezed
    so that a final attempt fits before the deadline) may be shorter."""
    clock = ManualClock()
    server = Server(clock, [(1e9, "refuse")], refuse_cost=0.0)
    deadline = 10.0
    result, waits = await wait_for(server, deadline=deadline, backoff=backoff)
    assert not result.ok
    assert all(w >= backoff.floor - 1e-12 for w in waits.waits[:-1])
    assert result.attempts <= deadline / backoff.floor + 2
    # In any one second, at most 1/floor + 1 attempts start.
    for t in range(int(deadline)):
        starts = [s for s in server.starts if t <= s < t + 1]
        assert len(starts) <= 1 / backoff.floor + 1


async def test_quick_refusals_keep_the_documented_guarantees() -> None:
    """Polling fast does not change the loop's promises: no overrun, no attempt
    with less than min_attempt_seconds left, a last attempt just before the
    deadline, and the wait marked as ended by its deadline."""
    clock = ManualClock()
    server = Server(clock, [(1e9, "refuse")])
    result, _ = await wait_for(server, deadline=3.0, min_attempt_seconds=0.1)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.kind is FailureKind.INFRASTRUCTURE
    assert result.failure.deadline_reached
    assert result.elapsed <= 3.0 + 1e-9
    assert all(3.0 - s >= 0.1 - 1e-9 for s in server.starts)
    # The last wait was squeezed so that the final attempt starts exactly when
    # min_attempt_seconds are left: a dependency ready just then is caught.
    assert server.starts[-1] == pytest.approx(3.0 - 0.1)
    assert result.attempts == len(server.starts)


async def test_ready_just_before_the_deadline_is_caught() -> None:
    clock = ManualClock()
    server = Server(clock, [(2.9, "refuse")])
    result, _ = await wait_for(server, deadline=3.0, min_attempt_seconds=0.1)
    assert result.ok


async def test_the_telling_failure_survives_a_squeezed_last_attempt() -> None:
    """57P03 every time, the last attempt cut short by the deadline and timed out:
    the report keeps the 57P03."""
    clock = ManualClock()
    server = Server(clock, [(1e9, "answer")], answer_cost=0.3)
    result, _ = await wait_for(server, deadline=2.0, attempt_seconds=0.5, min_attempt_seconds=0.1)
    assert result.failure is not None
    assert result.failure.code == "57P03"
    assert result.elapsed <= 2.0 + 1e-9


# --------------------------------------------------------------------------- real server


@pytest.mark.postgres
async def test_a_real_refusal_is_polled_at_the_first_step() -> None:
    """A closed port: real refusals are quick, so the waits stay at the first step
    (a refusal slowed by a busy machine may climb a step, never far)."""
    waits = RecordingClock()
    check = PostgresCheck(f"postgresql://u:p@127.0.0.1:{free_port()}/db")
    result = await check.wait_ready(deadline_seconds=0.6, clock=waits)
    assert not result.ok
    assert len(waits.waits) >= 5
    _, hi0 = ladder_range(BACKOFF, 0)
    at_first_step = [w for w in waits.waits[:-1] if w <= hi0]
    assert len(at_first_step) >= 0.8 * len(waits.waits[:-1])
    assert all(w >= BACKOFF.floor for w in waits.waits[:-1])


@pytest.mark.postgres
async def test_a_real_57p03_climbs_the_ladder(
    starting_standby: Any,
) -> None:
    """A real server answering 57P03 "starting up": every answer is expensive."""
    standby: StartingStandby = starting_standby()
    waits = RecordingClock()
    result = await PostgresCheck(standby.dsn()).wait_ready(deadline_seconds=1.5, clock=waits)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.code == "57P03"
    assert len(waits.waits) >= 3
    for step, w in enumerate(waits.waits[:-1]):
        lo, hi = ladder_range(BACKOFF, step)
        assert lo <= w <= hi, (step, w)
