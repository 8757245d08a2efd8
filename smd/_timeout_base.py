"""The timeout-policy plug point and the fixed policy.

A policy turns a target's history into a :class:`TimeoutDecision`: how many
seconds, where the number came from, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from smd._encode import encode
from smd._samples import TimingHistory
from smd._units import seconds as _seconds

if TYPE_CHECKING:
    from smd._settings import EnvTimeouts

__all__ = ["FixedTimeout", "TimeoutContext", "TimeoutDecision", "TimeoutPolicy", "TimeoutSource"]

TimeoutSource = Literal["default", "adaptive", "fixed"]
_NO_DETAILS: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TimeoutDecision:
    """A deadline and its explanation.

    ``seconds`` bounds the whole phase (first attempt to first success);
    ``attempt_seconds``, when set, bounds one attempt (``smd plan``,
    ``smd history`` and the run always show it set: see
    :func:`smd.timeouts.phase_timeout`). ``details`` holds the
    machine-readable explanation (samples, statistic, clamp) for reports.
    """

    seconds: float
    source: TimeoutSource
    explanation: str
    attempt_seconds: float | None = None
    details: Mapping[str, object] = field(default_factory=lambda: _NO_DETAILS, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.details, MappingProxyType):
            frozen = MappingProxyType(dict(self.details)) if self.details else _NO_DETAILS
            object.__setattr__(self, "details", frozen)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rounded and redacted)."""
        data: dict[str, object] = encode(self)
        return data


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
    """Computes a deadline from history.

    A policy that never reads the history may say so with a class attribute
    ``needs_history = False``: smd then does not wait for the history store
    before the phase starts.
    """

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        """The deadline to use now, with its explanation."""
        ...


class FixedTimeout:
    """Always the same number of seconds (what ``timeout=5`` means)."""

    needs_history = False

    def __init__(self, seconds: float) -> None:
        try:
            self.seconds = _seconds("timeout", seconds)
        except ValueError:
            raise ValueError(
                f"timeout must be a positive finite number of seconds, got {seconds!r}"
            ) from None

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        return TimeoutDecision(
            self.seconds, "fixed", f"fixed timeout of {self.seconds:g}s set on the phase"
        )

    def spec(self) -> dict[str, object]:
        """What ``smd history`` needs to rebuild this policy."""
        return {"type": "fixed", "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"FixedTimeout({self.seconds:g})"
