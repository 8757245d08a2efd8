"""Replay your own data: ``smd history replay [--target T]``.

Each target's recorded ``ready`` series (successes and censored starts,
oldest first) goes through the current policy and through the baselines --
fixed 600 s, 30 s, 5 s and RFC 6298 -- as if each had been in charge from
the first recorded start. Before each start a policy gives a deadline ``D``
from what it has learned so far (its own outcomes, not the recorded ones),
then:

- a recorded success after ``L`` seconds: ready when ``L <= D`` (the policy
  learns ``L``); a **false failure** when ``L > D`` (the policy learns only
  "at least ``D``", a censored sample, as a real run would);
- a recorded censored start ("not ready after ``T``": a dead database, or
  one slower than the deadline then in force): the policy would have waited
  ``D``, its **detection** time, and learns "at least ``D``". When
  ``D <= T`` that is exactly what would have happened. When ``D > T`` the
  record says nothing beyond ``T``: the start might have become ready
  between ``T`` and ``D``. The rule is to count it as not ready by ``D``
  (``D`` waited, "at least ``D``" learned: an upper bound on the wait), and
  to report how many starts rest on that rule as ``unknown``.

The **current policy** is the one the target's phase recorded: its
adaptive parameters, its fixed deadline, or (a phase without a timeout)
the settings' ``phase_timeout``. For a target recorded without one (history
written by another store) or with a custom policy smd cannot rebuild, it is
:class:`~smd.timeouts.AdaptiveTimeout` with its default parameters. Either
way deadlines go through :func:`smd.timeouts.phase_timeout` with the
settings' bounds for the target's environment, as ``smd run`` computes
them, on a clock that reads each sample's recorded time (so a wall-time
half-life decays as it did). Failure samples (bad password, ...) and
attempt latencies are not replayed: they say nothing about how long
becoming ready takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from smd._adaptive import AdaptiveTimeout
from smd._deadline import phase_timeout, policy_from_spec
from smd._encode import encode
from smd._history_file import safe_key
from smd._rfc6298 import Rfc6298Timeout
from smd._samples import DEFAULT_BOUND, Sample, TimingHistory
from smd._settings import Environment
from smd._store import HistoryStore, TargetInfo, split_target
from smd._timeout_base import FixedTimeout, TimeoutPolicy
from smd.clock import ManualClock
from smd.exceptions import UsageError

if TYPE_CHECKING:
    from smd._settings import Settings

__all__ = ["BASELINES", "PolicyFigures", "TargetReplay", "render_replay", "replay", "replay_store"]

_SAME = "the same deadline at every start"
#: The baselines every replay shows beside the current policy: 600 s (what
#: the original system shipped), 30 s and 5 s (common hand-picked values),
#: and RFC 6298 (what a careful engineer builds without smd).
_BASELINES: Final[Mapping[str, tuple[Callable[[], TimeoutPolicy], str]]] = MappingProxyType(
    {
        "fixed 600s": (lambda: FixedTimeout(600.0), _SAME),
        "fixed 30s": (lambda: FixedTimeout(30.0), _SAME),
        "fixed 5s": (lambda: FixedTimeout(5.0), _SAME),
        "RFC 6298": (Rfc6298Timeout, "SRTT + 4 RTTVAR, 1 s to 60 s, doubled on a timeout"),
    }
)
BASELINES: Final = tuple(_BASELINES)

Deadline = Callable[[TimingHistory], float]


@dataclass(frozen=True, slots=True)
class PolicyFigures:
    """One policy over one target's recorded starts (see the module docstring).

    ``false_failure_rate`` is over recorded successes, ``mean_detection``
    over recorded censored starts (``unknown`` of which rest on the rule for
    a deadline past the recorded wait), ``mean_deadline`` over every start;
    ``None`` where there is nothing to average.
    """

    policy: str
    description: str
    starts: int
    successes: int
    false_failures: int
    censored: int
    unknown: int
    mean_detection: float | None
    mean_deadline: float | None

    @property
    def false_failure_rate(self) -> float | None:
        return self.false_failures / self.successes if self.successes else None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = encode(self)
        data["false_failure_rate"] = encode(self.false_failure_rate)
        return data


@dataclass(frozen=True, slots=True)
class TargetReplay:
    """Every policy over one target, the current one first."""

    target: str
    environment: str | None
    starts: int
    successes: int
    censored: int
    policies: tuple[PolicyFigures, ...]

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = encode(self)
        data["policies"] = [p.to_dict() for p in self.policies]
        return data


def replay(
    policy: str, description: str, deadline: Deadline, ready: Sequence[Sample], clock: ManualClock
) -> PolicyFigures:
    """``ready`` (oldest first) through one policy: ``deadline(history)`` before each start."""
    history = TimingHistory(bound=DEFAULT_BOUND, clock=clock)
    false_failures = unknown = 0
    deadlines: list[float] = []
    detections: list[float] = []
    for sample in ready:
        clock.advance(max(0.0, sample.at - clock.wall()))
        d = deadline(history)
        deadlines.append(d)
        seconds = float(sample.seconds or 0.0)
        if not sample.censored and seconds <= d:
            history.record_success(seconds, at=sample.at)
            continue
        if sample.censored:
            detections.append(d)
            unknown += d > seconds
        else:
            false_failures += 1
        history.record_timeout(d, at=sample.at)
    return PolicyFigures(
        policy=policy,
        description=description,
        starts=len(ready),
        successes=sum(1 for s in ready if not s.censored),
        false_failures=false_failures,
        censored=len(detections),
        unknown=unknown,
        mean_detection=sum(detections) / len(detections) if detections else None,
        mean_deadline=sum(deadlines) / len(deadlines) if deadlines else None,
    )


def _current(info: TargetInfo, clock: ManualClock) -> tuple[TimeoutPolicy | None, str]:
    """The policy the target's phase uses (``None``: the settings' default), on the replay's clock."""
    if not info.policy:  # nothing recorded (imported, or written by a store of its own)
        return AdaptiveTimeout(clock=clock), "adaptive timeout, default parameters"
    recorded = policy_from_spec(info.policy)
    if recorded is None:
        return None, "the settings' phase_timeout"
    if isinstance(recorded, FixedTimeout):
        return recorded, f"the phase's fixed {recorded.seconds:g}s"
    if isinstance(recorded, AdaptiveTimeout):
        recorded.clock = clock  # built for this replay alone: no one else holds it
        return recorded, "the phase's adaptive timeout"
    # A custom policy cannot be rebuilt here: the adaptive one stands in.
    return AdaptiveTimeout(clock=clock), "adaptive timeout, default parameters"


def policy_deadline(policy: TimeoutPolicy) -> Deadline:
    """A baseline's deadline: the policy alone, without the environment's bounds (as run by hand)."""

    def deadline(history: TimingHistory) -> float:
        return policy.compute(history).seconds

    return deadline


def replay_target(
    target: str, ready: Sequence[Sample], info: TargetInfo, settings: Settings
) -> TargetReplay:
    """Every policy over one target's recorded ``ready`` series."""
    ready = sorted(ready, key=lambda s: s.at)
    _, env = split_target(target)
    env = info.environment or env
    try:
        environment = Environment.parse(env) if env else settings.environment
    except ValueError:
        environment = settings.environment
    start = ready[0].at if ready else 0.0
    figures = []
    clock = ManualClock(start)
    current, description = _current(info, clock)
    figures.append(
        replay(
            "current",
            description,
            lambda h: phase_timeout(current, h, settings, environment=environment).seconds,
            ready,
            clock,
        )
    )
    for name, (make, about) in _BASELINES.items():
        clock = ManualClock(start)
        figures.append(replay(name, about, policy_deadline(make()), ready, clock))
    return TargetReplay(
        target=safe_key(target),
        environment=env,
        starts=len(ready),
        successes=sum(1 for s in ready if not s.censored),
        censored=sum(1 for s in ready if s.censored),
        policies=tuple(figures),
    )


def replay_store(
    store: HistoryStore, settings: Settings, *, targets: Iterable[str] | None = None
) -> list[TargetReplay]:
    """:func:`replay_target` for every target of ``store`` (or ``targets``), sorted.

    An unknown name in ``targets`` is a :class:`~smd.exceptions.UsageError`
    listing the known ones.
    """
    known = store.targets()
    # A key is shown masked (safe_key): the masked form selects it too.
    shown = {safe_key(k): k for k in known}
    names = sorted(known) if targets is None else [shown.get(t, t) for t in dict.fromkeys(targets)]
    missing = [n for n in names if n not in known]
    if missing:
        listed = ", ".join(repr(safe_key(k)) for k in known) or "none (no history recorded yet)"
        raise UsageError(f"unknown --target {missing[0]!r}; known targets: {listed}")
    histories = store.load_many(names)
    return [
        replay_target(n, histories[n].ready if n in histories else (), known[n], settings)
        for n in names
    ]


# -- text ---------------------------------------------------------------------------


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.3g}ms" if x < 1 else f"{x:.3g}s"


def _row(p: PolicyFigures) -> str:
    name = p.policy if p.policy != "current" else f"current ({p.description})"
    rate = "" if p.false_failure_rate is None else f" ({p.false_failure_rate * 100:.1f}%)"
    ff = f"{p.false_failures}/{p.successes}{rate}"
    detection = _s(p.mean_detection)
    if p.unknown:
        detection += f" ({p.unknown} past the record)"
    return f"  {name:<52} {ff:<16} {detection:<24} {_s(p.mean_deadline)}"


def render_replay(replays: Sequence[TargetReplay]) -> str:
    """The human view of :func:`replay_store` (what ``smd history replay`` prints)."""
    if not replays:
        return "No history recorded yet: nothing to replay."
    blocks = []
    for r in replays:
        lines = [r.target]
        if not r.starts:
            lines.append("  nothing to replay: no recorded start (no ready sample)")
            blocks.append("\n".join(lines))
            continue
        lines.append(
            f"  replayed {r.starts} recorded start{'s' if r.starts != 1 else ''}: "
            f"{r.successes} ready, {r.censored} censored (not ready when given up)"
        )
        head = f"  {'policy':<52} {'false failures':<16} {'mean detection':<24} mean deadline"
        lines += [head, *(_row(p) for p in r.policies)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
