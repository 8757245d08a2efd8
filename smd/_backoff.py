"""The one waiting rule between attempts: :class:`Backoff` and its ladder.

Public as :class:`smd.retry.Backoff`; :func:`smd.retry.retry_until_ready`
asks it how long to wait after each failed attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from smd._units import seconds as _seconds

__all__ = ["Backoff", "Jitter"]

Jitter = Literal["equal", "full", "none"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after a failed attempt: the one waiting rule.

    Waits climb a capped exponential ladder: step ``k`` (0-based) has the
    ceiling ``d = min(cap, initial * multiplier**k)``; ``equal`` jitter waits
    uniformly in ``[d/2, d]`` (half guaranteed, so a fleet never polls faster
    than ``2/cap`` per second each; half random, so it desynchronises),
    ``full`` in ``[0, d]`` (spreads a fleet best), ``none`` waits ``d``; and
    no wait is ever shorter than ``floor``.

    What a failure cost decides the step, so that a dependency that becomes
    ready is noticed at once without hammering one that is busy:

    - A **cheap** failure -- no answer, back in less than ``cheap`` seconds
      (refused, reset, a socket that is not there yet), right after another
      such failure -- is a dependency that is not listening: each attempt
      costs it a refusal from its kernel and nothing more. It waits step 0
      (10 to 20 ms with the defaults) and restarts the ladder: the step
      counts the failures since the last cheap one.
    - Any other failure is **expensive**: the dependency answered (a whole
      handshake that ended in "starting up" or "too many connections"), or
      the attempt took long (a timeout, a slow network). It waits the
      current step and climbs one: a dependency that keeps answering "not
      yet" is asked ever less often, up to once per ``cap``.

    A quick refusal needs a second one to restart the ladder: one alone may
    fall between two answers of a server that is restarting, and must not
    undo the spacing its answers earned (the first refusal of a wait is at
    step 0 anyway). The ladder restarts because the dependency changed (it
    answered before and now refuses), or the slow failure before was a
    hiccup of a busy machine, which must not leave the refusals after it
    waiting half a second.

    **The bound.** No wait is shorter than ``floor``: one waiter makes at
    most ``1/floor`` attempts per second (100 with the defaults) whatever
    the failures -- and at that rate only while each costs the dependency a
    refusal (under ``cheap`` seconds, no handshake). Failures the dependency
    answered are spaced as the ladder says: ``initial/2`` apart at first,
    doubling to ``cap/2`` (equal jitter). The one exception is the deadline:
    the last wait is shortened so that a final attempt still fits (see
    :func:`retry_until_ready`).

    With the defaults a database that refused until it became ready is
    noticed 10 to 20 ms plus one handshake after it opened
    (``benchmarks/notice_latency.py``), one that kept answering "starting
    up" within the ladder's step (at most ``cap``, 0.5 s). Background
    recovery uses ``Backoff.recovery()`` (0.5 s doubling to 30 s, full
    jitter, no failure cheap), since nothing waits on it.
    """

    initial: float = 0.02
    multiplier: float = 2.0
    cap: float = 0.5
    jitter: Jitter = "equal"
    #: Below this an unanswered failure is cheap. A refusal takes 0.3-0.6 ms
    #: over loopback on an idle machine, 1-1.5 ms on one loaded five times
    #: over its CPUs (benchmarks/notice_latency.py), about one round trip on
    #: a LAN; a timeout is at least ``min_attempt_seconds``. An answered
    #: failure is expensive whatever it took. 0: no failure is cheap.
    cheap: float = 0.005
    #: The shortest wait, whatever the jitter: the attempt-rate bound
    #: (``1/floor`` per second). Equal jitter of step 0 never goes below it.
    floor: float = 0.01

    def __post_init__(self) -> None:
        # floor > 0 always: it is the rate bound. cheap may be 0 (no fast path).
        for name in ("initial", "multiplier", "cap", "floor"):
            _seconds(f"backoff {name}", getattr(self, name))
        _seconds("backoff cheap", self.cheap, zero=True)
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier!r}")
        if self.cap < self.initial:
            raise ValueError(f"backoff cap ({self.cap:g}s) is below initial ({self.initial:g}s)")
        if self.floor > self.cap:
            raise ValueError(f"backoff floor ({self.floor:g}s) is above cap ({self.cap:g}s)")
        if self.jitter not in ("equal", "full", "none"):
            raise ValueError(f"unknown jitter {self.jitter!r}; accepted: equal, full, none")

    @classmethod
    def recovery(cls) -> Backoff:
        """The backoff of background recovery probes: 0.5 s doubling to 30 s, full jitter.

        No failure is cheap there: nothing waits on a background probe, so a
        refused one climbs the ladder like any other.
        """
        return cls(initial=0.5, multiplier=2.0, cap=30.0, jitter="full", cheap=0.0)

    def ceiling(self, retry: int) -> float:
        """The un-jittered wait of ladder step ``retry`` (0-based)."""
        return min(self.cap, self.initial * self.multiplier ** min(retry, 64))

    def delay(self, retry: int, rng: random.Random) -> float:
        """The jittered wait of ladder step ``retry`` (0-based), without the floor."""
        d = self.ceiling(retry)
        if self.jitter == "equal":
            return d / 2 + rng.uniform(0.0, d / 2)
        if self.jitter == "full":
            return rng.uniform(0.0, d)
        return d

    def is_quick(self, seconds: float, answered: bool) -> bool:
        """Whether a failed attempt that took ``seconds`` was a quick refusal
        (no answer, under ``cheap``): it cost the dependency nothing."""
        return not answered and seconds < self.cheap

    def wait(self, step: int, rng: random.Random) -> float:
        """The wait of ladder step ``step``: :meth:`delay`, never below ``floor``."""
        return max(self.floor, self.delay(step, rng))

    def next_step(self, step: int, *, quick: bool, after_quick: bool) -> tuple[int, int]:
        """``(step to wait now, step after it)`` for a failure at ladder step ``step``.

        ``quick``: :meth:`is_quick` of this failure; ``after_quick``: of the
        failure before it. Two in a row are cheap: wait step 0 and restart
        the ladder; anything else waits ``step`` and climbs.
        """
        if quick and after_quick:
            return 0, 0
        return step, step + 1
