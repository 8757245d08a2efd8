"""One recorded wait of the PostgreSQL check on the real clock, for its tests.

- `RecordingClock`: a clock (the system clock unless given one) that records
  where the retry loop started (its first reading) and every wait it asked
  for, then does it.
- `Recorder`: the ``on_attempt`` calls and the answered latencies.
- `wait`: one ``PostgresCheck(...).wait_ready`` with both, behind a hang guard.
- `assert_budgets_fit_the_deadline`, `assert_reported_at_once`: what the loop
  decided, by its own clock readings (no wall-clock claim).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from smd.checks.postgres import PostgresCheck, PostgresOptions
from smd.clock import ManualClock, SystemClock
from smd.retry import CheckResult
from smd.timeouts import TimingHistory


class Recorder:
    """Collects on_attempt calls and answered latencies (a real TimingHistory)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, bool, dict[str, Any]]] = []
        self.history = TimingHistory()

    def __call__(self, start: float, end: float, ok: bool, /, **detail: Any) -> None:
        self.calls.append((start, end, ok, detail))


class RecordingClock:
    """The retry loop's clock (``clock``, the system clock by default), recording
    where the loop started (its first reading) and every wait it asked for, then
    doing it (a ManualClock advances at once; a SystemClock really sleeps)."""

    def __init__(self, clock: ManualClock | SystemClock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self.started: float | None = None
        self.waits: list[float] = []

    def monotonic(self) -> float:
        now = self._clock.monotonic()
        if self.started is None:
            self.started = now
        return now

    def wall(self) -> float:
        return self._clock.wall()

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await self._clock.sleep(seconds)


async def wait(
    dsn: str | PostgresOptions,
    deadline: float,
    attempt: float | None = None,
    *,
    on_attempt: Callable[[Recorder], None] | None = None,
    **kw: Any,
) -> tuple[CheckResult, Recorder, RecordingClock]:
    """One wait on the real clock; ``on_attempt(rec)`` runs after each recorded attempt."""
    rec = Recorder()
    clock = RecordingClock()
    options = dsn if isinstance(dsn, PostgresOptions) else PostgresOptions.from_dsn(dsn, **kw)

    def hook(start: float, end: float, ok: bool, /, **detail: Any) -> None:
        rec(start, end, ok, **detail)
        if on_attempt is not None:
            on_attempt(rec)

    # A hang guard only (the loop has its own deadline): no claim about speed.
    with anyio.fail_after(deadline + 30):
        result = await PostgresCheck(options).wait_ready(
            deadline_seconds=deadline,
            attempt_seconds=attempt,
            on_attempt=hook,
            history=rec.history,
            clock=clock,
        )
    return result, rec, clock


# Attempt timeouts are reported rounded to the microsecond.
ROUNDING = 1e-6


def assert_budgets_fit_the_deadline(
    rec: Recorder, clock: RecordingClock, deadline: float, min_attempt: float = 0.1
) -> None:
    """Every budget the loop handed out fits in ``deadline``, by its own clock
    readings: the first attempt's timeout is at most the deadline; every wait
    leaves room for a last attempt of ``min_attempt``; every later attempt's
    timeout is at most what was left after the attempt and the wait before it.
    (Nothing here is a duration: each bound is the loop's own arithmetic.)"""
    assert clock.started is not None
    ends_at = clock.started + deadline
    timeouts = [d["timeout"] for _, _, _, d in rec.calls]
    ends = [end for _, end, _, _ in rec.calls]
    assert len(clock.waits) in (len(timeouts) - 1, len(timeouts))  # one wait between attempts
    assert timeouts[0] <= deadline + ROUNDING
    for i, pause in enumerate(clock.waits):
        assert pause <= ends_at - ends[i] - min_attempt + 1e-9, (i, pause)
    for i in range(1, len(timeouts)):
        left = ends_at - ends[i - 1] - clock.waits[i - 1]
        assert timeouts[i] <= left + ROUNDING, (i, timeouts[i], left)


def assert_reported_at_once(result: CheckResult, rec: Recorder, clock: RecordingClock) -> None:
    """A fault that waiting cannot cure: one attempt, no wait, not the deadline."""
    assert result.failure is not None
    assert result.attempts == 1
    assert len(rec.calls) == 1
    assert clock.waits == []  # no backoff: nothing was slept before reporting
    assert not result.failure.deadline_reached
    assert rec.calls[0][3]["kind"] == result.failure.kind.value
