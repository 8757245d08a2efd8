"""The adaptive timeout's rules: the warm-up bound, the tail bound with back-off, per attempt.

The steps of :class:`smd.timeouts.AdaptiveTimeout` that turn a history into
a statistic (its class docstring, steps 1-7), as functions of the policy's
estimator parameters; the policy class adds the defaults, the profile and
the clamps. The statistics themselves are in :mod:`smd._survival`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from smd._adaptive_params import _plural
from smd._profiles import InfrastructureProfile
from smd._samples import TimingHistory
from smd._stats import recency_weights
from smd._survival import QuantileBound, backoff_from, lognormal_prediction_bound, quantile_bound
from smd.clock import Clock

__all__ = ["Estimator", "attempt_deadline", "describe", "quantile_name", "tail_bound", "warm_up"]


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
