"""A run's view of the history store: one batched read, everything new written once.

The run starts reading every target it may need at once, in a worker thread,
and phases do not wait for it unless their timeout is computed from history
(or a failure needs a verdict that reads it). What phases record goes into
the histories handed to them and is written in one batch by :meth:`persist`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from smd._deadline import policy_spec
from smd._phase import Phase
from smd._redact import redact
from smd._samples import Sample, TimingHistory
from smd._settings import Settings
from smd._store import HistoryStore, TargetInfo, target_key
from smd.clock import Clock

__all__ = ["Histories"]


class Histories:
    """The histories of one run's targets, keyed by target key."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        startup: str,
        phases: tuple[Phase, ...],
        settings: Settings,
        clock: Clock,
        log: Any = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.log = log
        self._unwritten: dict[str, list[Sample]] = {}
        self._warned = False
        env = settings.environment.value
        self._keys: dict[str, str] = {}
        self._info: dict[str, TargetInfo] = {}
        for p in phases:
            # A target a user wrote may hold a secret (a URL with a password):
            # keys reach the store, logs and `smd history`, so mask it here.
            dependency = redact(p.target_key(settings))
            key = target_key(startup, dependency, env)
            self._keys[p.name] = key
            self._info[key] = TargetInfo(
                key, startup, dependency, env, p.name, policy_spec(p.timeout_policy())
            )
        self._loaded: dict[str, TimingHistory] | None = None
        self._handed: list[tuple[str, TimingHistory]] = []
        self._ready: anyio.Event | None = None

    def key(self, phase: Phase) -> str:
        """The target key of a phase (resolved once, at construction)."""
        return self._keys[phase.name]

    @property
    def keys(self) -> Mapping[str, str]:
        """Phase name -> target key."""
        return self._keys

    async def load(self) -> None:
        """Read every target in one batch (off the event loop); never raises."""
        self._ready = self._ready or anyio.Event()
        targets = list(dict.fromkeys(self._keys.values()))
        try:
            loaded = await anyio.to_thread.run_sync(
                lambda: self.store.load_many(targets, clock=self.clock)
            )
        except Exception as exc:  # a broken third-party store must not stop startup
            loaded = {}
            if self.log is not None:
                self.log.warning(
                    "smd.history.read_failed",
                    store=type(self.store).__name__,
                    error=f"{type(exc).__name__}: {exc}",
                    action="this run starts without history",
                )
        self._loaded = dict(loaded)
        self._ready.set()

    async def past(self, key: str) -> TimingHistory:
        """The target's persisted history (waits for the batch read)."""
        if self._loaded is None:
            self._ready = self._ready or anyio.Event()
            await self._ready.wait()
        assert self._loaded is not None
        history = self._loaded.get(key)
        if history is None:
            history = self._loaded[key] = TimingHistory(clock=self.clock)
        return history

    def now(self, key: str) -> TimingHistory:
        """A history to record into without waiting (the persisted one if already read)."""
        if self._loaded is not None:
            history = self._loaded.get(key)
            if history is None:
                history = self._loaded[key] = TimingHistory(clock=self.clock)
            return history
        fresh = TimingHistory(clock=self.clock)
        self._handed.append((key, fresh))
        return fresh

    def take(self) -> dict[str, list[Sample]]:
        """Every sample recorded since the last call (and not yet written), by target."""
        batches: dict[str, list[Sample]] = self._unwritten
        self._unwritten = {}
        for key, history in (self._loaded or {}).items():
            if history.pending:
                batches.setdefault(key, []).extend(history.pending)
                history.pending.clear()
        for key, history in self._handed:
            if history.pending:
                batches.setdefault(key, []).extend(history.pending)
                history.pending.clear()
        return batches

    async def persist(self) -> None:
        """Write every new sample in one batch (shielded: nothing learned is lost)."""
        batches = self.take()
        if not batches:
            return
        info = {k: self._info[k] for k in batches if k in self._info}
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(lambda: self.store.append_many(batches, info))
            except Exception as exc:  # stores never raise; a broken third-party one may
                # Keep what was learned for the next write (recovery persists
                # again), and say so once: nothing is lost silently.
                for key, samples in batches.items():
                    self._unwritten.setdefault(key, []).extend(samples)
                if not self._warned and self.log is not None:
                    self._warned = True
                    self.log.warning(
                        "smd.history.write_failed",
                        store=type(self.store).__name__,
                        error=f"{type(exc).__name__}: {exc}",
                        kept=sum(len(s) for s in batches.values()),
                        action="the samples are kept in memory and written with the next batch",
                    )
