"""The adaptive timeout's parameters: built-in bounds, estimator defaults and their checks.

Each default of :class:`smd.timeouts.AdaptiveTimeout` lives here with the
reason for its value (re-exported by :mod:`smd._adaptive`), next to the
argument checks its constructor runs.
"""

from __future__ import annotations

import math

from smd._settings import ENV_TIMEOUT_DEFAULTS, MIN_SAMPLES_DEFAULT

__all__ = [
    "AGREEMENT",
    "CONFIDENCE",
    "EXPLORE_BUDGET",
    "EXPLORE_GROWTH",
    "GROWTH",
    "HALF_LIFE",
    "PATIENCE",
    "PRIOR_DOF",
    "PRIOR_SIGMA",
    "RUN",
    "TAIL_SAMPLES",
    "TARGET",
]

# Built-in bounds when neither the constructor nor a context gives them:
# the production defaults of the settings.
_BUILTIN = ENV_TIMEOUT_DEFAULTS["production"]
_BUILTIN_MIN_SAMPLES = MIN_SAMPLES_DEFAULT

# The estimator's parameters and their defaults. "Training" is the training
# set of benchmarks/timeout_quality.py, the only traces used to choose them
# (5 seeds per family); the held-out set judges them, and `--ablation` moves
# each one both ways. A default was chosen by: most training families meeting
# both goals (false failures <= 1%, steady-state deadline <= max(2 x q99,
# floor)), then the largest worst-case margin min(1 - FF/1%, 1 - deadline /
# bound) over those families, then the lowest worst false-failure rate, then
# the lowest warm-up cost. The margins quoted are that criterion's.

#: The stated false-failure rate (issue 12): a healthy start is given up on
#: with probability 0.5%. Not tuned: the goal is <= 1%, and half of it is what
#: a history bounded to 256 samples can aim at without waiting for ever.
TARGET = 0.005
#: One-sided confidence of the upper bound. Training: 0.75 (margin 0.29);
#: 0.6 gives up false failures (0.16), 0.85 fails cloud-vm's floor and pays
#: +10-20% deadline on the heavy tail (0.09).
CONFIDENCE = 0.75
#: Recency half-life in starts: sample i of n weighs 2^-((n-1-i)/128), ~180 of
#: 256 samples effective. Training: 128 (margin 0.29); 64 (0.20) has too few
#: effective samples for the tail, 192 (0.17) mixes regimes longer. It hardly
#: slows shrinking: that is bounded by the 256-sample history either way.
HALF_LIFE = 128.0
#: The widest tail (effective successes) the threshold may use. Training: 48
#: (margin 0.29); 24 (0.13) leaves the heavy tail's bound noisy, 64 (0.23)
#: and 96 (0.25) let the log-normal body bias it up.
TAIL_SAMPLES = 48.0
#: Lepski's rule: a wider tail is used only while its estimate stays within
#: `agreement` standard errors of every narrower one. Training: 3 (margin
#: 0.29); 2 stops on noise (0.01, narrow fits drive false failures), 4 lets
#: the body bias the tail (0.21).
AGREEMENT = 3.0
#: Back-off factor after a timeout: the next `patience` deadlines are growth x
#: the timed-out one, climbing while they time out too (TCP's RTO doubling,
#: RFC 6298 5.5). Training: 2; 1 (no back-off) misses near-cold and the regime
#: shift, 3 pays for dead starts beyond cloud-vm's floor.
GROWTH = 2.0
#: How many starts after a timeout keep the backed-off deadline. Training: 1
#: (margin 0.29); 0 misses near-cold, 2 costs more deadline (0.23).
PATIENCE = 1
#: A timeout far beyond the bound (a floor well above every start) backs off
#: only when it ends a run of this many timeouts in a row: with dead starts
#: at rate pi that costs pi^run per start. Training: 3; 2 pays for pairs of
#: dead starts above fast-local's floor, 4 ties and follows a shift from
#: below the floor one start later.
RUN = 3
#: Warm-up prior: the log-spread of time-to-ready assumed before the samples
#: show it, and how many samples' worth it weighs. 1.0 (a factor e per
#: standard deviation) is wider than every training body (0.3-0.5), so the
#: first samples cannot talk the deadline down. Training: 0.5 ties on margin
#: but shrinks before serverless's cold starts are seen (5.5% vs 5.0% false
#: failures there); 2 costs warm-up (13 s vs 11 s). prior_dof: 4 (warm-up
#: 9.9 s) over 1 (11.7 s; one sample can never move the default), same
#: margin. 8 ties too and saves another 0.4 s, but overruled: its margin on a
#: single sample is 115x (4: 665x), a bet on "no slow mode hides behind the
#: first start" that no training family can judge.
PRIOR_SIGMA = 1.0
PRIOR_DOF = 4.0
#: Exploration (step 6b): timeouts beyond every success are dead starts or a
#: slow mode no deadline has reached, and only a longer deadline can tell.
#: While the mass written off as dead exceeds the target, a pseudo-random
#: share of starts gets a longer deadline, so few that the mean deadline stays
#: within `explore_budget` x the healthy q99 point estimate *if* those
#: timeouts are dead (issue 12's deadline goal is 2 x q99; exploring that
#: broke it on a dead-start family would trade one goal for the other).
#: Training (5 seeds, the criterion above): 1.2 ties 0 (no exploration) on
#: margin (0.29) and has the lower worst false-failure rate (serverless 4.68%
#: vs 4.98%); 1.1 is 0 in effect (0.29, 4.98%), 1.35 gives margin 0.24, 2
#: breaks pareto-2.5's deadline goal (1.17 x, its q99 estimate is noisy). The
#: gain is small by necessity: see the class docstring's *Limits*.
EXPLORE_BUDGET = 1.2
#: The exploration levels: `explore_growth^j` x the current deadline, j = 1,
#: 2, ..., up to the no-data default (what the user said to wait knowing
#: nothing): a doubling search, since where a slow mode lies is unknown, with
#: the budget split evenly over the levels. Training (budget 1.2): 2 (margin
#: 0.29) over 3 (0.28); a single far level (10 x, budget 1.5) gave 0.19.
EXPLORE_GROWTH = 2.0


def _seconds_arg(name: str, value: float | None, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return v


def _number(
    name: str, value: float, low: float, high: float = math.inf, *, inclusive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (low <= v if inclusive else low < v) and v < high):
        lo = f">= {low:g}" if inclusive else f"> {low:g}"
        hi = "" if high == math.inf else f" and < {high:g}"
        raise ValueError(f"{name} must be a number {lo}{hi}, got {value!r}")
    return v


def _plural(n: int | float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


#: The estimator's constructor parameters, in order (what :meth:`AdaptiveTimeout.spec` stores).
_ESTIMATOR_PARAMETERS = (
    "target",
    "confidence",
    "half_life",
    "half_life_seconds",
    "tail_samples",
    "agreement",
    "growth",
    "patience",
    "run",
    "prior_sigma",
    "prior_dof",
    "explore_budget",
    "explore_growth",
)
