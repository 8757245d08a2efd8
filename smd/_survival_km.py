"""Weighted Kaplan-Meier survival of censored time-to-ready, and the Wilson bound on it.

The part of :mod:`smd._survival` that reads the observed range: the survival
curve of all starts (a timeout leaves the risk set) and the upper Wilson
bound used when the target rate is not in the tail.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["kaplan_meier"]


def kaplan_meier(
    values: Sequence[float], censored: Sequence[bool], weights: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Weighted Kaplan-Meier: the distinct success times and ``S(t)`` just after each.

    Ties: a success at ``t`` comes before a timeout at ``t`` (the timeout is
    "at least ``t``"). Weights need not sum to 1.
    """
    order = sorted(range(len(values)), key=lambda i: (values[i], censored[i]))
    at_risk = math.fsum(weights)
    surv = 1.0
    times: list[float] = []
    out: list[float] = []
    k = 0
    n = len(order)
    while k < n:
        t = values[order[k]]
        d = 0.0
        gone = 0.0
        while k < n and values[order[k]] == t:
            w = weights[order[k]]
            if not censored[order[k]]:
                d += w
            gone += w
            k += 1
        if d > 0 and at_risk > 0:
            surv *= max(0.0, 1.0 - d / at_risk)
            times.append(t)
            out.append(surv)
        at_risk -= gone
    return times, out


def _survival_at(times: Sequence[float], surv: Sequence[float], t: float) -> float:
    """``S(t)``: the Kaplan-Meier survival just after ``t``."""
    i = bisect_right(times, t)
    return surv[i - 1] if i else 1.0


def _wilson_upper(rate: float, n: float, z: float) -> float:
    """Upper Wilson score bound of a rate observed on ``n`` (effective) samples."""
    if n <= 0:
        return 1.0
    rate = min(max(rate, 0.0), 1.0)
    z2 = z * z
    centre = rate + z2 / (2 * n)
    spread = z * math.sqrt(max(0.0, rate * (1 - rate) / n + z2 / (4 * n * n)))
    return min(1.0, (centre + spread) / (1 + z2 / n))
