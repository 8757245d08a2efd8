"""What has been learned, per target: the data behind ``smd history``.

:func:`summarize` reads every target of a :class:`~smd.HistoryStore` and
returns one frozen :class:`TargetSummary` each: sample counts per series,
quantiles of the uncensored ``ready`` and ``attempt`` series, censored and
failed starts, the success rate (raw, and decayed with its Wilson lower
bound, exactly as the conditional bypass mode measures it), the consecutive
degraded startups, and the timeout a policy would use now, with its
explanation. :func:`render_text` is the human rendering; ``to_dict`` the
JSON one.

A target names one dependency of one startup in one environment
(``api/postgres://db.internal:5432/app@production``); the timeout shown is
what :func:`smd.timeouts.phase_timeout` computes with the policy the phase
recorded, the same number ``smd plan`` and ``smd run`` use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smd._deadline import phase_timeout, policy_from_spec
from smd._encode import SKIP, TIMESTAMP, encode, iso
from smd._history_file import safe_key
from smd._redact import redact
from smd._samples import Sample, Series, TimingHistory
from smd._settings import Environment, Settings
from smd._stats import DEFAULT_CONFIDENCE, SuccessRate, quantile, success_rate
from smd._store import HistoryStore, TargetInfo, split_target
from smd._timeout_base import TimeoutDecision
from smd.clock import Clock, SystemClock

__all__ = [
    "QUANTILES",
    "SeriesStats",
    "TargetSummary",
    "render_text",
    "summarize",
    "summarize_history",
]

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


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
        data: dict[str, object] = encode(
            {
                "series": self.series,
                "count": self.count,
                "uncensored": self.uncensored,
                "censored": self.censored,
                "quantiles": {_label(q): v for q, v in self.quantiles},
                "min": self.minimum,
                "max": self.maximum,
            }
        )
        return data


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """Everything ``smd history`` shows about one target.

    ``timeout`` is what the phase's own timeout policy (recorded with the
    target) computes from this history now, through the same function the
    run uses; ``timeout_error`` says why it is missing when the policy cannot
    be rebuilt (a custom policy) or failed (the view never raises for one target).
    """

    target: str
    dependency: str
    environment: str | None
    counts: Mapping[str, int]
    ready: SeriesStats
    attempt: SeriesStats
    failures: Mapping[str, int]
    success: SuccessRate
    consecutive_degraded: int
    first_at: float | None = field(metadata=TIMESTAMP)
    last_at: float | None = field(metadata=TIMESTAMP)
    total: int
    startup: str = ""
    phase: str = ""
    timeout: TimeoutDecision | None = None
    timeout_error: str | None = None
    history: TimingHistory | None = field(default=None, repr=False, compare=False, metadata=SKIP)

    @property
    def censored(self) -> int:
        """Starts that timed out (censored ``ready`` samples)."""
        return self.ready.censored

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rounded and redacted)."""
        data: dict[str, object] = encode(self)
        data["censored"] = self.censored
        data["ready"] = self.ready.to_dict()
        data["attempt"] = self.attempt.to_dict()
        return data


def summarize_history(
    target: str,
    history: TimingHistory,
    *,
    now: float,
    info: TargetInfo | None = None,
    settings: Settings | None = None,
    half_life_hours: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> TargetSummary:
    """The summary of one target's history (no store involved).

    With ``settings``, the timeout is computed with the policy recorded in
    ``info`` (``{"type": "default"}`` when none was recorded: the settings'
    ``phase_timeout``) and the target's environment bounds.
    """
    info = info or TargetInfo(target)
    dependency, env = split_target(target)
    # Masked as the engine masks a dependency: a key written through a store's
    # API may hold a secret (the redaction rule leaves "startup/scheme://" alone).
    dependency = redact(info.dependency) if info.dependency else safe_key(dependency)
    env = info.environment or env
    samples = history.all_samples()
    failures: dict[str, int] = {}
    for s in history.failures:
        key = s.kind.value if s.kind else "unknown"
        failures[key] = failures.get(key, 0) + 1
    decision: TimeoutDecision | None = None
    error: str | None = None
    if settings is not None:
        policy = policy_from_spec(info.policy or {"type": "default"})
        if isinstance(policy, str):
            error = policy
        else:
            try:
                environment = Environment.parse(env) if env else settings.environment
            except ValueError:
                environment = settings.environment
            decision = phase_timeout(policy, history, settings, environment=environment)
    hl = half_life_hours
    if hl is None:
        hl = settings.bypass.success_half_life_hours if settings is not None else 72.0
    return TargetSummary(
        target=safe_key(target),
        dependency=dependency,
        environment=env,
        counts={s.value: len(history.series(s)) for s in Series},
        ready=SeriesStats.of(Series.READY, history.ready),
        attempt=SeriesStats.of(Series.ATTEMPT, history.attempts),
        failures=dict(sorted(failures.items())),
        success=success_rate(history, now, hl, confidence=confidence),
        consecutive_degraded=history.consecutive_bypasses(),
        first_at=samples[0].at if samples else None,
        last_at=samples[-1].at if samples else None,
        total=len(samples),
        startup=info.startup,
        phase=info.phase,
        timeout=decision,
        timeout_error=error,
        history=history,
    )


def summarize(
    store: HistoryStore,
    settings: Settings | None = None,
    *,
    targets: Iterable[str] | None = None,
    clock: Clock | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[TargetSummary]:
    """One :class:`TargetSummary` per target, sorted by target, in one batched read.

    ``settings`` give the environment bounds and the success-rate half-life
    (``None``: no timeout is computed). ``targets`` restricts the view
    (default: every target the store knows).
    """
    clock = clock or SystemClock()
    now = clock.wall()
    known = store.targets()
    names = sorted(set(known if targets is None else targets))
    histories = dict(store.load_many(names, clock=clock))
    for name in names:
        # A third-party store may leave out a target it knows nothing about.
        histories.setdefault(name, TimingHistory(clock=clock))
    return [
        summarize_history(
            name,
            histories[name],
            now=now,
            info=known.get(name),
            settings=settings,
            confidence=confidence,
        )
        for name in names
    ]


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
    owner = f"  (startup {s.startup}, phase {s.phase})" if s.startup else ""
    lines = [f"{s.dependency}{env}{owner}"]
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
    lines.append(f"  last sample  {iso(s.last_at) or '-'}")
    return lines


def render_text(summaries: Sequence[TargetSummary]) -> str:
    """The human view of :func:`summarize`'s result (what ``smd history`` prints)."""
    if not summaries:
        return "No history recorded yet: nothing has been learned about any target."
    blocks = ["\n".join(_render_one(s)) for s in summaries]
    return "\n\n".join(blocks)
