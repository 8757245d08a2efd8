"""The Pareto-type tail fit above a threshold: Hill's index, Weissman's quantile, dead starts.

The part of :mod:`smd._survival` that extrapolates beyond the sample (see
its module docstring, steps 2, 4 and 5): the censored Hill estimator over
the observations above a threshold, Weissman's quantile with its log-normal
error, and the EM for the dead share of the timeouts beyond every success.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

_EM_ITERATIONS = 200  # EM stops when the dead share moves by < 1e-9; 200 is a safety cap
_EM_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class _Tail:
    k: float  # effective tail successes
    u: float  # threshold
    gamma: float
    mass: float  # healthy mass above u
    point: float
    sd_log: float
    rows: int  # observations above u (inside the observed range)


class _Inside:
    """The observations inside the observed range, by decreasing value, with prefix sums."""

    def __init__(self, rows: list[tuple[float, bool, float]]) -> None:
        rows.sort(key=lambda r: -r[0])
        self.neg = [-v for v, _c, _w in rows]
        self.w = [0.0]
        self.wlog = [0.0]
        self.succ = [0.0]
        self.succ_sq = [0.0]
        for v, c, w in rows:
            self.w.append(self.w[-1] + w)
            self.wlog.append(self.wlog[-1] + (w * math.log(v) if v > 0 else 0.0))
            self.succ.append(self.succ[-1] + (0.0 if c else w))
            self.succ_sq.append(self.succ_sq[-1] + (0.0 if c else w * w))

    def above(self, u: float) -> int:
        return bisect_left(self.neg, -u)  # how many values are > u

    def fit(self, u: float, km_u: float, removed: float, target: float) -> _Tail | None:
        """Hill/Weissman above ``u``; ``removed``: Kaplan-Meier mass of dead starts."""
        j = self.above(u)
        succ_w = self.succ[j]
        if succ_w <= 0:
            return None
        gamma = max(0.0, (self.wlog[j] - math.log(u) * self.w[j]) / succ_w)
        k = succ_w * succ_w / self.succ_sq[j]
        mass = (km_u - removed) / (1.0 - removed) if removed < 1.0 else 0.0
        if mass <= target:
            return _Tail(k, u, gamma, mass, u, 0.0, j)
        ratio = math.log(mass / target)
        point = _exp_times(u, gamma * ratio)
        return _Tail(k, u, gamma, mass, point, gamma * math.sqrt((1 + ratio**2) / k), j)


def _exp_times(x: float, exponent: float) -> float:
    """``x * exp(exponent)``, infinite instead of overflowing (the caller clamps)."""
    return x * math.exp(exponent) if exponent < 700 else math.inf


def _dead_split(
    values: Sequence[float],
    weights: Sequence[float],
    tail: _Tail | None,
    inside: _Inside,
    largest: float,
    unresolved: float,
) -> tuple[float, float]:
    """EM for the dead share of the timeouts beyond every success.

    Returns the Kaplan-Meier mass put down to dead starts and their expected
    number. Without a tail (or with an index of 0) a healthy start cannot be
    beyond every success: all of them are dead.
    """
    gamma = tail.gamma if tail is not None else 0.0
    u = tail.u if tail is not None else largest
    if gamma <= 0 or u <= 0:
        return unresolved, float(len(values))
    beyond_w = math.fsum(weights)
    tail_w = inside.w[inside.above(u)] + beyond_w
    alive_at = [math.exp(-math.log(v / u) / gamma) if v > u else 1.0 for v in values]
    pi = 0.5 * beyond_w / tail_w
    p = [0.5] * len(values)
    for _ in range(_EM_ITERATIONS):
        p = [pi / (pi + (1.0 - pi) * a) if pi > 0 else 0.0 for a in alive_at]
        new_pi = math.fsum(w * pj for w, pj in zip(weights, p, strict=True)) / tail_w
        done = abs(new_pi - pi) <= _EM_TOLERANCE
        pi = new_pi
        if done:
            break
    share = math.fsum(w * pj for w, pj in zip(weights, p, strict=True)) / beyond_w
    return unresolved * share, math.fsum(p)
