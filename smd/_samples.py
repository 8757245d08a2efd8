"""In-memory history of one target: the samples every learned decision uses.

A *target* is one dependency in one environment (for PostgreSQL: host, port,
database name and environment). Its history holds four series:

- ``attempt``: latency of single attempts that got an answer;
- ``ready``: time from the first attempt to the first success; a start that
  timed out is *censored* ("at least ``seconds``"), never dropped;
- ``failure``: failures by kind (they teach nothing about latency but count
  against the success rate);
- ``bypass``: a startup that continued degraded because of this target.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from smd._failures import FailureKind
from smd._units import seconds as _seconds
from smd.clock import Clock, SystemClock

__all__ = ["DEFAULT_BOUND", "Sample", "Series", "TimingHistory"]

DEFAULT_BOUND = 256


class Series(enum.StrEnum):
    """The kinds of sample kept per target."""

    ATTEMPT = "attempt"
    READY = "ready"
    FAILURE = "failure"
    BYPASS = "bypass"


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation. ``at`` is wall-clock seconds since the epoch."""

    series: Series
    at: float
    seconds: float | None = None
    censored: bool = False
    kind: FailureKind | None = None

    def to_dict(self) -> dict[str, object]:
        from smd._encode import encode

        data: dict[str, object] = encode(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Sample:
        seconds = data.get("seconds")
        kind = data.get("kind")
        at = data["at"]
        if not isinstance(at, int | float):
            raise ValueError("sample 'at' must be a number")
        return cls(
            series=Series(str(data["series"])),
            at=float(at),
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            censored=bool(data.get("censored", False)),
            kind=FailureKind(str(kind)) if kind else None,
        )


def _check_seconds(seconds: float) -> float:
    return _seconds("a sample", seconds, zero=True)


class TimingHistory:
    """The samples of one target, bounded per series, oldest first.

    Works entirely in memory, so a trace can be replayed through a timeout
    policy without any store::

        h = TimingHistory()
        h.record_success(0.42)      # became ready after 0.42 s
        h.record_timeout(5.0)       # gave up after 5 s: "at least 5 s"
        h.record_failure("configuration")

    Samples recorded since construction are kept in :attr:`pending` so a
    store can persist exactly what is new.
    """

    def __init__(
        self,
        samples: Iterable[Sample] = (),
        *,
        bound: int = DEFAULT_BOUND,
        clock: Clock | None = None,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.bound = bound
        self.clock: Clock = clock or SystemClock()
        self._series: dict[Series, list[Sample]] = {s: [] for s in Series}
        if samples:  # a run's fresh histories start empty: skip the sort
            for sample in sorted(samples, key=lambda s: s.at):
                self._add(sample)
        self.pending: list[Sample] = []

    def _add(self, sample: Sample) -> None:
        series = self._series[sample.series]
        series.append(sample)
        if len(series) > self.bound:
            del series[: len(series) - self.bound]

    def add(self, sample: Sample) -> Sample:
        """Add a sample (kept in :attr:`pending` until a store takes it)."""
        self._add(sample)
        self.pending.append(sample)
        return sample

    def _now(self, at: float | None) -> float:
        return self.clock.wall() if at is None else at

    def record_success(self, seconds: float, *, at: float | None = None) -> Sample:
        """The target became ready ``seconds`` after the first attempt."""
        return self.add(Sample(Series.READY, self._now(at), _check_seconds(seconds)))

    def record_timeout(self, seconds: float, *, at: float | None = None) -> Sample:
        """Gave up after ``seconds``: a censored sample, "at least this long"."""
        return self.add(Sample(Series.READY, self._now(at), _check_seconds(seconds), censored=True))

    def record_failure(self, kind: FailureKind | str, *, at: float | None = None) -> Sample:
        """A start failed for a reason other than running out of time."""
        k = kind if isinstance(kind, FailureKind) else FailureKind.parse(kind)
        return self.add(Sample(Series.FAILURE, self._now(at), kind=k))

    def record_attempt(self, seconds: float, *, at: float | None = None) -> Sample:
        """One attempt got an answer after ``seconds``."""
        return self.add(Sample(Series.ATTEMPT, self._now(at), _check_seconds(seconds)))

    def record_bypass(self, *, at: float | None = None) -> Sample:
        """Startup continued degraded because of this target."""
        return self.add(Sample(Series.BYPASS, self._now(at)))

    def series(self, series: Series) -> tuple[Sample, ...]:
        """The samples of one series, oldest first."""
        return tuple(self._series[series])

    @property
    def ready(self) -> tuple[Sample, ...]:
        return self.series(Series.READY)

    @property
    def attempts(self) -> tuple[Sample, ...]:
        return self.series(Series.ATTEMPT)

    @property
    def failures(self) -> tuple[Sample, ...]:
        return self.series(Series.FAILURE)

    @property
    def bypasses(self) -> tuple[Sample, ...]:
        return self.series(Series.BYPASS)

    def all_samples(self) -> list[Sample]:
        """Every sample, oldest first."""
        out = [s for series in self._series.values() for s in series]
        out.sort(key=lambda s: s.at)
        return out

    def outcomes(self) -> list[tuple[float, bool]]:
        """``(at, succeeded)`` for every start, oldest first.

        A start succeeded when it has an uncensored ``ready`` sample; a
        censored ``ready`` sample or a ``failure`` sample is a failed start.
        """
        out = [(s.at, not s.censored) for s in self._series[Series.READY]]
        out += [(s.at, False) for s in self._series[Series.FAILURE]]
        out.sort(key=lambda o: o[0])
        return out

    def consecutive_bypasses(self) -> int:
        """Degraded startups for this target since its last success."""
        last_ok = max(
            (s.at for s in self._series[Series.READY] if not s.censored), default=-math.inf
        )
        return sum(1 for s in self._series[Series.BYPASS] if s.at > last_ok)

    def __len__(self) -> int:
        return sum(len(s) for s in self._series.values())
