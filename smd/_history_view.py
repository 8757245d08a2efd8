"""What has been learned, per target: the data behind ``smd history``.

:func:`summarize` reads every target of a :class:`~smd.HistoryStore` and
returns one frozen :class:`TargetSummary` each: sample counts per series,
quantiles of the uncensored ``ready`` and ``attempt`` series, censored and
failed starts, the success rate (raw, and decayed with its Wilson lower
bound, exactly as the conditional bypass mode measures it), the consecutive
degraded startups, and the timeout a policy would use now, with its
explanation. :func:`render_text` is the human rendering; ``to_dict`` the
JSON one.

A target names one dependency in one environment, ``<dependency>@<env>``
(``postgres://db.internal:5432/app@production``, ``phase:cache@staging``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from smd._clock import Clock, SystemClock
from smd._matrix import DEFAULT_CONFIDENCE, SuccessRate, success_rate
from smd._samples import Sample, Series, TimingHistory
from smd._store import HistoryStore
from smd._timeout_base import TimeoutContext, TimeoutDecision, TimeoutPolicy

__all__ = [
    "QUANTILES",
    "SeriesStats",
    "TargetSummary",
    "quantile",
    "render_text",
    "split_target",
    "summarize",
    "summarize_history",
]

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)

# An environment suffix is a plain word: "postgres://u@h/db" has an '@' but
# what follows it is a host, not an environment.
_ENV_RE = re.compile(r"[A-Za-z0-9_.-]+")


def split_target(target: str) -> tuple[str, str | None]:
    """``"<dependency>@<env>"`` as ``(dependency, env)``; ``env`` is None when absent."""
    dependency, sep, env = target.rpartition("@")
    if sep and dependency and _ENV_RE.fullmatch(env):
        return dependency, env
    return target, None


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


def _label(q: float) -> str:
    return f"p{q * 100:g}"


@dataclass(frozen=True, slots=True)
class SeriesStats:
    """One latency series: how many samples, how many censored, and quantiles.

    Quantiles are over the *uncensored* samples only (a censored sample is
    "at least T": its value is unknown); ``censored`` says how many were left
    out, which is why the adaptive timeout, not these figures, sets deadlines.
    """

    series: str
    count: int
    censored: int
    quantiles: tuple[tuple[float, float], ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def of(cls, series: Series, samples: Iterable[Sample]) -> SeriesStats:
        """Statistics of one series' samples."""
        samples = list(samples)
        values = [s.seconds for s in samples if not s.censored and s.seconds is not None]
        qs = tuple((q, v) for q in QUANTILES if (v := quantile(values, q)) is not None)
        return cls(
            series=series.value,
            count=len(samples),
            censored=sum(1 for s in samples if s.censored),
            quantiles=qs,
            minimum=min(values, default=None),
            maximum=max(values, default=None),
        )

    @property
    def uncensored(self) -> int:
        return self.count - self.censored

    def get(self, q: float) -> float | None:
        """The ``q`` quantile if computed (one of :data:`QUANTILES`)."""
        return next((v for k, v in self.quantiles if k == q), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "series": self.series,
            "count": self.count,
            "uncensored": self.uncensored,
            "censored": self.censored,
            "quantiles": {_label(q): round(v, 6) for q, v in self.quantiles},
            "min": None if self.minimum is None else round(self.minimum, 6),
            "max": None if self.maximum is None else round(self.maximum, 6),
        }


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """Everything ``smd history`` shows about one target.

    ``timeout`` is what the target's timeout policy computes from this
    history now; ``timeout_error`` says why it is missing if the policy
    could not be built or failed (the view never raises for one target).
    """

    target: str
    dependency: str
    environment: str | None
    counts: dict[str, int]
    ready: SeriesStats
    attempt: SeriesStats
    failures: dict[str, int]
    success: SuccessRate
    consecutive_degraded: int
    first_at: float | None
    last_at: float | None
    total: int
    timeout: TimeoutDecision | None = None
    timeout_error: str | None = None

    @property
    def censored(self) -> int:
        """Starts that timed out (censored ``ready`` samples)."""
        return self.ready.censored

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "target": self.target,
            "dependency": self.dependency,
            "environment": self.environment,
            "samples": dict(self.counts),
            "total_samples": self.total,
            "ready": self.ready.to_dict(),
            "attempt": self.attempt.to_dict(),
            "censored": self.censored,
            "failures": dict(self.failures),
            "success_rate": self.success.to_dict(),
            "consecutive_degraded": self.consecutive_degraded,
            "first_sample_at": _iso(self.first_at),
            "last_sample_at": _iso(self.last_at),
            "timeout": None if self.timeout is None else self.timeout.to_dict(),
            "timeout_error": self.timeout_error,
        }


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summarize_history(
    target: str,
    history: TimingHistory,
    policy: TimeoutPolicy | None = None,
    *,
    now: float,
    context: TimeoutContext | None = None,
    half_life_hours: float = 72.0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> TargetSummary:
    """The summary of one target's history (no store involved)."""
    dependency, env = split_target(target)
    samples = history.all_samples()
    failures: dict[str, int] = {}
    for s in history.failures:
        key = s.kind.value if s.kind else "unknown"
        failures[key] = failures.get(key, 0) + 1
    decision: TimeoutDecision | None = None
    error: str | None = None
    if policy is not None:
        try:
            decision = policy.compute(history, context)
        except Exception as err:  # one bad policy must not hide the others
            error = f"{type(err).__name__}: {err}"
    return TargetSummary(
        target=target,
        dependency=dependency,
        environment=env,
        counts={s.value: len(history.series(s)) for s in Series},
        ready=SeriesStats.of(Series.READY, history.ready),
        attempt=SeriesStats.of(Series.ATTEMPT, history.attempts),
        failures=dict(sorted(failures.items())),
        success=success_rate(history, now, half_life_hours, confidence=confidence),
        consecutive_degraded=history.consecutive_bypasses(),
        first_at=samples[0].at if samples else None,
        last_at=samples[-1].at if samples else None,
        timeout=decision,
        timeout_error=error,
        total=len(samples),
    )


def summarize(
    store: HistoryStore,
    policy_factory: Callable[[str], TimeoutPolicy] | None = None,
    *,
    context_factory: Callable[[str], TimeoutContext | None] | None = None,
    targets: Iterable[str] | None = None,
    clock: Clock | None = None,
    half_life_hours: float = 72.0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[TargetSummary]:
    """One :class:`TargetSummary` per target, sorted by target.

    ``policy_factory(target)`` gives the timeout policy to evaluate for a
    target (``None``: no timeout shown), and ``context_factory(target)`` the
    :class:`~smd.TimeoutContext` passed to its ``compute`` (the target's
    environment bounds and profile; default ``None``). ``targets`` restricts the view
    (default: every target the store knows). ``half_life_hours`` and
    ``confidence`` are the success-rate decay and Wilson confidence
    (pass the bypass settings' values to match what ``conditional`` sees).
    """
    clock = clock or SystemClock()
    now = clock.wall()
    names = sorted(set(store.targets() if targets is None else targets))
    out: list[TargetSummary] = []
    for target in names:
        history = store.load(target, clock=clock)
        policy: TimeoutPolicy | None = None
        context: TimeoutContext | None = None
        error: str | None = None
        try:
            if policy_factory is not None:
                policy = policy_factory(target)
            if context_factory is not None:
                context = context_factory(target)
        except Exception as err:  # one bad target must not hide the others
            policy, error = None, f"{type(err).__name__}: {err}"
        summary = summarize_history(
            target,
            history,
            policy,
            now=now,
            context=context,
            half_life_hours=half_life_hours,
            confidence=confidence,
        )
        if error is not None:
            summary = replace(summary, timeout_error=error)
        out.append(summary)
    return out


# -- text ---------------------------------------------------------------------------


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1:
        return f"{x * 1000:.3g}ms"
    return f"{x:.3g}s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _series_line(stats: SeriesStats) -> str:
    if stats.uncensored == 0:
        return "no uncensored samples"
    qs = "  ".join(f"{_label(q)} {_s(v)}" for q, v in stats.quantiles)
    return f"{qs}  (min {_s(stats.minimum)}, max {_s(stats.maximum)}, n={stats.uncensored})"


def _render_one(s: TargetSummary) -> list[str]:
    env = f"  [{s.environment}]" if s.environment else ""
    lines = [f"{s.dependency}{env}"]
    c = s.counts
    lines.append(
        f"  samples      ready {c.get('ready', 0)} ({s.censored} censored)"
        f" · attempt {c.get('attempt', 0)} · failure {c.get('failure', 0)}"
        f" · bypass {c.get('bypass', 0)}"
    )
    lines.append(f"  ready        {_series_line(s.ready)}")
    lines.append(f"  attempt      {_series_line(s.attempt)}")
    if s.failures:
        kinds = ", ".join(f"{k} {n}" for k, n in s.failures.items())
        lines.append(f"  failures     {kinds}")
    r = s.success
    if r.total == 0:
        lines.append("  success      no starts recorded yet")
    else:
        raw = r.successes / r.total
        lines.append(
            f"  success      {r.successes}/{r.total} starts ({_pct(raw)}); decayed "
            f"{_pct(r.estimate)}, lower bound {_pct(r.lower_bound)} "
            f"(Wilson {r.confidence:.0%}, half-life {r.half_life_hours:g}h, "
            f"effective n {r.effective_n:.3g})"
        )
    lines.append(
        f"  degraded     {s.consecutive_degraded} consecutive degraded startup"
        f"{'' if s.consecutive_degraded == 1 else 's'} since the last success"
    )
    if s.timeout is not None:
        t = s.timeout
        per = "" if t.attempt_seconds is None else f", {_s(t.attempt_seconds)} per attempt"
        lines.append(f"  timeout now  {_s(t.seconds)} ({t.source}{per})")
        lines.append(f"               {t.explanation}")
    elif s.timeout_error is not None:
        lines.append(f"  timeout now  unavailable: {s.timeout_error}")
    lines.append(f"  last sample  {_iso(s.last_at) or '-'}")
    return lines


def render_text(summaries: Sequence[TargetSummary]) -> str:
    """The human view of :func:`summarize`'s result (what ``smd history`` prints)."""
    if not summaries:
        return "No history recorded yet: nothing has been learned about any target."
    blocks = ["\n".join(_render_one(s)) for s in summaries]
    return "\n\n".join(blocks)
