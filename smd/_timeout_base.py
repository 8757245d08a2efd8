"""The timeout-policy plug point and the fixed policy.

A policy turns a target's history into a :class:`TimeoutDecision`: how many
seconds, where the number came from, and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from smd._samples import TimingHistory
from smd._settings import EnvTimeouts

__all__ = ["FixedTimeout", "TimeoutContext", "TimeoutDecision", "TimeoutPolicy", "TimeoutSource"]

TimeoutSource = Literal["default", "adaptive", "fixed"]


@dataclass(frozen=True, slots=True)
class TimeoutDecision:
    """A deadline and its explanation.

    ``seconds`` bounds the whole phase (first attempt to first success);
    ``attempt_seconds``, when set, bounds one attempt. ``details`` holds the
    machine-readable explanation (samples, statistic, clamp) for reports.
    """

    seconds: float
    source: TimeoutSource
    explanation: str
    attempt_seconds: float | None = None
    details: dict[str, object] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 6),
            "source": self.source,
            "explanation": self.explanation,
            "attempt_seconds": None
            if self.attempt_seconds is None
            else round(self.attempt_seconds, 6),
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class TimeoutContext:
    """What the settings say about deadlines: the environment's bounds, the
    infrastructure profile, and how much history is needed before learning."""

    environment: str
    bounds: EnvTimeouts
    profile: str = "none"
    min_samples: int | None = None


@runtime_checkable
class TimeoutPolicy(Protocol):
    """Computes a deadline from history."""

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        """The deadline to use now, with its explanation."""
        ...


class FixedTimeout:
    """Always the same number of seconds (what ``timeout=5`` means)."""

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ValueError(
                f"timeout must be a positive finite number of seconds, got {seconds!r}"
            )
        self.seconds = float(seconds)

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        return TimeoutDecision(
            self.seconds, "fixed", f"fixed timeout of {self.seconds:g}s set on the phase"
        )

    def __repr__(self) -> str:
        return f"FixedTimeout({self.seconds:g})"
