"""One clock: where everything that measures or waits gets the time from.

Deadlines, durations, attempt times and every wait between attempts come
from one :class:`Clock`, so the figures a run records are consistent with
each other whichever clock is used:

- :class:`SystemClock` (the default) reads the event loop's clock through
  anyio while a loop runs (``time.monotonic()`` otherwise) and sleeps on it;
- :class:`ManualClock` only moves when told to, and its ``sleep`` advances
  it instead of waiting: policy code, retries and whole runs are tested
  without sleeping (the testing switch).

Wall time (``wall()``) is only for timestamps that must survive a restart.
"""

from __future__ import annotations

import time
from asyncio import get_running_loop
from typing import Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Where smd gets the time from, and how it waits."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (deadlines and durations)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (timestamps that survive restarts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock (a checkpoint: cancellation is seen)."""
        ...


def loop_time() -> float:
    """The running event loop's clock (what ``anyio.current_time()`` returns).

    On asyncio that is ``loop.time()``, read here directly: anyio finds the
    running backend on every call (several lookups through sniffio), and a
    run reads the clock about six times per phase. Any other backend (trio)
    goes through anyio; with no loop running, ``time.monotonic()``, the
    clock asyncio's loop uses.
    """
    try:
        return get_running_loop().time()
    except RuntimeError:
        pass
    try:
        return anyio.current_time()
    except RuntimeError:
        return time.monotonic()


class SystemClock:
    """The real clocks: the event loop's for durations, the system's for timestamps."""

    __slots__ = ()

    def monotonic(self) -> float:
        return loop_time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that only moves when told to (tests and trace replays).

    ``sleep(s)`` advances the clock by ``s`` at once and yields to the event
    loop once, so code that waits between attempts runs instantly while its
    recorded times stay exact.
    """

    __slots__ = ("_mono", "_wall")

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._mono = 0.0
        self._wall = float(start)

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._mono += seconds
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"ManualClock(monotonic={self._mono:g})"
