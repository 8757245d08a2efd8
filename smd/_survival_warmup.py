"""The warm-up bound: a log-normal predictive quantile from a handful of samples.

Used by :class:`smd.timeouts.AdaptiveTimeout` before it has ``min_samples``
samples (see :mod:`smd._survival`): the Bayesian predictive bound of a
log-normal with a weak prior on its spread, and the Student-t quantile it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

__all__ = ["lognormal_prediction_bound", "student_t_quantile"]


def lognormal_prediction_bound(
    values: Sequence[float], level: float, *, prior_sigma: float, prior_dof: float
) -> float:
    """The Bayesian predictive ``level`` quantile of the next value, log-normal model.

    ``ln x`` is normal with unknown mean (flat prior) and unknown variance
    (scaled inverse chi-square prior: ``prior_dof`` pseudo-observations of
    spread ``prior_sigma``). The next value's log is then Student-t with
    ``prior_dof + n - 1`` degrees of freedom, centre the mean log and scale
    ``s * sqrt(1 + 1/n)``, ``s^2 = (prior_dof * prior_sigma^2 + (n-1) * var) /
    (prior_dof + n - 1)``. So one sample gives a factor of ``exp(63.7 *
    1.41 * prior_sigma)`` at 0.995 (the default wins), and the factor narrows
    as the samples agree. Values <= 0 count as 1 microsecond.
    """
    n = len(values)
    if n == 0:
        return math.inf
    logs = [math.log(max(v, 1e-6)) for v in values]
    mean = fmean(logs)
    ss = sum((x - mean) ** 2 for x in logs)
    dof = prior_dof + n - 1
    scale = math.sqrt((prior_dof * prior_sigma**2 + ss) / dof) * math.sqrt(1.0 + 1.0 / n)
    t = student_t_quantile(level, dof)
    exponent = mean + t * scale
    return math.exp(exponent) if exponent < 700 else math.inf


def student_t_quantile(p: float, dof: float) -> float:
    """The ``p`` quantile of Student's t with ``dof`` (> 0, real) degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if dof <= 0:
        raise ValueError(f"dof must be > 0, got {dof!r}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, dof)
    if p == 0.5:
        return 0.0
    # Bisection on the CDF in x = dof / (dof + t^2) (an incomplete beta).
    tail = 1.0 - p  # P(T > t) = 0.5 * I_x(dof/2, 1/2)
    lo, hi = 0.0, 1.0
    while 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + hi * hi)) > tail:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + mid * mid)) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` (continued fraction, Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(ln_front) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = (m * (b - m) * x) / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        d = 1.0 + num * d
        d = tiny if abs(d) < tiny else d
        d = 1.0 / d
        c = 1.0 + num / c
        c = tiny if abs(c) < tiny else c
        cd = c * d
        f *= cd
        if abs(1.0 - cd) < 1e-14:
            break
    return front * (f - 1.0)
