"""Upper confidence bounds of an upper quantile of time-to-ready, from censored data.

The statistics behind :class:`smd.timeouts.AdaptiveTimeout`, as pure functions
of ``(seconds, censored)`` observations and their weights (standard library
only; well under a millisecond for 256 samples).

The model. A start is either *dead* (it would never have become ready: the
database was down) or *healthy*, with a time-to-ready ``L`` drawn from an
unknown distribution ``F``. A start that succeeded after ``x`` seconds is an
exact healthy observation; a start that gave up after ``c`` seconds is
censored: dead, or healthy with ``L > c``. The false-failure rate of a
deadline ``T`` is ``P(L > T)`` over healthy starts, so the deadline for a
target rate ``tau`` is the ``1 - tau`` quantile of ``F`` -- of the *healthy*
starts: a dead start is not a slow sample.

:func:`quantile_bound` estimates it in five steps:

1. **Kaplan-Meier** (weighted) survival of all starts: a timeout at ``c``
   leaves the risk set at ``c``, so timeouts inside the observed range move
   their mass to the slower successes instead of vanishing.
2. **Why a tail model.** The 0.995 quantile lies beyond what a few hundred
   samples show: the largest of ``n`` exceeds it only with probability
   ``1 - 0.995**n`` (72% for 256, 53% for the ~150 effective samples of the
   default recency weights). Beyond the sample something must be assumed; the
   assumption here is the peaks-over-threshold view of extreme-value theory:
   above a threshold ``u`` the log-excess ``ln(L/u)`` is exponential with mean
   ``gamma`` (a Pareto-type tail; Hill 1975, Weissman 1978). It is exact for
   Pareto tails and *over*-estimates the quantiles of every lighter tail
   (log-normal, gamma, Weibull, bounded), so it errs on the safe side.
   ``gamma`` is the censored Hill estimator over the observations above
   ``u`` inside the observed range (a timeout there is exposure without an
   event); timeouts beyond every success never shape the tail.
3. **Threshold (Lepski's rule).** Candidates are the top 2, 3, 4.5, ... up to
   ``tail_samples`` effective successes. A wider tail has a smaller error but
   more bias when the top of the sample is not one Pareto tail (a cold-start
   mode above a fast body); the widest candidate whose quantile estimate stays
   within ``agreement`` standard errors of every narrower one is used.
4. **Dead or slow (a cure-fraction mixture).** The mass that Kaplan-Meier
   leaves beyond the largest success belongs to timeouts whose fate is
   unknown. A timeout at ``c`` there is dead with probability
   ``pi / (pi + (1 - pi) S(c))``, ``S(c) = (c/u) ** (-1/gamma)`` the tail's
   survival and ``pi`` the dead share of the tail, estimated by EM (the
   cure-fraction model of survival analysis; its Kaplan-Meier plateau is the
   estimator of Maller & Zhou 1996). Far beyond what the tail predicts a
   timeout is a dead database and teaches nothing; near the successes it is
   mostly a slow start and stays in the tail's mass.
5. **Bound.** ``q = u * (phi / tau) ** gamma`` (``phi`` the healthy mass
   above ``u``) and the upper bound at ``confidence`` uses its asymptotic
   log-normal error ``sd(ln q) = gamma * sqrt((1 + ln(phi / tau) ** 2) / k)``,
   ``k`` the effective tail successes: wide when the tail is small. It is
   never below the Kaplan-Meier quantile (what the data itself shows). When
   ``tau`` is not in the tail (``tau >= phi``), the Kaplan-Meier quantile is
   bounded with a Wilson bound on the exceedance rate at ``n_eff``.

Recency weights enter through Kish's effective sample size
``n_eff = (sum w)^2 / sum w^2``; ``k`` counts tail successes the same way.

Limit. A slow mode that has never been observed (beyond every deadline so
far) is, in this data, the same thing as dead starts at the same rate; no
estimator can tell them apart without waiting longer. :func:`backoff_from`
waits longer after timeouts near the bound (and after runs of timeouts),
which finds slow modes just beyond the deadline; the policy's exploration
(:func:`smd._adaptive_rules.exploration`) gives a few starts longer deadlines
within a budget; a mode far beyond it is found only if a long deadline (the
warm-up's, or an explored start's) saw it.

For a handful of samples (the warm-up), :func:`lognormal_prediction_bound`
gives the Bayesian predictive ``1 - tau`` bound of a log-normal with a weak
prior on its spread: a Student-t factor that is wide when ``n`` is small.

Layout: Kaplan-Meier and the Wilson bound are in :mod:`smd._survival_km`,
the tail fit (Hill, Weissman, the dead-start EM) in :mod:`smd._survival_tail`,
the warm-up bound in :mod:`smd._survival_warmup`; this module chooses the
threshold and puts them together.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from smd._survival_km import _survival_at, _wilson_upper, kaplan_meier
from smd._survival_tail import _dead_split, _exp_times, _Inside, _Tail
from smd._survival_warmup import lognormal_prediction_bound, student_t_quantile

__all__ = [
    "QuantileBound",
    "backoff_from",
    "kaplan_meier",
    "lognormal_prediction_bound",
    "quantile_bound",
    "student_t_quantile",
]
# Candidate tails: the top 2, 3, 4.5, 6.75, ... effective successes (x1.5 steps
# keep them few -- 9 up to 48 -- and nested). The narrow ones are noisy, so
# Lepski's rule rarely stops there; they matter when a small mode sits at
# the top of the sample (2% spikes are 3 effective samples of 150).
_TAIL_MIN = 2.0
_TAIL_STEP = 1.5


@dataclass(frozen=True, slots=True)
class QuantileBound:
    """What :func:`quantile_bound` learned (every field is in the explanation)."""

    seconds: float  # the upper confidence bound
    point: float  # the point estimate of the quantile
    method: str  # "pareto tail" or "kaplan-meier"
    n: int  # observations
    censored: int
    n_eff: float  # Kish effective size of all observations
    successes: int
    largest_success: float
    threshold: float | None  # u, where the tail model starts
    tail_k: float  # effective tail successes
    tail_mass: float  # phi: healthy mass above u
    gamma: float | None  # tail index (mean log-excess)
    dead_mass: float  # Kaplan-Meier mass put down to dead starts
    dead_starts: float  # expected number of dead starts among the timeouts


def backoff_from(
    values: Sequence[float],
    censored: Sequence[bool],
    bound: float,
    growth: float,
    patience: int,
    run: int,
) -> float | None:
    """The timeout the next deadline backs off from, or ``None``.

    TCP's rule (RFC 6298 5.5), for ``patience`` starts after a timeout at
    ``c``: the deadline is at least ``growth x c``, climbing while those
    starts time out too. A timeout counts when it was within ``growth x``
    the current ``bound`` (the statistics could not rule out a slow start
    there), when it ends a run of ``run`` timeouts in a row (dead starts
    rarely come in runs, a slower regime or an outage always does), or when
    it happened during a back-off (the climb goes on). A lone timeout far
    beyond the bound -- at a floor well above every start -- is a dead
    start and costs nothing more.
    """
    n = len(values)
    counts = [False] * n  # a timeout that backs off the next `patience` starts
    for i in range(n):
        if not censored[i]:
            continue
        near = values[i] <= growth * bound * (1 + 1e-9)
        in_run = i + 1 >= run and all(censored[j] for j in range(i + 1 - run, i + 1))
        during = any(counts[j] for j in range(max(0, i - patience), i))  # it was backed off
        counts[i] = near or in_run or during
    recent = [values[i] for i in range(max(0, n - patience), n) if counts[i]]
    return max(recent) if recent else None


def quantile_bound(
    values: Sequence[float],
    censored: Sequence[bool],
    weights: Sequence[float],
    *,
    target: float,
    confidence: float,
    tail_samples: float,
    agreement: float,
    dead: bool = True,
) -> QuantileBound | None:
    """Upper ``confidence`` bound of the ``1 - target`` quantile of healthy time-to-ready.

    ``values``/``censored``/``weights`` are the observations (any order).
    ``dead=False`` (single attempts, never dead) reads every timeout as a
    slow start. ``None`` without any success. See the module docstring.
    """
    n = len(values)
    total = math.fsum(weights)
    squares = math.fsum(w * w for w in weights)
    if total <= 0 or not any(not c for c in censored):
        return None
    n_eff = total * total / squares
    unit = squares / total  # the weight of one effective sample
    times, surv = kaplan_meier(values, censored, weights)
    largest = times[-1]
    # Timeouts beyond every success: dead starts, or slow ones never resolved.
    beyond = [i for i in range(n) if censored[i] and values[i] >= largest]
    unresolved = surv[-1] if beyond else 0.0
    inside = _Inside(
        [
            (values[i], censored[i], weights[i])
            for i in range(n)
            if not (censored[i] and values[i] >= largest)
        ]
    )
    # -- candidate thresholds: the top k effective successes, k = 2, 3, 4.5, ... --
    successes = sorted((-values[i], weights[i]) for i in range(n) if not censored[i])
    success_weight = math.fsum(w for _v, w in successes)
    cap = min(tail_samples, 0.5 * success_weight / unit)
    fits: list[_Tail] = []
    k_want = _TAIL_MIN
    acc = 0.0
    previous = math.inf
    for neg_v, w in successes:
        v = -neg_v
        if k_want > cap:
            break
        if acc >= k_want * unit and v < previous and v > 0:
            fit = inside.fit(v, _survival_at(times, surv, v), unresolved, target)
            if fit is not None:
                fits.append(fit)
            while k_want * unit <= acc:
                k_want *= _TAIL_STEP
        acc += w
        previous = v
    # -- Lepski: the widest tail whose estimate agrees with every narrower one --
    chosen: _Tail | None = None
    for j, fit in enumerate(fits):
        if any(
            not math.isfinite(fit.point)
            or abs(math.log(fit.point / f.point)) > agreement * f.sd_log
            for f in fits[:j]
        ):
            break
        chosen = fit
    dead_mass = 0.0
    dead_starts = 0.0
    if beyond and dead:
        dead_mass, dead_starts = _dead_split(
            [values[i] for i in beyond],
            [weights[i] for i in beyond],
            chosen,
            inside,
            largest,
            unresolved,
        )
        if chosen is not None:
            chosen = inside.fit(chosen.u, _survival_at(times, surv, chosen.u), dead_mass, target)
    elif beyond:
        dead_mass = 0.0
    # -- the Kaplan-Meier quantile of healthy starts: S_h(t) = (S(t) - d) / (1 - d) --
    z = NormalDist().inv_cdf(confidence)
    level = dead_mass + target * (1.0 - dead_mass)
    neg_surv = [-s for s in surv]
    at = bisect_left(neg_surv, -level)  # first success time with S(t) <= level
    km_point = times[at] if at < len(times) else largest
    if chosen is not None and chosen.mass > target:
        point = max(chosen.point, km_point)
        seconds = max(_exp_times(chosen.point, z * chosen.sd_log), km_point)
        method = "pareto tail"
    else:
        point = km_point
        seconds = largest
        for t, s in zip(times, surv, strict=True):
            healthy = (s - dead_mass) / (1.0 - dead_mass) if dead_mass < 1.0 else 0.0
            if _wilson_upper(healthy, n_eff, z) <= target:
                seconds = max(t, km_point)
                break
        method = "kaplan-meier"
    return QuantileBound(
        seconds=seconds,
        point=point,
        method=method,
        n=n,
        censored=sum(1 for c in censored if c),
        n_eff=n_eff,
        successes=len(successes),
        largest_success=largest,
        threshold=chosen.u if chosen is not None else None,
        tail_k=chosen.k if chosen is not None else 0.0,
        tail_mass=chosen.mass if chosen is not None else 0.0,
        gamma=chosen.gamma if chosen is not None else None,
        dead_mass=dead_mass,
        dead_starts=dead_starts,
    )
