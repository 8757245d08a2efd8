"""The PostgreSQL history store's private event loop: one daemon thread, one connection.

The history-store protocol is synchronous (the engine calls stores from a
worker thread), and asyncpg needs an event loop: each store runs asyncpg on
a loop of its own in a daemon thread. :meth:`LoopWorker.call` runs one
coroutine there under a time budget that covers all of it (waiting for the
connection the calls share one at a time, connecting, the statements), and
gives up :data:`GRACE` seconds after the budget even when the loop itself is
wedged: a store must never hang a startup.

By default the connection is closed after each call (``keep_open=0``);
``keep_open=S`` keeps it for ``S`` idle seconds. A call cancelled
mid-statement drops the connection (its session state is unknown).

Nothing here imports asyncpg at module level.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar

from smd.checks._pg_fleet import close

if TYPE_CHECKING:
    import asyncpg

__all__ = ["GRACE", "BudgetExceeded", "LoopWorker"]

# How much longer than its budget the caller waits for the private loop to
# report back before it stops waiting (a wedged loop must not hang startup).
GRACE: Final = 0.25

_T = TypeVar("_T")


class BudgetExceeded(Exception):
    """A call ran out of its budget (internal: the store turns it into ``StoreUnavailable``)."""


class LoopWorker:
    """A private event loop in a daemon thread and the store's one connection."""

    def __init__(self, name: str, keep_open: float) -> None:
        self.keep_open = keep_open
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection | None = None
        self.schema_ok = False
        self._lock: asyncio.Lock | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, op: Callable[[], Awaitable[_T]], budget: float) -> _T:
        """Run ``op`` on the private loop within ``budget`` seconds (raises :class:`BudgetExceeded`)."""
        future = asyncio.run_coroutine_threadsafe(self._bounded(op, budget), self.loop)
        try:
            return future.result(budget + GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BudgetExceeded from None

    async def _bounded(self, op: Callable[[], Awaitable[_T]], budget: float) -> _T:
        try:
            async with asyncio.timeout(budget):
                if self._lock is None:
                    self._lock = asyncio.Lock()
                async with self._lock:
                    if self._idle is not None:
                        self._idle.cancel()
                        self._idle = None
                    try:
                        return await op()
                    finally:
                        self._release()
        except TimeoutError:
            # Cancelled mid-statement: the session's state is unknown.
            self.drop()
            raise BudgetExceeded from None

    def _release(self) -> None:
        if self.conn is None:
            return
        if self.keep_open > 0 and not self.conn.is_closed():
            self._idle = self.loop.call_later(self.keep_open, self._close_idle)
        else:
            conn, self.conn = self.conn, None
            self.loop.create_task(close(conn))

    def _close_idle(self) -> None:
        self._idle = None
        if self.conn is not None and (self._lock is None or not self._lock.locked()):
            conn, self.conn = self.conn, None
            self.loop.create_task(close(conn))

    def drop(self) -> None:
        """Forget the connection at once (lost, or cancelled mid-statement)."""
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def shutdown(self) -> None:
        """Close the connection and stop the loop (idempotent, bounded)."""
        if self.loop.is_closed() or not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:
            self.loop.stop()  # collected on the loop's own thread: just stop it
            return

        async def finish() -> None:
            if self._idle is not None:
                self._idle.cancel()
            conn, self.conn = self.conn, None
            if conn is not None:
                await close(conn)
            # Let the closes scheduled by _release finish too.
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=0.5)

        with contextlib.suppress(Exception):  # shutting down: nothing to report to
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(1.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(1.0)
        if not self._thread.is_alive():
            self.loop.close()
