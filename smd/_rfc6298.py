"""RFC 6298's retransmission timer as a timeout policy: the classic baseline.

TCP learns how long to wait for an acknowledgement from the round trips it
measures (SRTT + 4 RTTVAR, RFC 6298 section 2) and doubles the wait after a
timeout (section 5.5). Applied to time to ready, it is what a careful
engineer would build without smd; ``benchmarks/timeout_quality.py`` and
``smd history replay`` compare smd's adaptive timeout against it.

The policy is a pure function of the history: :meth:`Rfc6298Timeout.compute`
folds the ``ready`` series, oldest first (an uncensored sample updates the
estimate, a censored one backs off), so it plugs in wherever a
:class:`~smd.timeouts.TimeoutPolicy` does and replays give the same numbers
as the timer run live over the same starts.
"""

from __future__ import annotations

from typing import Final

from smd._samples import TimingHistory
from smd._timeout_base import TimeoutContext, TimeoutDecision
from smd._units import seconds as _seconds

__all__ = ["Rfc6298Timeout", "Rfc6298Timer"]

#: (2.1): "Until a round-trip time (RTT) measurement has been made ... the
#: sender SHOULD set RTO <- 1 second".
INITIAL: Final = 1.0
#: (2.4): "Whenever RTO is computed, if it is less than 1 second, then the
#: RTO SHOULD be rounded up to 1 second".
MINIMUM: Final = 1.0
#: (2.5): "A maximum value MAY be placed on RTO provided it is at least 60
#: seconds"; 60 s, the smallest the RFC allows, as the benchmark has always used.
MAXIMUM: Final = 60.0
#: (2.3): alpha = 1/8, beta = 1/4, and K = 4 in SRTT + K * RTTVAR.
_ALPHA: Final = 0.125
_BETA: Final = 0.25
_K: Final = 4.0


class Rfc6298Timer:
    """The timer itself, one start at a time: what a live baseline runs.

    :meth:`Rfc6298Timeout.compute` folds a history through one of these, so
    a replay and a live run over the same starts give the same deadlines.
    """

    __slots__ = ("backoffs", "maximum", "measured", "minimum", "rto", "rttvar", "srtt")

    def __init__(self, *, initial: float, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = min(max(initial, minimum), maximum)  # (2.1)
        self.measured = self.backoffs = 0

    def success(self, seconds: float) -> None:
        """A measured time to ready: (2.2) the first, (2.3) the next ones, then (2.4)."""
        self.measured += 1
        self.backoffs = 0
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
        else:  # RTTVAR first, with the SRTT before this measurement
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - seconds)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * seconds
        self.rto = min(max(self.srtt + _K * self.rttvar, self.minimum), self.maximum)

    def timeout(self) -> None:
        """A start that timed out: (5.5) back off the timer."""
        self.rto = min(self.rto * 2, self.maximum)
        self.backoffs += 1


class Rfc6298Timeout:
    """RFC 6298's timer over time to ready: SRTT + 4 RTTVAR, clamped, doubled on a timeout.

    ``initial``, ``minimum`` and ``maximum`` are the RFC's 1 s, 1 s and 60 s
    (see the module constants). The context (the environment's bounds) is
    ignored on purpose: this is the baseline as TCP runs it.
    """

    def __init__(
        self, *, initial: float = INITIAL, minimum: float = MINIMUM, maximum: float = MAXIMUM
    ) -> None:
        self.initial = _seconds("initial", initial)
        self.minimum = _seconds("minimum", minimum)
        self.maximum = _seconds("maximum", maximum)
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({minimum:g}s) is above maximum ({maximum:g}s)")

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        """The timer's value after the ``ready`` series, oldest first."""
        timer = self.timer()
        for sample in history.ready:
            if sample.censored or sample.seconds is None:
                timer.timeout()
            else:
                timer.success(sample.seconds)
        srtt, rttvar, rto = timer.srtt, timer.rttvar, timer.rto
        measured, backoffs = timer.measured, timer.backoffs
        if srtt is None and backoffs == 0:
            return TimeoutDecision(rto, "default", f"RFC 6298 initial RTO {rto:g}s: no sample yet")
        base = "no measurement" if srtt is None else f"SRTT {srtt:.3g}s + 4 x RTTVAR {rttvar:.3g}s"
        doubled = f", doubled {backoffs} time{'s' if backoffs != 1 else ''}" if backoffs else ""
        return TimeoutDecision(
            rto,
            "adaptive",
            f"RFC 6298 RTO {rto:.3g}s from {measured} measured starts: {base}{doubled} "
            f"(min {self.minimum:g}s, max {self.maximum:g}s)",
        )

    def timer(self) -> Rfc6298Timer:
        """A fresh timer with this policy's parameters (a live baseline)."""
        return Rfc6298Timer(initial=self.initial, minimum=self.minimum, maximum=self.maximum)

    def spec(self) -> dict[str, object]:
        """The constructor arguments."""
        return {
            "type": "rfc6298",
            "initial": self.initial,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }

    def __repr__(self) -> str:
        return f"Rfc6298Timeout(initial={self.initial:g}, minimum={self.minimum:g}, maximum={self.maximum:g})"
