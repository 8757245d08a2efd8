"""The adaptive timeout: a deadline learned from a target's history.

See :class:`AdaptiveTimeout` for the method and :mod:`smd._survival` for the
statistics. Everything here is a pure function of the history (plus the
clock, when a wall-time half-life is set), so a decision can be replayed,
explained and tested without sleeping. The estimator's parameters (with
the reasons for their defaults) are in :mod:`smd._adaptive_params`, the
warm-up, tail and back-off rules in :mod:`smd._adaptive_rules`.
"""

from __future__ import annotations

from smd._adaptive_params import (
    _BUILTIN,
    _BUILTIN_MIN_SAMPLES,
    _ESTIMATOR_PARAMETERS,
    AGREEMENT,
    CONFIDENCE,
    EXPLORE_BUDGET,
    EXPLORE_GROWTH,
    GROWTH,
    HALF_LIFE,
    PATIENCE,
    PRIOR_DOF,
    PRIOR_SIGMA,
    RUN,
    TAIL_SAMPLES,
    TARGET,
    _number,
    _plural,
    _seconds_arg,
)
from smd._adaptive_rules import attempt_deadline, exploration, tail_bound, warm_up
from smd._profiles import InfrastructureProfile
from smd._samples import TimingHistory
from smd._settings import Environment, EnvTimeouts
from smd._stats import recency_weights
from smd._timeout_base import TimeoutContext, TimeoutDecision, TimeoutSource
from smd.clock import Clock, SystemClock
from smd.plugins import profile as _resolve_profile

__all__ = ["AdaptiveTimeout"]


class AdaptiveTimeout:
    """A deadline that gives up on a healthy start with a stated probability.

    ``target`` (default 0.5%) is the false-failure rate: the probability that
    a start which would have become ready is given up on. The overall
    deadline (``seconds``) is an upper confidence bound of the ``1 - target``
    quantile of time-to-ready, learned from the ``ready`` series (time from
    the first attempt to the first success; a start that timed out is a
    *censored* sample, "at least T"). See :mod:`smd._survival` for the
    statistics; in short:

    1. **Recency weights.** Sample *i* of *n* (oldest first) weighs
       ``2^(-(n-1-i)/half_life)`` (also halved every ``half_life_seconds``
       of age when set); ``n_eff`` is Kish's effective sample size.
    2. **Censoring.** A weighted Kaplan-Meier survival uses every sample: a
       timeout at ``c`` leaves the risk set at ``c``, so timeouts inside the
       observed range push the quantile up.
    3. **Tail.** Above a threshold the healthy tail is Pareto-type (the
       peaks-over-threshold view of extreme-value theory; it over-estimates
       every lighter tail). The threshold is chosen by Lepski's rule among
       the top 2, 3, 4.5, ... up to ``tail_samples`` effective successes: the
       widest whose estimate agrees (within ``agreement`` standard errors)
       with every narrower one, so a Pareto tail uses many samples and a
       cold-start mode is not fitted together with the body.
    4. **Dead starts are not slow samples.** A timeout beyond every success
       is dead or slow; it is dead with its posterior probability under a
       cure-fraction mixture (EM on the dead share, the tail shape fixed):
       far beyond what the tail predicts it is a dead database and teaches
       nothing; near the successes it is mostly a slow start and adds mass
       to the tail.
    5. **Bound.** The ``1 - target`` quantile is extrapolated along the tail
       (Weissman's estimator) and bounded above at ``confidence`` with its
       log-normal error, which is wide when the tail has few samples; it is
       never below the Kaplan-Meier quantile. The explanation names the
       quantile, the bound, the effective samples and the timeouts taken for
       dead starts.
    6. **Back-off.** For ``patience`` starts after a timeout within
       ``growth`` x the bound (or ending a run of ``run`` timeouts, or itself
       backed off) the deadline is at least ``growth`` x the timed-out one,
       climbing while they time out too (TCP's retransmission back-off): a
       slower regime, an outage that ends, or a slow mode just beyond the
       deadline is found, and a dead database costs ``patience`` longer
       deadlines. A lone timeout far beyond the bound (at a floor well above
       every start) costs nothing more.
    6b. **Exploration.** While the mass put down to dead starts exceeds the
       target, a pseudo-random share of starts (a hash of the newest sample)
       waits longer: ``explore_growth^j`` x the deadline, up to the no-data
       default, the budget split evenly over the levels, so that the mean
       deadline stays within ``explore_budget`` x the healthy q99 estimate
       if those timeouts are dead. A slow mode that an explored start
       catches moves the timeouts' mass onto it. At the floor with a fast
       body there is no budget: no exploration.
    7. **Warm-up** (fewer than ``min_samples`` samples): the predictive
       ``1 - target`` bound of a log-normal with a weak prior on its spread
       (``prior_sigma``, ``prior_dof``): a Student-t factor, huge with one
       sample and narrowing as they agree, so the deadline shrinks gradually
       from the environment's default instead of all at once. A timeout seen
       during the warm-up keeps the deadline at ``growth`` x it (dead or
       slow cannot be told apart from so few starts). No sample at all: the
       default, source ``"default"``.
    8. **Profile and clamps.** ``T += profile.cold_start``, then
       ``min(max(T, floor), ceiling)``. If the history holds no timeout and
       every success is within the default, ``T`` is also capped at the
       no-data default: fast healthy history only ever shortens it. With no
       success at all, ``T`` is at least the no-data default (and backs off
       beyond it): timeouts alone only ever lengthen it.

    **It grows faster than it shrinks.** The newest sample of a full history
    weighs ~0.7% of it (``half_life`` 128, 256 samples), more than the
    target, so one success beyond the deadline is covered at once, and
    timeouts back off geometrically (a 10x slower regime is covered within
    ~5-11 starts). Shrinking needs the slow samples' weight to fall below the
    target: ``log2(1/target)`` (7.6) half-lives, so in practice the whole
    256-sample history (~250 starts).

    **Limits.** A slow mode that has never been seen (beyond every deadline
    so far) is, in this data, the same thing as dead starts at the same rate
    (the same body with dead rate ``d + (1 - d) c`` produces the same
    histories as dead rate ``d`` plus a fraction ``c`` of slow starts, as long
    as no deadline reaches the slow mode). Only waiting longer tells them
    apart, and waiting longer costs every dead start: a policy that keeps
    the dead-start twin within its deadline goal (mean <= max(2 x q99,
    floor)) can wait until ``E`` on at most a share ``(B - floor) / (E -
    floor)`` of starts, so it sees the mode only after ~``1 / (share x
    P(slow <= E))`` slow starts have failed. At the floor with a fast body
    (2% spikes of 1.5 s over a 30 ms body) that share is 0; for 2-5% cold
    starts at 10-40x a body near 0.5 s it is ~4-8%, and ~13-28 false
    failures come before the mode is found. The mode is learnt from the
    warm-up's long deadlines, from the back-off when it lies within
    ``growth`` x the bound, and from exploration within its budget; a rarer,
    farther mode stays a false failure until then.
    ``benchmarks/timeout_quality.py`` measures this on held-out families.

    Per-attempt deadline (``attempt_seconds``), from the ``attempt`` series
    (latencies of single answered attempts; never dead): the same bound plus
    the profile ``attempt`` allowance, clamped to ``[min(floor, seconds),
    seconds]``; with fewer than ``min_samples`` attempts it is ``seconds``.

    Failures of kind ``configuration`` or ``application`` live in the
    ``failure`` series and never enter either estimate.

    ``default``, ``floor``, ``ceiling``, ``min_samples`` and ``profile`` left
    at ``None`` come from the :class:`~smd.timeouts.TimeoutContext` given to
    :meth:`compute` (the environment's settings), else from built-in values
    (default 30 s, floor 1 s, ceiling 120 s, 8 samples, no profile). The
    other parameters are the estimator's; their defaults (module constants of
    ``smd._adaptive``, each with the reason for its value) were chosen on the
    training set of ``benchmarks/timeout_quality.py``.
    """

    def __init__(
        self,
        *,
        default: float | None = None,
        floor: float | None = None,
        ceiling: float | None = None,
        min_samples: int | None = None,
        profile: str | InfrastructureProfile | None = None,
        clock: Clock | None = None,
        target: float = TARGET,
        confidence: float = CONFIDENCE,
        half_life: float = HALF_LIFE,
        half_life_seconds: float | None = None,
        tail_samples: float = TAIL_SAMPLES,
        agreement: float = AGREEMENT,
        growth: float = GROWTH,
        patience: int = PATIENCE,
        run: int = RUN,
        prior_sigma: float = PRIOR_SIGMA,
        prior_dof: float = PRIOR_DOF,
        explore_budget: float = EXPLORE_BUDGET,
        explore_growth: float = EXPLORE_GROWTH,
    ) -> None:
        self.default = _seconds_arg("default", default)
        self.floor = _seconds_arg("floor", floor)
        self.ceiling = _seconds_arg("ceiling", ceiling)
        if self.floor is not None and self.ceiling is not None and self.floor > self.ceiling:
            raise ValueError(f"floor ({self.floor:g}s) is above ceiling ({self.ceiling:g}s)")
        if min_samples is not None and (
            isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1
        ):
            raise ValueError(f"min_samples must be an integer >= 1, got {min_samples!r}")
        self.min_samples = min_samples
        self.profile = None if profile is None else _resolve_profile(profile)
        self.clock: Clock = clock or SystemClock()
        self.target = _number("target", target, 0.0, 0.5)
        self.confidence = _number("confidence", confidence, 0.0, 1.0)
        if self.confidence < 0.5:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
        self.half_life = _number("half_life", half_life, 0.0)
        self.half_life_seconds = _seconds_arg("half_life_seconds", half_life_seconds)
        self.tail_samples = _number("tail_samples", tail_samples, 4.0, inclusive=True)
        self.agreement = _number("agreement", agreement, 0.0)
        self.growth = _number("growth", growth, 1.0, inclusive=True)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        if isinstance(run, bool) or not isinstance(run, int) or run < 1:
            raise ValueError(f"run must be an integer >= 1, got {run!r}")
        self.run = run
        self.prior_sigma = _number("prior_sigma", prior_sigma, 0.0)
        self.prior_dof = _number("prior_dof", prior_dof, 0.0)
        self.explore_budget = _number("explore_budget", explore_budget, 0.0, inclusive=True)
        self.explore_growth = _number("explore_growth", explore_growth, 1.0, inclusive=True)

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> AdaptiveTimeout:
        """An adaptive timeout with the bounds of ``settings.environment``.

        ``settings`` is a :class:`smd.Settings` (typed loosely so that any
        object with ``environment`` and ``timeouts`` works).
        """
        env = Environment.parse(getattr(settings, "environment"))  # noqa: B009
        timeouts = getattr(settings, "timeouts")  # noqa: B009
        bounds: EnvTimeouts = timeouts.for_env(env)
        kwargs: dict[str, object] = {
            "default": bounds.default,
            "floor": bounds.floor,
            "ceiling": bounds.ceiling,
            "min_samples": int(timeouts.min_samples),
            "profile": str(timeouts.profile),
        }
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    def _bounds(self, context: TimeoutContext | None) -> tuple[float, float, float]:
        ctx = context.bounds if context is not None else None
        default = (
            self.default
            if self.default is not None
            else (ctx.default if ctx else _BUILTIN["default"])
        )
        floor = self.floor if self.floor is not None else (ctx.floor if ctx else _BUILTIN["floor"])
        ceiling = (
            self.ceiling
            if self.ceiling is not None
            else (ctx.ceiling if ctx else _BUILTIN["ceiling"])
        )
        if floor > ceiling:
            raise ValueError(f"floor ({floor:g}s) is above ceiling ({ceiling:g}s)")
        return default, floor, ceiling

    def _profile(self, context: TimeoutContext | None) -> InfrastructureProfile:
        if self.profile is not None:
            return self.profile
        return _resolve_profile(context.profile if context is not None else "none")

    def compute(
        self, history: TimingHistory, context: TimeoutContext | None = None
    ) -> TimeoutDecision:
        """The deadline to use now, with its explanation. See the class docstring."""
        default, floor, ceiling = self._bounds(context)
        profile = self._profile(context)
        min_samples = (
            self.min_samples
            or (context.min_samples if context is not None else None)
            or _BUILTIN_MIN_SAMPLES
        )
        no_data = min(max(default + profile.cold_start, floor), ceiling)
        ready = history.ready
        env = context.environment if context is not None else "built-in"
        allowance = (
            f" + {profile.cold_start:g}s profile {profile.name}" if profile.cold_start else ""
        )
        values = [float(s.seconds or 0.0) for s in ready]
        censored = [s.censored for s in ready]
        n = len(ready)
        n_censored = sum(censored)
        details: dict[str, object] = {
            "environment": env,
            "samples": n,
            "censored": n_censored,
            "min_samples": min_samples,
            "default": default,
            "no_data": no_data,
            "floor": floor,
            "ceiling": ceiling,
            "profile": profile.name,
            "profile_allowance": profile.cold_start,
            "target": self.target,
            "quantile": 1.0 - self.target,
            "confidence": self.confidence,
        }
        successes = [v for v, c in zip(values, censored, strict=True) if not c]
        if n == 0 or (n < min_samples and not successes):
            attempt = attempt_deadline(self, history, no_data, floor, profile, min_samples, details)
            details.update(statistic="none", raw=None, clamp="none", n_eff=0.0)
            why = "no success yet" if n else "no sample yet"
            return TimeoutDecision(
                seconds=no_data,
                source="default",
                explanation=(
                    f"default {no_data:g}s: {_plural(n, 'ready sample')}, {why} "
                    f"({env} default {default:g}s{allowance})"
                ),
                attempt_seconds=attempt,
                details=details,
            )
        weights = recency_weights(ready, self.half_life, self.half_life_seconds, self.clock.wall())
        total = sum(weights)
        n_eff = total * total / sum(w * w for w in weights)
        details["n_eff"] = n_eff
        if n < min_samples:
            stat_value, backoff, stat = warm_up(self, values, censored, successes, details)
        else:
            stat_value, backoff, stat = tail_bound(self, values, censored, weights, details)
        details.update(backoff=backoff or None)
        raw = max(stat_value, backoff) + profile.cold_start
        cap = ceiling
        if n_censored == 0 and max(successes) <= default:
            cap = min(ceiling, no_data)
        # Without a single success there is no evidence that this target can
        # be fast: censored samples may only lengthen the deadline.
        low = floor if successes else max(floor, min(no_data, cap))
        seconds = min(max(raw, low), cap)
        if seconds == raw:
            clamp = "none"
        elif raw < low and low > floor:
            clamp = f"no-data default {low:g}s (no success seen yet: timeouts only lengthen)"
        elif raw < floor:
            clamp = f"floor {floor:g}s"
        elif cap < ceiling:
            clamp = f"no-data default {cap:g}s (no timeout seen, every start within it)"
        else:
            clamp = f"ceiling {ceiling:g}s"
        details.update(raw=raw, clamp=clamp, explore=False)
        if n >= min_samples and successes:
            explored = exploration(
                self,
                values,
                censored,
                weights,
                seconds,
                floor,
                min(no_data, cap),
                ready[-1],
                details,
            )
            if explored is not None:
                seconds, text = explored
                stat += text
                details["explore"] = True
        attempt = attempt_deadline(self, history, seconds, floor, profile, min_samples, details)
        source: TimeoutSource = "default" if n < min_samples and seconds == no_data else "adaptive"
        head = source
        explanation = (
            f"{head} {seconds:.3g}s from {_plural(n, 'ready sample')} ({n_censored} censored, "
            f"n_eff {n_eff:.0f}): {stat}{allowance}; clamp: {clamp}"
        )
        return TimeoutDecision(
            seconds=seconds,
            source=source,
            explanation=explanation,
            attempt_seconds=attempt,
            details=details,
        )

    def spec(self) -> dict[str, object]:
        """The constructor arguments (what ``smd history`` needs to rebuild this policy)."""
        out: dict[str, object] = {"type": "adaptive"}
        for name in ("default", "floor", "ceiling", "min_samples"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.profile is not None:
            out["profile"] = self.profile.name
        for name in _ESTIMATOR_PARAMETERS:
            out[name] = getattr(self, name)
        return out

    def __repr__(self) -> str:
        parts = [
            f"{k}={v!r}"
            for k, v in (
                ("default", self.default),
                ("floor", self.floor),
                ("ceiling", self.ceiling),
                ("min_samples", self.min_samples),
                ("profile", self.profile.name if self.profile else None),
            )
            if v is not None
        ]
        return f"AdaptiveTimeout({', '.join(parts)})"
