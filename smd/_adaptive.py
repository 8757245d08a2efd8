"""The adaptive timeout: a deadline learned from a target's history.

See :class:`AdaptiveTimeout` for the formula. Everything here is a pure
function of the history (plus the clock, when a wall-time half-life is set),
so a decision can be replayed, explained and tested without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from smd._clock import Clock, SystemClock
from smd._samples import Sample, TimingHistory
from smd._settings import Environment, EnvTimeouts
from smd._timeout_base import TimeoutContext, TimeoutDecision

__all__ = ["INFRASTRUCTURE_PROFILES", "AdaptiveTimeout", "InfrastructureProfile"]


@dataclass(frozen=True, slots=True)
class InfrastructureProfile:
    """Cold-start allowances of a piece of infrastructure between service and database.

    ``cold_start`` seconds are added to the overall deadline (the no-data
    default and the learned value alike) and ``attempt`` seconds to the
    per-attempt deadline, because a cold path can be slower than anything the
    history has seen yet (e.g. the first start after the path scaled to zero).
    These are allowances chosen to cover the documented behaviour, not
    measurements; pass your own profile when you know better.
    """

    name: str
    cold_start: float
    attempt: float
    description: str

    def __post_init__(self) -> None:
        for label, value in (("cold_start", self.cold_start), ("attempt", self.attempt)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"profile {self.name!r}: {label} must be a finite number >= 0")


def _profiles(*profiles: InfrastructureProfile) -> dict[str, InfrastructureProfile]:
    return {p.name: p for p in profiles}


#: The built-in infrastructure profiles, selected with the ``profile`` setting
#: (``SMD_TIMEOUTS__PROFILE``). An explicit input: smd never guesses it.
INFRASTRUCTURE_PROFILES: Mapping[str, InfrastructureProfile] = _profiles(
    InfrastructureProfile("none", 0.0, 0.0, "No allowance: the history is the whole story."),
    InfrastructureProfile(
        "cloudsql-connector",
        5.0,
        3.0,
        "Cloud SQL Auth Proxy or a language connector: the first connection fetches "
        "instance metadata and an ephemeral client certificate from the SQL Admin API "
        "(a few API round trips, slower when the API throttles).",
    ),
    InfrastructureProfile(
        "cloudsql-vpc-connector",
        10.0,
        5.0,
        "Cloud SQL reached from Cloud Run / Cloud Functions through a Serverless VPC "
        "Access connector: the connector's certificate fetch plus the first egress "
        "through a connector that may have scaled in.",
    ),
    InfrastructureProfile(
        "serverless-postgres",
        5.0,
        5.0,
        "A scale-to-zero PostgreSQL compute (e.g. Neon): the first connection wakes the "
        "compute, typically within a few seconds.",
    ),
    InfrastructureProfile(
        "aurora-serverless",
        30.0,
        30.0,
        "Aurora Serverless with auto-pause: a paused cluster resumes on the first "
        "connection, which is held open for tens of seconds meanwhile.",
    ),
    InfrastructureProfile(
        "proxy-sidecar",
        5.0,
        0.0,
        "A database proxy sidecar (cloud-sql-proxy, pgbouncer) starting in the same pod: "
        "connections are refused until it listens.",
    ),
)

# Built-in bounds when neither the constructor nor a context gives them
# (the production defaults of the settings).
_BUILTIN = {"default": 30.0, "floor": 1.0, "ceiling": 120.0}
_BUILTIN_MIN_SAMPLES = 8


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


@dataclass(frozen=True, slots=True)
class _Estimate:
    """What the weighted Kaplan-Meier pass learned from one series."""

    value: float  # the p-quantile of time-to-ready among starts that are not dead
    n: int  # samples in the series
    censored: int
    n_eff: float  # Kish effective size of the uncensored samples
    unknown_mass: float  # KM mass beyond the largest success
    dead_mass: float  # part of it attributed to dead databases
    imputed: bool  # the quantile fell on an imputed (censored x growth) value
    ignored: int  # lone timeouts far beyond every success: taken for dead databases
    observed: float  # the quantile among the successes alone
    largest_success: float | None


def _weights(
    samples: Sequence[Sample], half_life: float, half_life_seconds: float | None, now: float
) -> list[float]:
    n = len(samples)
    out = []
    for i, s in enumerate(samples):
        w = 0.5 ** ((n - 1 - i) / half_life)
        if half_life_seconds is not None:
            w *= 0.5 ** (max(0.0, now - s.at) / half_life_seconds)
        out.append(w)
    return out


def _estimate(
    samples: Sequence[Sample],
    weights: Sequence[float],
    *,
    quantile: float,
    dead_allowance: float,
    growth: float,
    plausible: float,
    refute: int = 3,
) -> _Estimate:
    """Censoring-aware weighted upper quantile (see AdaptiveTimeout's docstring)."""
    total = sum(weights)
    rows = [
        (float(s.seconds or 0.0), s.censored, w / total, i)
        for i, (s, w) in enumerate(zip(samples, weights, strict=True))
    ]
    # Ties: a success at t comes before a timeout at t (the timeout is "at least t").
    rows.sort(key=lambda r: (r[0], r[1]))
    events: list[tuple[float, float]] = []  # (time, KM probability mass)
    surv = 1.0
    at_risk = 1.0
    k = 0
    while k < len(rows):
        t = rows[k][0]
        d = 0.0
        j = k
        while j < len(rows) and rows[j][0] == t and not rows[j][1]:
            d += rows[j][2]
            j += 1
        if d > 0:
            new = surv * (1.0 - d / at_risk) if at_risk > 0 else 0.0
            events.append((t, surv - new))
            surv = new
        # Drop this time's successes and timeouts from the risk set.
        while j < len(rows) and rows[j][0] == t:
            j += 1
        at_risk -= sum(r[2] for r in rows[k:j])
        k = j
    surv = max(surv, 0.0)
    largest = events[-1][0] if events else -math.inf
    # Timeouts still unresolved: no success at or beyond them. Their KM mass
    # (surv) is shared in proportion to weight, the oldest are blamed on
    # dead databases first (up to the allowance); the rest are slow starts
    # whose true value is "at least c": imputed at growth x c.
    # The observed quantile: among the starts seen to succeed.
    seen = sum(m for _t, m in events)
    observed = largest if events else 0.0
    acc = 0.0
    for t, m in events:
        acc += m
        if acc >= quantile * seen - 1e-12:
            observed = t
            break
    beyond = sorted((r for r in rows if r[1] and r[0] >= largest), key=lambda r: r[3])
    beyond_w = sum(r[2] for r in beyond)
    flags = [s.censored for s in samples]
    # successes_after[i]: successes recorded after sample i.
    successes_after = [0] * (len(flags) + 1)
    for i in range(len(flags) - 1, -1, -1):
        successes_after[i] = successes_after[i + 1] + (0 if flags[i] else 1)
    dead_budget = min(surv, dead_allowance)
    dead_mass = 0.0
    ignored = 0
    imputed: list[tuple[float, float]] = []
    last_informative = math.inf
    for value, _c, w, i in beyond:
        mass = surv * w / beyond_w if beyond_w > 0 else 0.0
        # Is this timeout evidence of a slow start (rather than a dead database)?
        # - near: within `plausible` x the observed quantile, a plausible tail;
        # - a run of timeouts: dead databases rarely come in pairs, a slower
        #   regime always does -- until `refute` fast successes follow it;
        # - climbing: at a deadline that was already exploring beyond an
        #   earlier informative timeout (the next step of the back-off).
        near = not events or value <= plausible * observed
        in_run = ((i > 0 and flags[i - 1]) or (i + 1 < len(flags) and flags[i + 1])) and (
            successes_after[i] < refute
        )
        climbing = value > last_informative * 1.001
        if not (near or in_run or climbing):
            dead_mass += mass
            dead_budget += mass
            ignored += 1
            continue
        last_informative = value if last_informative == math.inf else max(last_informative, value)
        take = min(mass, dead_budget - dead_mass)
        dead_mass += take
        if mass - take > 1e-15:
            imputed.append((value * growth, mass - take))
    target = quantile * (1.0 - dead_mass)
    merged = [(t, m, False) for t, m in events] + [(t, m, True) for t, m in imputed]
    merged.sort(key=lambda r: r[0])
    cum = 0.0
    value, was_imputed = (merged[-1][0], merged[-1][2]) if merged else (0.0, False)
    for t, m, imp in merged:
        cum += m
        if cum >= target - 1e-12:
            value, was_imputed = t, imp
            break
    ok_w = [w for (s, w) in zip(samples, weights, strict=True) if not s.censored]
    n_eff = (sum(ok_w) ** 2 / sum(w * w for w in ok_w)) if ok_w else 0.0
    return _Estimate(
        value=value,
        n=len(samples),
        censored=sum(1 for s in samples if s.censored),
        n_eff=n_eff,
        unknown_mass=surv,
        dead_mass=dead_mass,
        imputed=was_imputed,
        ignored=ignored,
        observed=observed,
        largest_success=None if not events else largest,
    )


class AdaptiveTimeout:
    """A deadline learned from history: short when the target is fast, long when it is not.

    Overall deadline (``seconds``), from the ``ready`` series (time from the
    first attempt to the first success; a timed-out start is a *censored*
    sample, "at least T"):

    1. **Too little history** (fewer than ``min_samples`` ready samples):
       the environment's default plus the profile's cold-start allowance,
       source ``"default"``.
    2. **Recency weights.** Sample *i* of *n* (oldest first) weighs
       ``w_i = 2^(-(n-1-i)/half_life)`` (optionally also halved every
       ``half_life_seconds`` of age), so a regime shift takes over within a
       few dozen starts while a bimodal tail is still remembered.
    3. **Weighted Kaplan-Meier.** The survival curve ``S(t)`` of
       time-to-ready uses every sample: a timeout at ``c`` leaves the risk set
       at ``c`` instead of being dropped or read as a success, so timeouts
       *inside* the observed range push the quantile up.
    4. **Dead databases vs slow starts.** A timeout at ``c`` beyond the
       largest success is a start whose true value was never seen: a dead
       database or a slow start, which no process can tell apart. Its KM
       mass (``S`` after the largest success, shared by weight) is judged:

       - a *lone* timeout *far* beyond what has been seen (more than
         ``plausible x`` the quantile of the successes) is a dead database
         and teaches nothing about latency;
       - a timeout that is *near* (a plausible tail), part of a *run* of
         timeouts (dead databases rarely come in pairs, a slower regime
         always does; a run stops counting once ``3`` successes followed
         it), or *climbing* above an earlier such timeout (the next step of
         the exploration) may be a slow start. Up to ``dead_allowance`` of
         that mass (oldest first) is still put down to dead databases; the
         rest is imputed at ``growth x c`` -- explore beyond the deadline
         that was too short, like TCP's back-off.

       So timeouts keep the deadline long *until the real value is seen*
       (then Kaplan-Meier takes over), occasional dead databases do not
       inflate it, and a run of timeouts (a slower regime, rare cold starts
       never seen yet) grows it geometrically up to the ceiling.
    5. **Quantile.** ``q`` = the smallest time where the cumulative mass of
       successes and imputed values reaches ``quantile x (1 - dead mass)``:
       an upper quantile of the time-to-ready of starts that do become ready.
       Because it is a quantile of the whole mixture, a fast body plus rare
       slow cold starts (bimodal latency) yields a deadline that covers the
       cold starts as soon as they are more frequent than ``1 - quantile``.
    6. **Safety multiplier.** ``T = q x margin x (1 + small_n / sqrt(n_eff))``
       where ``n_eff = (sum w)^2 / sum w^2`` over the successes: with few
       effective samples the empirical upper quantile is close to the
       maximum and biased low, so the multiplier is larger.
    7. **Profile and clamps.** ``T += profile.cold_start``, then
       ``T = min(max(T, floor), ceiling)``. If the history holds no timeout
       and every success is within the default, ``T`` is also capped at the
       no-data default: fast healthy history only ever shortens it. With
       no success at all, ``T`` is at least the no-data default: timeouts
       alone only ever lengthen it.

    Per-attempt deadline (``attempt_seconds``), from the ``attempt`` series
    (latencies of single answered attempts; never censored): the same
    weighted quantile, multiplier and profile ``attempt`` allowance, clamped
    to ``[min(floor, seconds), seconds]``. With fewer than ``min_samples``
    attempts it is ``seconds`` (one attempt may use the whole deadline), so
    it is always a number.

    Failures of kind ``configuration`` or ``application`` live in the
    ``failure`` series and never enter either estimate: they teach nothing
    about latency.

    Known limits (measured in the benchmark): shrinking after the target got
    faster takes about ``4 x half_life`` starts (244 at the defaults: the old
    slow samples must weigh less than ``1 - quantile``); a 5% slow mode that
    stops for ~``2 x half_life`` starts (121) is forgotten and costs a few
    false failures to relearn when it comes back; ``dead_allowance`` must exceed the real rate of dead starts
    (with 2% dead starts, 3% works and 2% doubles the detection time).

    ``default``, ``floor``, ``ceiling``, ``min_samples`` and ``profile`` left
    at ``None`` come from the :class:`~smd.timeouts.TimeoutContext` given to
    :meth:`compute` (the environment's settings), else from built-in values
    (default 30 s, floor 1 s, ceiling 120 s, 8 samples, no profile). The
    remaining parameters are the estimator's; their defaults were chosen with
    ``benchmarks/timeout_quality.py``.
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
        quantile: float = 0.99,
        margin: float = 1.25,
        small_n: float = 1.0,
        half_life: float = 64.0,
        half_life_seconds: float | None = None,
        dead_allowance: float = 0.03,
        growth: float = 2.0,
        plausible: float = 3.0,
    ) -> None:
        self.default = _seconds_arg("default", default)
        self.floor = _seconds_arg("floor", floor)
        self.ceiling = _seconds_arg("ceiling", ceiling)
        if self.floor is not None and self.ceiling is not None and self.floor > self.ceiling:
            raise ValueError(f"floor ({self.floor:g}s) is above ceiling ({self.ceiling:g}s)")
        if min_samples is not None and (isinstance(min_samples, bool) or min_samples < 1):
            raise ValueError(f"min_samples must be an integer >= 1, got {min_samples!r}")
        self.min_samples = min_samples
        self.profile = None if profile is None else _resolve_profile(profile)
        self.clock: Clock = clock or SystemClock()
        if not 0.5 <= quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile!r}")
        if not 0 <= dead_allowance < 1:
            raise ValueError(f"dead_allowance must be in [0, 1), got {dead_allowance!r}")
        for name, value, low in (
            ("margin", margin, 1.0),
            ("growth", growth, 1.0),
            ("plausible", plausible, 1.0),
        ):
            if not math.isfinite(value) or value < low:
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        if not math.isfinite(small_n) or small_n < 0:
            raise ValueError(f"small_n must be a finite number >= 0, got {small_n!r}")
        if not math.isfinite(half_life) or half_life <= 0:
            raise ValueError(f"half_life must be a positive number of samples, got {half_life!r}")
        self.half_life_seconds = _seconds_arg("half_life_seconds", half_life_seconds)
        self.quantile = quantile
        self.margin = margin
        self.small_n = small_n
        self.half_life = half_life
        self.dead_allowance = dead_allowance
        self.growth = growth
        self.plausible = plausible

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
        details: dict[str, object] = {
            "environment": env,
            "samples": len(ready),
            "censored": sum(1 for s in ready if s.censored),
            "min_samples": min_samples,
            "default": default,
            "floor": floor,
            "ceiling": ceiling,
            "profile": profile.name,
            "profile_allowance": profile.cold_start,
        }
        if len(ready) < min_samples:
            attempt = self._attempt(history, no_data, floor, profile, min_samples, details)
            details.update(statistic="none", raw=None, clamp="none")
            return TimeoutDecision(
                seconds=no_data,
                source="default",
                explanation=(
                    f"default {no_data:g}s: {len(ready)} ready sample"
                    f"{'' if len(ready) == 1 else 's'} < min {min_samples} "
                    f"({env} default {default:g}s{allowance})"
                ),
                attempt_seconds=attempt,
                details=details,
            )
        now = self.clock.wall()
        weights = _weights(ready, self.half_life, self.half_life_seconds, now)
        est = _estimate(
            ready,
            weights,
            quantile=self.quantile,
            dead_allowance=self.dead_allowance,
            growth=self.growth,
            plausible=self.plausible,
        )
        mult = (
            self.margin * (1.0 + self.small_n / math.sqrt(est.n_eff))
            if est.n_eff
            else (self.margin * (1.0 + self.small_n))
        )
        raw = est.value * mult + profile.cold_start
        cap = ceiling
        fast_only = est.censored == 0 and (est.largest_success or 0.0) <= default
        if fast_only:
            cap = min(ceiling, no_data)
        # Without a single success there is no evidence that this target can
        # be fast: censored samples may only lengthen the deadline.
        low = floor if est.largest_success is not None else max(floor, min(no_data, cap))
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
        qname = f"q{self.quantile * 100:g}"
        stat = f"weighted Kaplan-Meier {qname}" + (
            f" (imputed {self.growth:g}x an unresolved timeout)" if est.imputed else ""
        )
        details.update(
            statistic=stat,
            quantile=self.quantile,
            estimate=est.value,
            multiplier=mult,
            n_eff=est.n_eff,
            unknown_mass=est.unknown_mass,
            dead_mass=est.dead_mass,
            imputed=est.imputed,
            dead_timeouts=est.ignored,
            observed_quantile=est.observed,
            raw=raw,
            clamp=clamp,
        )
        attempt = self._attempt(history, seconds, floor, profile, min_samples, details)
        basis = f"{stat} {est.value:.3g}s x {mult:.2f}"
        if est.ignored:
            basis += f" ({est.ignored} lone far timeout{'s' if est.ignored > 1 else ''} taken for a dead database)"
        explanation = (
            f"adaptive {seconds:.3g}s from {est.n} ready samples ({est.censored} censored, "
            f"n_eff {est.n_eff:.0f}): {basis}{allowance} = {raw:.3g}s; clamp: {clamp}"
        )
        return TimeoutDecision(
            seconds=seconds,
            source="adaptive",
            explanation=explanation,
            attempt_seconds=attempt,
            details=details,
        )

    def _attempt(
        self,
        history: TimingHistory,
        seconds: float,
        floor: float,
        profile: InfrastructureProfile,
        min_samples: int,
        details: dict[str, object],
    ) -> float:
        attempts = history.attempts
        details["attempt_samples"] = len(attempts)
        if len(attempts) < min_samples:
            details["attempt_statistic"] = "none (whole deadline per attempt)"
            return seconds
        weights = _weights(attempts, self.half_life, self.half_life_seconds, self.clock.wall())
        est = _estimate(
            attempts,
            weights,
            quantile=self.quantile,
            dead_allowance=0.0,
            growth=self.growth,
            plausible=self.plausible,
        )
        mult = self.margin * (1.0 + self.small_n / math.sqrt(est.n_eff))
        raw = est.value * mult + profile.attempt
        value = min(max(raw, min(floor, seconds)), seconds)
        details["attempt_statistic"] = f"weighted q{self.quantile * 100:g} {est.value:.3g}s"
        details["attempt_raw"] = raw
        return value

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


def _resolve_profile(profile: str | InfrastructureProfile) -> InfrastructureProfile:
    if isinstance(profile, InfrastructureProfile):
        return profile
    key = str(profile).strip().lower()
    try:
        return INFRASTRUCTURE_PROFILES[key]
    except KeyError:
        accepted = ", ".join(INFRASTRUCTURE_PROFILES)
        raise ValueError(
            f"unknown infrastructure profile {profile!r}; accepted: {accepted}"
        ) from None
