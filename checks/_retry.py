"""The attempt loop: retry what can heal, inside a deadline, with jittered backoff.

Independent of PostgreSQL: it drives any ``probe(attempt_timeout) ->
ProbeResult`` so its arithmetic (never start an attempt that cannot finish,
stop at once on a configuration failure) is testable without a server and
without sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from smd import Failure, FailureKind

__all__ = [
    "AttemptHook",
    "AttemptRecorder",
    "Backoff",
    "CheckResult",
    "ProbeResult",
    "retry_until_ready",
]


class AttemptHook(Protocol):
    """Called after every attempt; :meth:`smd.PhaseContext.record_attempt` fits."""

    def __call__(self, start: float, end: float, ok: bool, /, **detail: Any) -> object: ...


class AttemptRecorder(Protocol):
    """Where answered attempts' latencies go (a :class:`smd.TimingHistory`)."""

    def record_attempt(self, seconds: float) -> object: ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One attempt. ``answered``: the server spoke (success or a SQLSTATE), so
    ``latency`` is a real round-trip figure worth learning from."""

    ok: bool
    failure: Failure | None = None
    latency: float = 0.0
    answered: bool = False
    sqlstate: str | None = None
    server_message: str | None = None
    start: float = 0.0
    end: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "latency": round(self.latency, 6),
            "answered": self.answered,
            "sqlstate": self.sqlstate,
            "server_message": self.server_message,
            "failure": self.failure.to_dict() if self.failure else None,
        }


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter".

    The n-th wait is drawn uniformly from ``[d/2, d]`` where ``d = min(cap,
    initial * multiplier**n)``: half is guaranteed (so a fleet of clients
    never polls faster than ``2/cap`` per second each), half is random (so
    they desynchronise). The default cap of 0.5 s bounds how late we notice
    a database that just became ready: a 57P03 that clears after 3 s is seen
    within about 3.5 s, not at the next multiple of a fixed interval.
    """

    initial: float = 0.05
    multiplier: float = 2.0
    cap: float = 0.5

    def __post_init__(self) -> None:
        for name in ("initial", "multiplier", "cap"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"backoff {name} must be a positive finite number, got {value!r}")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (0-based)."""
        d = min(self.cap, self.initial * self.multiplier ** min(retry, 64))
        return d / 2 + rng.uniform(0.0, d / 2)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of waiting for a dependency to be ready.

    ``elapsed`` is the whole wait; ``time_to_ready`` (first attempt to first
    success) is set only on success. ``failure`` carries the final attempt
    count and elapsed time.
    """

    ok: bool
    target: str
    failure: Failure | None
    attempts: int
    elapsed: float
    time_to_ready: float | None
    last_probe: ProbeResult | None
    deadline: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "status": self.status,
            "target": self.target,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 6),
            "deadline": round(self.deadline, 6),
            "time_to_ready": None if self.time_to_ready is None else round(self.time_to_ready, 6),
            "latency": None if self.last_probe is None else round(self.last_probe.latency, 6),
            "failure": self.failure.to_dict() if self.failure else None,
        }

    @property
    def status(self) -> str:
        """``accepting``, ``rejecting`` (the server answered no), ``no response``
        (nothing answered in time) or ``unreachable``."""
        if self.ok:
            return "accepting"
        if self.failure is not None and self.failure.kind is FailureKind.TIMEOUT:
            return "no response"
        if self.last_probe is not None and self.last_probe.answered:
            return "rejecting"
        return "unreachable"

    def render_text(self) -> str:
        """One pg_isready-like line, then the reason when not ready.

        Unlike ``pg_isready``, "accepting connections" means a session was
        opened and ``SELECT 1`` answered: a wrong password or a missing
        database is a failure, named as such.
        """
        plural = "s" if self.attempts != 1 else ""
        tries = f"{self.attempts} attempt{plural} in {self.elapsed * 1000:.0f} ms"
        if self.ok:
            latency = self.last_probe.latency * 1000 if self.last_probe else 0.0
            return (
                f"{self.target} - accepting connections "
                f"(SELECT 1 answered in {latency:.1f} ms; {tries})"
            )
        assert self.failure is not None
        f = self.failure
        state = f" [{f.sqlstate}]" if f.sqlstate else ""
        verdict = {
            FailureKind.CONFIGURATION: "will not heal by waiting; fix the configuration",
            FailureKind.INFRASTRUCTURE: "may heal by waiting; try again later",
            FailureKind.TIMEOUT: "may heal by waiting; try again later",
        }.get(f.kind, "cause not recognised")
        return (
            f"{self.target} - {self.status}: {f.kind.value} failure{state} ({tries})\n"
            f"  {f.message}\n"
            f"  {verdict}"
        )


def _summarise(
    failure: Failure, attempts: int, elapsed: float, deadline: float, retried: bool
) -> Failure:
    message = failure.message
    if retried:
        plural = "s" if attempts != 1 else ""
        message = (
            f"still failing after {attempts} attempt{plural} over {elapsed:.3g}s "
            f"(deadline {deadline:.3g}s): {message}"
        )
    return replace(failure, message=message, attempts=attempts, elapsed=elapsed)


async def retry_until_ready(
    probe: Callable[[float], Awaitable[ProbeResult]],
    *,
    target: str,
    deadline_seconds: float,
    attempt_seconds: float | None = None,
    backoff: Backoff | None = None,
    min_attempt_seconds: float = 0.1,
    on_attempt: AttemptHook | None = None,
    history: AttemptRecorder | None = None,
    now: Callable[[], float] | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> CheckResult:
    """Call ``probe(attempt_timeout)`` until it succeeds or the deadline comes.

    Only ``infrastructure`` and ``timeout`` failures are retried; anything
    else ends the loop after that one attempt. No retry is started with less
    than ``min_attempt_seconds`` left (the first attempt always runs),
    and every attempt's timeout is cut to what is left, so the loop never
    overruns ``deadline_seconds``. Answered attempts' latencies go to
    ``history.record_attempt``; every attempt goes to ``on_attempt``.
    """
    if not math.isfinite(deadline_seconds) or deadline_seconds < 0:
        raise ValueError(f"deadline_seconds must be finite and >= 0, got {deadline_seconds!r}")
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    clock = now or anyio.current_time
    per_attempt = deadline_seconds if attempt_seconds is None else attempt_seconds
    if not per_attempt > 0:
        raise ValueError(f"attempt_seconds must be > 0, got {attempt_seconds!r}")
    started = clock()
    deadline = started + deadline_seconds
    attempts = 0
    last: ProbeResult | None = None
    # The failure that says most about the target: a final attempt that timed
    # out only because the deadline cut it short must not hide the 57P03 or
    # EAI_AGAIN every full attempt before it saw.
    telling: Failure | None = None
    while True:
        left = deadline - clock()
        if left <= 0 or (attempts and left < min_attempt_seconds):
            # A late wake-up (a busy machine) left too little for a useful try.
            break
        timeout = min(per_attempt, left)
        a_start = clock()
        result = await probe(timeout)
        a_end = clock()
        attempts += 1
        last = result
        if result.answered and history is not None:
            history.record_attempt(result.latency)
        if on_attempt is not None:
            detail: dict[str, Any] = {
                "timeout": round(timeout, 6),
                "latency": round(result.latency, 6),
                "answered": result.answered,
            }
            if result.failure is not None:
                detail["kind"] = result.failure.kind.value
                detail["sqlstate"] = result.failure.sqlstate
                detail["message"] = result.failure.message
            on_attempt(a_start, a_end, result.ok, **detail)
        if result.ok:
            elapsed = a_end - started
            return CheckResult(
                True, target, None, attempts, elapsed, elapsed, result, deadline_seconds
            )
        assert result.failure is not None
        cut_short = timeout < per_attempt
        if telling is None or not (result.failure.kind is FailureKind.TIMEOUT and cut_short):
            telling = result.failure
        if not result.failure.kind.may_heal:
            break
        left = deadline - clock()
        # Wait the backoff, but shorten the last wait so that one final
        # attempt of at least min_attempt_seconds still fits: a database that
        # becomes ready just before the deadline is still caught.
        # The decision to try again is taken here, before sleeping; the next
        # attempt then gets whatever is left (at least about min_attempt_seconds).
        wait = min(backoff.delay(attempts - 1, rng), left - min_attempt_seconds)
        if wait < 0:
            break
        await sleep(wait)
    elapsed = clock() - started
    if last is None or last.failure is None:
        failure = Failure(
            FailureKind.TIMEOUT,
            f"no time left to try {target} (deadline {deadline_seconds:.3g}s)",
            attempts=0,
            elapsed=elapsed,
        )
    else:
        chosen = telling if telling is not None else last.failure
        failure = _summarise(chosen, attempts, elapsed, deadline_seconds, attempts > 1)
    return CheckResult(False, target, failure, attempts, elapsed, None, last, deadline_seconds)
