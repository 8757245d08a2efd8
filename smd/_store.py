"""The history-store plug point and an in-memory implementation.

Stores are synchronous (SQLite is); async callers run them in a worker
thread. A store must never be able to crash startup: implementations turn
their own trouble into a warning and carry on.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from smd._clock import Clock
from smd._samples import DEFAULT_BOUND, Sample, TimingHistory

__all__ = ["HistoryStore", "MemoryHistoryStore"]


@runtime_checkable
class HistoryStore(Protocol):
    """Persists samples per target across restarts."""

    def load(self, target: str, *, clock: Clock | None = None) -> TimingHistory:
        """The target's history (empty when nothing is known)."""
        ...

    def append(self, target: str, samples: Sequence[Sample]) -> None:
        """Add samples to the target's history, keeping each series bounded."""
        ...

    def append_many(self, batches: Mapping[str, Sequence[Sample]]) -> None:
        """:meth:`append` for several targets at once (one transaction where possible)."""
        ...

    def targets(self) -> list[str]:
        """Every target the store knows, sorted."""
        ...


class MemoryHistoryStore:
    """A store that lives as long as the process (tests, replays, ``--no-history``)."""

    def __init__(self, bound: int = DEFAULT_BOUND) -> None:
        self.bound = bound
        self._data: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()

    def load(self, target: str, *, clock: Clock | None = None) -> TimingHistory:
        with self._lock:
            samples = list(self._data.get(target, ()))
        return TimingHistory(samples, bound=self.bound, clock=clock)

    def append(self, target: str, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        with self._lock:
            merged = TimingHistory([*self._data.get(target, ()), *samples], bound=self.bound)
            self._data[target] = merged.all_samples()

    def append_many(self, batches: Mapping[str, Sequence[Sample]]) -> None:
        for target, samples in batches.items():
            self.append(target, samples)

    def targets(self) -> list[str]:
        with self._lock:
            return sorted(self._data)
