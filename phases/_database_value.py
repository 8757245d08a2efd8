"""The value the database phase publishes: :class:`Database` (connects, pool, recording).

Public as :class:`smd.phases.database.Database` (and :class:`smd.phases.Database`);
:class:`~smd.phases.database.DatabasePhase` builds it once PostgreSQL is ready.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from smd.checks._pg_options import PostgresConfigError, PostgresOptions
from smd.clock import Clock, SystemClock

if TYPE_CHECKING:
    import asyncpg

    from smd.retry import AttemptRecorder, CheckResult

__all__ = ["Database"]


class Database:
    """What the database phase hands to the phases that require it (``ctx["database"]``).

    ``connect()`` opens a new asyncpg connection with the checked options;
    ``pool`` is an :class:`asyncpg.Pool` when the phase was asked for one,
    and :meth:`create_pool` makes more pools like it. ``target`` and ``dsn``
    are safe to log (no password).

    **The learned deadline beyond startup.** ``attempt_seconds`` is the
    per-attempt deadline the phase ran with: the one the timeout policy
    learned from this database's history (``ctx.timeout.attempt_seconds``;
    the split of the deadline while nothing is learned yet; the phase's
    ``attempt_seconds=`` if given), never longer than the DSN's
    ``connect_timeout``. Every connect this object makes -- ``connect()``,
    the pool's first connections and every reconnect it makes later -- is
    bounded by it (asyncpg's ``timeout``: the whole connection
    establishment, TLS and authentication included), so the app's own
    reconnects after startup wait as long as this database really needs,
    not asyncpg's fixed 60 s. An explicit ``timeout=`` (to ``connect()``, in
    ``pool_kwargs`` or ``PostgresOptions.connect_kwargs``) wins.

    Each of those connects that got an answer -- a session, or an error the
    server itself sent (53300 too many connections, 57P03) -- is recorded as
    one ``attempt`` sample (``history.record_attempt``) into the same
    history the phase learned from, whatever timeout bounded it. The run
    writes what was recorded to the history store with its next batch (after
    a recovery, and at shutdown: a process killed before loses what it
    recorded since), and the next start's policy computes its per-attempt
    deadline from it: after a slow episode the next deadline, and the next
    pool's timeout, grow to fit. A connect that timed out is not recorded
    (the attempt loop does the same: a silent network is not a slow
    database), so the deadline grows from the slow connects that completed,
    not from those it cut off.

    Built by hand (``Database(options)``) it has no learned deadline (only
    the DSN's ``connect_timeout``, if any) and records nothing.
    """

    def __init__(
        self,
        options: PostgresOptions,
        *,
        pool: asyncpg.Pool | None = None,
        check: CheckResult | None = None,
        attempt_seconds: float | None = None,
        history: AttemptRecorder | None = None,
        clock: Clock | None = None,
    ) -> None:
        if attempt_seconds is not None and not (
            math.isfinite(attempt_seconds) and attempt_seconds > 0
        ):
            raise ValueError(
                f"attempt_seconds must be positive and finite, got {attempt_seconds!r}"
            )
        self.options = options
        self.pool = pool
        self.check = check
        self.target = options.target_key()
        self.dsn = options.redacted()
        self.attempt_seconds = _capped(attempt_seconds, options)
        self.history = history
        self.clock: Clock = clock or SystemClock()
        self._closed = False

    def connect_arguments(self) -> dict[str, Any]:
        """The keyword arguments of this database's connects (holds the password):
        the options' plus ``timeout`` = :attr:`attempt_seconds` unless set."""
        kwargs = self.options.connect_arguments()
        if self.attempt_seconds is not None:
            kwargs.setdefault("timeout", self.attempt_seconds)
        return kwargs

    async def connect(self, **overrides: Any) -> asyncpg.Connection:
        """A new connection (the caller closes it), bounded by :attr:`attempt_seconds`
        and recorded; ``overrides`` go to :func:`asyncpg.connect`."""
        import asyncpg

        kwargs = self.connect_arguments()
        kwargs.update(overrides)
        return await self._timed(asyncpg.connect, (), kwargs)

    def create_pool(self, **pool_kwargs: Any) -> asyncpg.Pool:
        """A new :class:`asyncpg.Pool` whose connections are made like :meth:`connect`'s.

        ``pool_kwargs`` go to :func:`asyncpg.create_pool` (a ``connect=``
        given there is still timed and recorded). Like ``asyncpg.create_pool``
        it returns the pool before it is initialised: ``await`` it, or use it
        as ``async with``; the caller closes it (only :attr:`pool` is closed
        by :meth:`close`). With asyncpg older than 0.30 (no ``connect=``)
        the pool's connections are bounded but not recorded.
        """
        import asyncpg

        kwargs: dict[str, Any] = self.connect_arguments()
        kwargs.update(pool_kwargs)
        if not _pool_takes_connect(asyncpg.create_pool):
            return asyncpg.create_pool(**kwargs)
        inner: Callable[..., Awaitable[asyncpg.Connection]] = (
            kwargs.pop("connect", None) or asyncpg.connect
        )

        async def connect(*args: Any, **connect_kwargs: Any) -> asyncpg.Connection:
            return await self._timed(inner, args, connect_kwargs)

        return asyncpg.create_pool(connect=connect, **kwargs)

    async def _timed(
        self,
        connect: Callable[..., Awaitable[asyncpg.Connection]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> asyncpg.Connection:
        start = self.clock.monotonic()
        try:
            conn = await connect(*args, **kwargs)
        except Exception as exc:
            # Imported here, with the connection stack (see smd.phases.database).
            from smd.checks._pg_classify import server_answered

            if server_answered(exc):  # the server spoke: a real round-trip figure
                self._record(self.clock.monotonic() - start)
            raise
        self._record(self.clock.monotonic() - start)
        return conn

    def _record(self, seconds: float) -> None:
        if self.history is not None:
            self.history.record_attempt(max(0.0, seconds))

    async def close(self) -> None:
        """Close the pool, if any (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.pool is not None:
            await self.pool.close()

    def __repr__(self) -> str:
        pooled = ", pool" if self.pool is not None else ""
        bound = f", attempt_seconds={self.attempt_seconds:.3g}" if self.attempt_seconds else ""
        return f"Database({self.dsn!r}{pooled}{bound})"


@functools.cache
def _pool_takes_connect(create_pool: Callable[..., object]) -> bool:
    """Whether ``asyncpg.create_pool`` takes ``connect=`` (asyncpg >= 0.30)."""
    return "connect" in inspect.signature(create_pool).parameters


def _capped(seconds: float | None, options: PostgresOptions) -> float | None:
    """``seconds``, never longer than the DSN's ``connect_timeout`` allows (libpq's
    bound, per host; asyncpg's ``timeout`` covers the whole host list)."""
    try:
        resolved = options.resolve()
    except (PostgresConfigError, ValueError):
        return seconds  # an invalid DSN fails at connect, with its own message
    per_host = resolved.connect_timeout
    if per_host is None or per_host <= 0:
        return seconds
    limit = per_host * max(1, len(resolved.hosts))
    return limit if seconds is None else min(seconds, limit)
