"""Statistics shared by the bypass matrix, the adaptive timeout and ``smd history``.

Decay weights, the Wilson lower bound of a (weighted) success rate, the
empirical quantile, and the Kish effective sample size: each defined once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smd._samples import Sample, TimingHistory

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_HALF_LIFE_HOURS",
    "SuccessRate",
    "kish_n",
    "quantile",
    "recency_weights",
    "success_rate",
    "wilson_lower_bound",
]

DEFAULT_CONFIDENCE = 0.90
"""One-sided confidence of the success-rate lower bound (z = 1.2816).

At 0.90 a perfect record clears a 0.5 threshold from 1.64 effective starts
on. Evidence decays with age, so this also bounds the restart cadence that
can qualify: with a 24 h half-life, a target whose starts all succeed
qualifies when it starts at least every ~16 h; the default 72 h half-life
(:data:`DEFAULT_HALF_LIFE_HOURS`) gives daily restarts ~3.9 effective starts
and a lower bound of 0.70; a weekly restart does not qualify.
"""

DEFAULT_HALF_LIFE_HOURS = 72.0
"""Half-life of the success-rate evidence (``SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS``).

72 h keeps a service that restarts once a day at about 3.9 effective starts
(a perfect record's lower bound is then 0.70, above the 0.5 threshold);
24 h would drop it below the threshold for anything restarted less often
than every ~16 h.
"""


def quantile(values: Sequence[float], q: float) -> float | None:
    """The empirical ``q`` quantile by linear interpolation between order statistics.

    (Hyndman & Fan type 7, numpy's default.) ``None`` for no values; with
    one value every quantile is that value.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def recency_weights(
    samples: Sequence[Sample], half_life: float, half_life_seconds: float | None, now: float
) -> list[float]:
    """Weights halving every ``half_life`` samples back (and every ``half_life_seconds`` of age)."""
    n = len(samples)
    out = []
    for i, s in enumerate(samples):
        w = 0.5 ** ((n - 1 - i) / half_life)
        if half_life_seconds is not None:
            w *= 0.5 ** (max(0.0, now - s.at) / half_life_seconds)
        out.append(w)
    return out


def kish_n(weights: Sequence[float]) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (0 for no weights)."""
    total = sum(weights)
    squares = sum(w * w for w in weights)
    return total * total / squares if squares > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """A target's recent success rate, decayed by age.

    ``successes``/``total`` are raw counts of past starts; ``effective_n`` is
    the sum of their decay weights; ``estimate`` the decay-weighted share of
    successes; ``lower_bound`` the Wilson lower bound on the weighted counts.
    ``estimate`` and ``lower_bound`` are ``None`` when there is no start.
    """

    successes: int
    total: int
    effective_n: float
    estimate: float | None
    lower_bound: float | None
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS
    confidence: float = DEFAULT_CONFIDENCE

    def to_dict(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "successes": self.successes,
            "total": self.total,
            "effective_n": round(self.effective_n, 4),
            "estimate": r(self.estimate),
            "lower_bound": r(self.lower_bound),
            "half_life_hours": self.half_life_hours,
            "confidence": self.confidence,
        }


def wilson_lower_bound(successes: float, n: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Wilson score lower bound for ``successes`` out of ``n`` (weights allowed).

    ``(s + z²/2 - z·sqrt(s·f/n + z²/4)) / (n + z²)`` with ``f = n - s`` and
    ``z`` the ``confidence`` quantile of the standard normal; this form stays
    finite as ``n`` approaches 0 (the bound then approaches 0). ``n = 0`` gives 0.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n <= 0.0:
        return 0.0
    s = min(max(successes, 0.0), n)
    f = n - s
    from statistics import NormalDist  # only the bound needs it, not every importer

    z = NormalDist().inv_cdf(confidence)
    z2 = z * z
    lower = (s + z2 / 2.0 - z * math.sqrt(s * f / n + z2 / 4.0)) / (n + z2)
    return min(max(lower, 0.0), 1.0)


def success_rate(
    history: TimingHistory | None,
    now: float,
    half_life_hours: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> SuccessRate:
    """The decayed success rate of a target's past starts.

    Each start in ``history.outcomes()`` (an uncensored ``ready`` sample is a
    success; a censored one or a ``failure`` sample is a failed start) gets
    the weight ``w = 0.5 ** (age / half_life)``, ``age = max(0, now - at)``
    (a sample from the future, e.g. clock skew between writers, counts as
    new). Then ``effective_n = Σw``, ``estimate = Σw·success / Σw`` and
    ``lower_bound = wilson_lower_bound(Σw·success, Σw, confidence)``.

    Decay is why a single old failure does not dominate recent successes, and
    why evidence fades: a target unseen for many half-lives has almost no
    effective starts left, and its lower bound falls towards 0.
    """
    if not (math.isfinite(half_life_hours) and half_life_hours > 0):
        raise ValueError(f"half_life_hours must be positive, got {half_life_hours!r}")
    outcomes = history.outcomes() if history is not None else []
    if not outcomes:
        return SuccessRate(0, 0, 0.0, None, None, half_life_hours, confidence)
    half_life = half_life_hours * 3600.0
    weight_ok = weight_all = 0.0
    ok_count = 0
    for at, ok in outcomes:
        w = 0.5 ** (max(0.0, now - at) / half_life)
        weight_all += w
        if ok:
            weight_ok += w
            ok_count += 1
    estimate = weight_ok / weight_all if weight_all > 0.0 else None
    lower = wilson_lower_bound(weight_ok, weight_all, confidence)
    return SuccessRate(
        ok_count, len(outcomes), weight_all, estimate, lower, half_life_hours, confidence
    )
