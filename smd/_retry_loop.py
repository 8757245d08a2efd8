"""The retry loop: probe until ready, the failure cannot heal, or the deadline comes.

Public as :func:`smd.retry.retry_until_ready` and :func:`smd.retry.wait_ready`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from smd._backoff import Backoff
from smd._failures import Failure, FailureKind
from smd._probe import AttemptHook, AttemptRecorder, Check, CheckResult, ProbeResult
from smd.clock import Clock, SystemClock

__all__ = ["retry_until_ready", "wait_ready"]


def _summarise(
    failure: Failure, attempts: int, elapsed: float, deadline: float, ran_out: bool
) -> Failure:
    message = failure.message
    if attempts > 1:
        message = (
            f"still failing after {attempts} attempts over {elapsed:.3g}s "
            f"(deadline {deadline:.3g}s): {message}"
        )
    return replace(
        failure,
        message=message,
        attempts=attempts,
        elapsed=elapsed,
        deadline_reached=ran_out and failure.kind.may_heal,
    )


def _may_heal(failure: Failure) -> bool:
    return failure.kind.may_heal


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
    clock: Clock | None = None,
    rng: random.Random | None = None,
    retry: Callable[[Failure], bool] = _may_heal,
) -> CheckResult:
    """Call ``probe(attempt_timeout)`` until it succeeds or the deadline comes.

    Failures for which ``retry(failure)`` holds (default: those that may heal,
    ``infrastructure`` and ``timeout``) are retried; anything else ends the
    loop after that one attempt. The wait after a failure is ``backoff``'s
    (:class:`Backoff`): a cheap one (no answer, back in under
    ``backoff.cheap`` -- refused, reset -- after another such) waits the
    ladder's first step and restarts it; any other (answered, or slow)
    waits the current step and climbs; no wait is shorter than
    ``backoff.floor``, which bounds the attempt rate. The cost is the
    attempt's duration on ``clock``, measured here, so every probe gets the
    same rule.

    An attempt gets ``attempt_seconds``, or all the time left when that is
    less than two attempts (a retry after it would get less than a full
    one): a handshake in progress is not abandoned for a shorter one.

    Guarantees, whatever the waits: the loop never overruns
    ``deadline_seconds`` (every attempt's timeout is cut to what is left;
    ``math.inf``: until success or cancellation); no retry starts with less
    than ``min_attempt_seconds`` left (the first attempt always runs); the
    last wait is shortened so that one final attempt of at least
    ``min_attempt_seconds`` still fits before the deadline; and the failure
    reported is the telling one (a last attempt that timed out only because
    the deadline cut it short does not hide what every full attempt saw).
    Answered attempts' latencies go to ``history.record_attempt``; every
    attempt goes to ``on_attempt(start, end, ok, **detail)``. A wait that the
    deadline ended is marked ``deadline_reached`` on the failure.
    """
    if math.isnan(deadline_seconds) or deadline_seconds < 0:
        raise ValueError(f"deadline_seconds must be >= 0, got {deadline_seconds!r}")
    per_attempt = deadline_seconds if attempt_seconds is None else attempt_seconds
    if not per_attempt > 0:
        raise ValueError(f"attempt_seconds must be > 0, got {attempt_seconds!r}")
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    clock = clock or SystemClock()
    started = clock.monotonic()
    deadline = started + deadline_seconds
    attempts = 0
    last: ProbeResult | None = None
    ran_out = False
    # The failure that says most about the target: a final attempt that timed
    # out only because the deadline cut it short must not hide the 57P03 or
    # EAI_AGAIN every full attempt before it saw.
    telling: Failure | None = None
    climbed = 0  # the ladder's step: failures since the last cheap one
    quick_before = False  # the failure before got no answer and came back at once
    while True:
        left = deadline - clock.monotonic()
        if left <= 0 or (attempts and left < min_attempt_seconds):
            ran_out = True  # a late wake-up (a busy machine) left too little for a useful try
            break
        # A retry after this attempt would get less than a full attempt: give
        # this one all that is left instead. An attempt in progress (a
        # handshake a busy server is still working through) is worth more
        # than a fresh one with less time, which would start it all over.
        timeout = left if left < 2 * per_attempt else per_attempt
        a_start = clock.monotonic()
        result = await probe(timeout)
        a_end = clock.monotonic()
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
                detail["code"] = result.failure.code
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
        if not retry(result.failure):
            break
        # What the failure cost decides the wait: refusals that come back at
        # once wait the shortest step and restart the ladder (see Backoff).
        quick = backoff.is_quick(a_end - a_start, result.answered)
        step, climbed = backoff.next_step(climbed, quick=quick, after_quick=quick_before)
        quick_before = quick
        pause = backoff.wait(step, rng)
        left = deadline - clock.monotonic()
        # Shorten the last wait so that one final attempt of at least
        # min_attempt_seconds still fits: a dependency that becomes ready
        # just before the deadline is still caught.
        wait = min(pause, left - min_attempt_seconds)
        if wait < 0:
            ran_out = True
            break
        await clock.sleep(wait)
    elapsed = clock.monotonic() - started
    if last is None or last.failure is None:
        failure = Failure(
            FailureKind.TIMEOUT,
            f"no time left to try {target} (deadline {deadline_seconds:.3g}s)",
            attempts=0,
            elapsed=elapsed,
            deadline_reached=True,
        )
    else:
        chosen = telling if telling is not None else last.failure
        failure = _summarise(chosen, attempts, elapsed, deadline_seconds, ran_out)
    return CheckResult(False, target, failure, attempts, elapsed, None, last, deadline_seconds)


async def wait_ready(
    check: Check,
    *,
    deadline_seconds: float,
    attempt_seconds: float | None = None,
    **options: Any,
) -> CheckResult:
    """Probe ``check`` until it is ready or ``deadline_seconds`` have passed.

    ``options`` are those of :func:`retry_until_ready` (``backoff``,
    ``on_attempt``, ``history``, ``clock``, ``rng``, ``min_attempt_seconds``).
    """
    return await retry_until_ready(
        check.probe,
        target=check.target,
        deadline_seconds=deadline_seconds,
        attempt_seconds=attempt_seconds,
        **options,
    )
