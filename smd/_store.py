"""The history-store plug point and an in-memory implementation.

Stores are synchronous (SQLite is); async callers run them in a worker
thread. A store must never be able to crash startup: implementations turn
their own trouble into a warning and carry on.

A *target key* names one dependency of one startup in one environment:
``<startup>/<dependency>@<environment>`` (``api/postgres://db:5432/app@production``,
``api/phase:cache@staging``). :class:`TargetInfo` says what is known about
it besides its samples: which startup and phase record it, and the timeout
policy they use (so ``smd history`` computes the same deadline the run would).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smd._failures import FailureKind
from smd._samples import DEFAULT_BOUND, Sample, Series, TimingHistory

if TYPE_CHECKING:
    from smd.clock import Clock

__all__ = [
    "HistoryStore",
    "MemoryHistoryStore",
    "StoreConveniences",
    "TargetInfo",
    "sample_from_row",
    "split_target",
    "storable_batches",
    "target_key",
    "with_memory",
]

# An environment suffix is a plain word: "postgres://u@h/db" has an '@' but
# what follows it is a host, not an environment.
_ENV_RE = re.compile(r"[A-Za-z0-9_.-]+")


def target_key(startup: str, dependency: str, environment: str) -> str:
    """The history key of ``dependency`` in ``startup`` and ``environment``."""
    return f"{startup}/{dependency}@{environment}"


def split_target(key: str) -> tuple[str, str | None]:
    """``(rest, environment)``: the environment suffix of a key, if it has one."""
    rest, sep, env = key.rpartition("@")
    if sep and rest and _ENV_RE.fullmatch(env):
        return rest, env
    return key, None


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What a store knows about a target besides its samples.

    Keys are opaque to readers: ``startup``, ``dependency`` and
    ``environment`` say what a key names (empty when unknown, e.g. imported
    history), ``phase`` which phase records it, ``policy`` its timeout
    policy's spec (see :func:`smd.timeouts.policy_spec`).
    """

    target: str
    startup: str = ""
    dependency: str = ""
    environment: str = ""
    phase: str = ""
    policy: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.policy, MappingProxyType):
            object.__setattr__(self, "policy", MappingProxyType(dict(self.policy)))


@runtime_checkable
class HistoryStore(Protocol):
    """Persists samples per target across restarts (SQLite, PostgreSQL, memory)."""

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        """The histories of ``targets`` in one read (empty where nothing is known)."""
        ...

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        """Add samples (and what is known about their targets) in one write,
        keeping each (target, series) bounded."""
        ...

    def targets(self) -> dict[str, TargetInfo]:
        """Every target the store knows, sorted by key."""
        ...


class StoreConveniences:
    """One-target forms of the protocol's batch methods (for scripts and tests)."""

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        raise NotImplementedError

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        raise NotImplementedError

    def load(self, target: str, *, clock: Clock | None = None) -> TimingHistory:
        """The history of one target."""
        return self.load_many([target], clock=clock)[target]

    def append(self, target: str, samples: Sequence[Sample]) -> None:
        """Add samples to one target."""
        self.append_many({target: samples})


class MemoryHistoryStore(StoreConveniences):
    """A store that lives as long as the process (tests, replays, no persistence)."""

    def __init__(self, bound: int = DEFAULT_BOUND) -> None:
        self.bound = bound
        self._data: dict[str, list[Sample]] = {}
        self._info: dict[str, TargetInfo] = {}
        self._lock = threading.Lock()

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        with self._lock:
            return {
                t: TimingHistory(list(self._data.get(t, ())), bound=self.bound, clock=clock)
                for t in targets
            }

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        with self._lock:
            for target, samples in batches.items():
                if not samples:
                    continue
                merged = TimingHistory([*self._data.get(target, ()), *samples], bound=self.bound)
                self._data[target] = merged.all_samples()
            for target, meta in (info or {}).items():
                if target in self._data:
                    self._info[target] = meta

    def targets(self) -> dict[str, TargetInfo]:
        with self._lock:
            return {t: self._info.get(t, TargetInfo(t)) for t in sorted(self._data)}


# -- What every persistent store shares -------------------------------------------


def _storable(sample: Sample) -> bool:
    # NaN or infinite times cannot be ordered or bounded: never written.
    if not math.isfinite(sample.at):
        return False
    return sample.seconds is None or (math.isfinite(sample.seconds) and sample.seconds >= 0)


def storable_batches(
    batches: Mapping[str, Sequence[Sample]], info: Mapping[str, TargetInfo] | None
) -> tuple[dict[str, list[Sample]], dict[str, TargetInfo]]:
    """The samples a store may write, per target in key order (a fixed order:
    concurrent writers then lock targets in the same order), and the infos of
    the targets that have some."""
    rows = {t: [s for s in samples if _storable(s)] for t, samples in batches.items()}
    rows = {t: r for t, r in sorted(rows.items()) if r}
    return rows, {t: i for t, i in (info or {}).items() if t in rows}


def sample_from_row(
    series: object, at: object, seconds: object, censored: object, kind: object
) -> Sample | None:
    """A stored row as a Sample, or None for a row this version cannot read
    (a series or kind added by a newer smd, a time no store should hold):
    the row is skipped, the rest of the history kept."""
    try:
        at_f = float(at)  # type: ignore[arg-type]
        sec = None if seconds is None else float(seconds)  # type: ignore[arg-type]
        if not math.isfinite(at_f) or (sec is not None and (not math.isfinite(sec) or sec < 0)):
            return None
        return Sample(
            series=Series(str(series)),
            at=at_f,
            seconds=sec,
            censored=bool(censored),
            kind=FailureKind(str(kind)) if kind else None,
        )
    except (TypeError, ValueError):
        return None


def with_memory(
    names: Sequence[str],
    stored: Mapping[str, Sequence[Sample]],
    memory: MemoryHistoryStore,
    *,
    bound: int,
    clock: Clock | None,
) -> dict[str, TimingHistory]:
    """Each target's stored samples followed by those kept in memory (written
    while the store could not be), bounded like the store."""
    kept = memory.load_many(names)
    return {
        t: TimingHistory([*stored.get(t, ()), *kept[t].all_samples()], bound=bound, clock=clock)
        for t in names
    }
