"""The dashboard's data: per target, every recorded start and the deadline replayed for it.

See :mod:`smd._dashboard` for how the deadline over time is replayed.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smd._deadline import phase_timeout, policy_from_spec
from smd._history_view import TargetSummary
from smd._samples import Sample, Series, TimingHistory
from smd._settings import Environment, Settings
from smd._store import TargetInfo
from smd.clock import ManualClock

__all__ = ["Start", "TargetView", "replay", "target_views"]


@dataclass(frozen=True, slots=True)
class Start:
    """One recorded start of a target and the deadline replayed for it.

    ``outcome`` is ``ready`` (became ready after ``seconds``), ``censored``
    (gave up after ``seconds``: at least that long) or ``failure`` (failed
    for another reason, ``kind``). ``deadline`` is ``None`` when the policy
    cannot be rebuilt.
    """

    at: float
    outcome: str
    seconds: float | None
    kind: str | None
    deadline: float | None
    source: str | None


@dataclass(frozen=True, slots=True)
class TargetView:
    """What the page shows for one target."""

    summary: Mapping[str, Any]
    starts: tuple[Start, ...]
    bypasses: tuple[float, ...]
    now: float
    replay_error: str | None = None


def _outcome(sample: Sample) -> str:
    if sample.series is Series.FAILURE:
        return "failure"
    return "censored" if sample.censored else "ready"


def replay(
    history: TimingHistory,
    info: TargetInfo | None,
    settings: Settings,
    environment: Environment | None = None,
) -> tuple[list[Start], str | None]:
    """Every start of ``history`` with the deadline its policy gives it from the history before it.

    A start began ``seconds`` before its sample was recorded (its own attempts
    are after that), so the prefix is every sample recorded before then.
    Returns the starts and why no deadline could be replayed (or ``None``).
    """
    spec = dict(info.policy) if info is not None and info.policy else {"type": "default"}
    policy = policy_from_spec(spec)
    error = policy if isinstance(policy, str) else None
    samples = history.all_samples()
    ats = [s.at for s in samples]
    starts: list[Start] = []
    for sample in samples:
        if sample.series not in (Series.READY, Series.FAILURE):
            continue
        began = sample.at - (sample.seconds or 0.0)
        deadline: float | None = None
        source: str | None = None
        if not isinstance(policy, str):
            clock = ManualClock(start=began)
            if policy is not None and hasattr(policy, "clock"):
                policy.clock = clock  # recency weights as of that start
            prefix = TimingHistory(
                samples[: bisect.bisect_left(ats, began)], bound=history.bound, clock=clock
            )
            decision = phase_timeout(policy, prefix, settings, environment=environment)
            deadline, source = decision.seconds, decision.source
        starts.append(
            Start(
                at=sample.at,
                outcome=_outcome(sample),
                seconds=sample.seconds,
                kind=sample.kind.value if sample.kind is not None else None,
                deadline=deadline,
                source=source,
            )
        )
    return starts, error


def _environment(name: str | None, settings: Settings) -> Environment:
    try:
        return Environment.parse(name) if name else settings.environment
    except ValueError:
        return settings.environment


def target_views(
    summaries: Sequence[TargetSummary],
    infos: Mapping[str, TargetInfo],
    settings: Settings,
    *,
    now: float,
) -> list[TargetView]:
    """One :class:`TargetView` per summary (from :func:`smd.history.summarize`)."""
    views = []
    for summary in summaries:
        history = summary.history or TimingHistory()
        starts, error = replay(
            history,
            infos.get(summary.target),
            settings,
            _environment(summary.environment, settings),
        )
        views.append(
            TargetView(
                summary=summary.to_dict(),
                starts=tuple(starts),
                bypasses=tuple(s.at for s in history.bypasses),
                now=now,
                replay_error=error,
            )
        )
    return views
