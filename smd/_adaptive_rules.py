"""The adaptive timeout's rules: the warm-up bound, the tail bound with back-off, per attempt.

The steps of :class:`smd.timeouts.AdaptiveTimeout` that turn a history into
a statistic (its class docstring, steps 1-7), as functions of the policy's
estimator parameters; the policy class adds the defaults, the profile and
the clamps. The statistics themselves are in :mod:`smd._survival`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol

from smd._adaptive_params import _plural
from smd._profiles import InfrastructureProfile
from smd._samples import Sample, TimingHistory
from smd._stats import recency_weights
from smd._survival import QuantileBound, backoff_from, lognormal_prediction_bound, quantile_bound
from smd.clock import Clock

__all__ = [
    "Estimator",
    "attempt_deadline",
    "describe",
    "exploration",
    "quantile_name",
    "tail_bound",
    "warm_up",
]

# The reference of the exploration budget: issue 12's deadline goal is stated
# against the hindsight q99 of healthy starts, so the budget is too.
_BUDGET_QUANTILE = 0.99
# A 64-bit draw from a hash is uniform enough for a share of starts and is
# the same on every machine and process (unlike hash(), which is salted).
_DRAW_BITS = 64


class Estimator(Protocol):
    """The estimator parameters the rules read (an :class:`~smd.timeouts.AdaptiveTimeout`)."""

    clock: Clock
    target: float
    confidence: float
    half_life: float
    half_life_seconds: float | None
    tail_samples: float
    agreement: float
    growth: float
    patience: int
    run: int
    prior_sigma: float
    prior_dof: float
    explore_budget: float
    explore_growth: float


def quantile_name(target: float) -> str:
    """The quantile's name in explanations, e.g. ``q99.5`` for a target of 0.5%."""
    return f"q{(1.0 - target) * 100:.4g}"


def warm_up(
    policy: Estimator,
    values: Sequence[float],
    censored: Sequence[bool],
    successes: Sequence[float],
    details: dict[str, object],
) -> tuple[float, float, str]:
    """Step 7, fewer than ``min_samples`` samples: the statistic, the back-off and their text."""
    backoff = 0.0
    # Graded warm-up: a log-normal predictive bound, wide with few samples.
    stat_value = lognormal_prediction_bound(
        successes,
        1.0 - policy.target,
        prior_sigma=policy.prior_sigma,
        prior_dof=policy.prior_dof,
    )
    beyond = [v for v, c in zip(values, censored, strict=True) if c and v >= stat_value]
    if beyond:
        backoff = policy.growth * max(beyond)
    stat = (
        f"warm-up: log-normal predictive {quantile_name(policy.target)} of {_plural(len(successes), 'success')} "
        f"(prior spread {policy.prior_sigma:g}) = {stat_value:.3g}s"
    )
    if backoff:
        stat += f"; a timeout at {max(beyond):.3g}s during warm-up: >= {backoff:.3g}s"
    details.update(statistic="warm-up log-normal predictive bound", estimate=stat_value)
    return stat_value, backoff, stat


def tail_bound(
    policy: Estimator,
    values: Sequence[float],
    censored: Sequence[bool],
    weights: Sequence[float],
    details: dict[str, object],
) -> tuple[float, float, str]:
    """Steps 1-6: the statistic, the back-off and their text."""
    n = len(values)
    backoff = 0.0
    est = quantile_bound(
        values,
        censored,
        weights,
        target=policy.target,
        confidence=policy.confidence,
        tail_samples=policy.tail_samples,
        agreement=policy.agreement,
    )
    last = backoff_from(
        values,
        censored,
        est.seconds if est is not None else math.inf,
        policy.growth,
        policy.patience,
        policy.run,
    )
    if last is not None:
        backoff = policy.growth * last
    if est is None:  # no success at all: timeouts alone only lengthen it
        stat_value = 0.0
        backoff = max(backoff, policy.growth * max(values))
        stat = (
            f"no success in {_plural(n, 'sample')}: back-off {policy.growth:g}x the longest timeout"
        )
        details.update(statistic="back-off (no success)", estimate=None)
    else:
        stat_value = est.seconds
        stat = describe(policy, est)
        if last is not None and backoff > stat_value:
            stat += f"; back-off after a timeout: {policy.growth:g}x {last:.3g}s = {backoff:.3g}s"
        details.update(
            statistic=f"upper {policy.confidence:.0%} bound of {quantile_name(policy.target)} ({est.method})",
            method=est.method,
            estimate=est.point,
            bound=est.seconds,
            tail_threshold=est.threshold,
            tail_samples=est.tail_k,
            tail_index=est.gamma,
            tail_mass=est.tail_mass,
            dead_mass=est.dead_mass,
            dead_timeouts=est.dead_starts,
            largest_success=est.largest_success,
        )
    return stat_value, backoff, stat


def exploration(
    policy: Estimator,
    values: Sequence[float],
    censored: Sequence[bool],
    weights: Sequence[float],
    seconds: float,
    low: float,
    high: float,
    last: Sample,
    details: dict[str, object],
) -> tuple[float, str] | None:
    """Step 6b: the exploration deadline for this start and its text, or ``None``.

    Timeouts beyond every success are dead starts or a slow mode that no
    deadline has reached yet; censored at the deadline, the two look the
    same, so no estimator can tell them apart from this data (the class
    docstring's *Limits*). Only a longer wait can. While the Kaplan-Meier
    mass put down to dead starts exceeds the target, some starts get a
    longer deadline: the levels ``E_j = seconds x explore_growth^j`` (j = 1,
    2, ...; the last one ``high``, the no-data default), as in a doubling
    search, since where a slow mode lies is unknown. The budget ``B =
    max(explore_budget x q99, low)`` (``q99`` the point estimate of the
    healthy q99 that takes those timeouts for dead starts, ``low`` the floor)
    is split evenly over the levels: level ``j`` gets a share ``(B -
    seconds) / (J (E_j - seconds))`` of the starts (near levels cheap and
    often, far ones rare). So if the timeouts *are* dead the mean deadline
    stays within ``B``; if some are slow, an explored start may catch one,
    and a single success beyond them moves their Kaplan-Meier mass onto it
    and the bound up. At the floor with a fast body (``B <= seconds``) there
    is nothing to spend: no exploration. Which start explores, and at which
    level, is a hash of the newest sample: the decision is a pure function of
    the history.
    """
    dead = details.get("dead_mass")
    if policy.explore_budget <= 0 or not isinstance(dead, float) or dead <= policy.target:
        return None
    levels: list[float] = []
    level = seconds
    while level < high and policy.explore_growth > 1.0:
        level = min(level * policy.explore_growth, high)
        levels.append(level)
    if policy.explore_growth == 1.0 and high > seconds:
        levels.append(high)
    if len(levels) >= 2 and levels[-2] * math.sqrt(policy.explore_growth) >= high:
        del levels[-2]  # within half a step of the default: one level, not two
    if not levels:
        return None
    ref = quantile_bound(
        values,
        censored,
        weights,
        target=1.0 - _BUDGET_QUANTILE,
        confidence=0.5,  # the point estimate: the budget is a mean, not a bound
        tail_samples=policy.tail_samples,
        agreement=policy.agreement,
    )
    if ref is None:
        return None
    budget = max(policy.explore_budget * ref.point, low)
    spare = max(0.0, budget - seconds) / len(levels)
    shares = [spare / (e - seconds) for e in levels]
    scale = min(1.0, 1.0 / sum(shares)) if sum(shares) > 0 else 1.0
    shares = [x * scale for x in shares]
    share = math.fsum(shares)
    details.update(
        explore_share=share,
        explore_levels=tuple(levels),
        explore_shares=tuple(shares),
        explore_budget_s=budget,
    )
    key = f"{last.at!r}/{last.seconds!r}/{last.censored}/{len(values)}".encode()
    draw = int.from_bytes(hashlib.blake2b(key, digest_size=_DRAW_BITS // 8).digest(), "big")
    draw_share = draw / 2**_DRAW_BITS
    chosen = None
    acc = 0.0
    for e, x in zip(levels, shares, strict=True):
        acc += x
        if draw_share < acc:
            chosen = e
            break
    if chosen is None:
        return None
    details["explore_seconds"] = chosen
    text = (
        f"; exploring {chosen:.3g}s (one of {len(levels)} levels, {share:.1%} of starts, while "
        f"{dead:.1%} of the mass is put down to dead starts; budget {budget:.3g}s = "
        f"max({policy.explore_budget:g} x q99 {ref.point:.3g}s, floor))"
    )
    return chosen, text


def describe(policy: Estimator, est: QuantileBound) -> str:
    """The explanation of a tail (or Kaplan-Meier) bound."""
    target = f"{policy.target * 100:.3g}%"
    text = (
        f"upper {policy.confidence:.0%} bound of {quantile_name(policy.target)} (target {target} false failures) "
        f"= {est.seconds:.3g}s (point {est.point:.3g}s"
    )
    if est.method == "pareto tail" and est.threshold is not None:
        text += (
            f"; Pareto tail above {est.threshold:.3g}s from {est.tail_k:.1f} effective "
            f"successes, index {est.gamma or 0.0:.2f}"
        )
    else:
        text += "; Kaplan-Meier"
    text += ")"
    if est.dead_starts >= 0.05:
        text += (
            f"; {est.dead_starts:.1f} of {_plural(est.censored, 'timeout')} taken for dead "
            f"starts ({est.dead_mass:.1%} of the mass)"
        )
    return text


def attempt_deadline(
    policy: Estimator,
    history: TimingHistory,
    seconds: float,
    floor: float,
    profile: InfrastructureProfile,
    min_samples: int,
    details: dict[str, object],
) -> float:
    """The per-attempt deadline from the ``attempt`` series (see the class docstring)."""
    attempts = history.attempts
    details["attempt_samples"] = len(attempts)
    if len(attempts) < min_samples:
        details["attempt_statistic"] = "none (whole deadline per attempt)"
        return seconds
    weights = recency_weights(
        attempts, policy.half_life, policy.half_life_seconds, policy.clock.wall()
    )
    est = quantile_bound(
        [float(s.seconds or 0.0) for s in attempts],
        [s.censored for s in attempts],
        weights,
        target=policy.target,
        confidence=policy.confidence,
        tail_samples=policy.tail_samples,
        agreement=policy.agreement,
        dead=False,
    )
    if est is None:
        details["attempt_statistic"] = "none (no answered attempt)"
        return seconds
    raw = est.seconds + profile.attempt
    value = min(max(raw, min(floor, seconds)), seconds)
    details["attempt_statistic"] = (
        f"upper {policy.confidence:.0%} bound of {quantile_name(policy.target)} {est.seconds:.3g}s ({est.method})"
    )
    details["attempt_raw"] = raw
    return value
