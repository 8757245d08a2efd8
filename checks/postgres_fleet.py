"""Once-per-fleet work under a PostgreSQL session advisory lock, and the fleet plugin.

:class:`AdvisoryLockCoordinator` runs a piece of work (a migration, a cache
warm-up) in exactly one replica of a fleet at a time, and records when it
is done so that no replica runs it again::

    coordinator = AdvisoryLockCoordinator("postgresql://app:secret@db/app")
    outcome = await coordinator.run_once("api/migrate@v42", migrate, deadline_seconds=120)
    outcome.ran            # False: another replica did it (outcome.done_by, .done_at)

How, and why each step is there:

1. **Fast path.** Read the completion record (``<schema>.once_done``). Done:
   skip, without ever calling an advisory-lock function.
2. **Probe.** On the same short-lived connection, ``pg_try_advisory_lock``:
   it never waits. Not acquired: close the connection, sleep with jittered
   backoff (:class:`smd.retry.Backoff`, :data:`WAIT_BACKOFF`) and probe
   again: a new session that reads the record first (a fresh snapshot: the
   holder commits the record before its session ends), so that once the
   work is done a waiter's probe is one statement and takes no lock. A
   waiter holds no connection while it waits, so 200 waiting replicas cost
   the server a few short sessions per second, not 200 slots; a probe the
   server refuses for lack of slots (53300) is a "not yet" like any other,
   on the same ladder, not a burst of quick retries.
3. **Hold.** Acquired: re-read the record under the lock (the previous holder
   may have finished between our read and our lock), then run the work on a
   *dedicated* connection (``asyncpg.connect``, never a pooled one: a pool
   could hand the session, and the lock with it, to other code). The lock is
   held for the whole work; a heartbeat checks every second that this
   session still holds it and cancels the work if it does not (server
   restart, ``pg_terminate_backend``, network loss): another replica may be
   running it by then.
4. **Record** completion only when the work succeeded, then end the
   session. The work itself ends a little before the deadline (a tenth of
   it, at most 1 s), so that work that finished in time is always recorded.
   A failed (or cancelled) work records nothing: a later replica runs it
   again. A holder that dies ends its session, which releases the
   lock (TCP keepalives on the session, 10 s idle + 3 x 5 s, also release
   it when the holder's host vanishes without closing the connection).

Session advisory locks need one server session for the whole work: they do
**not** work through a transaction-pooling proxy (pgbouncer with
``pool_mode = transaction`` or ``statement``), which hands each transaction
to any server session. Before the first lock the coordinator checks whether
its session is really one server session; when it is not, the phase fails
at once with one line saying so (a configuration failure). Point
``SMD_FLEET_URL`` at PostgreSQL itself or at a session-mode pool. Through a
session-mode pool the keepalives set on the session act on the pool's
connection to the server, not on the holder's connection to the pool: a
holder whose host vanishes keeps the lock until the pool notices (set
pgbouncer's ``tcp_keepalive``, ``tcp_keepidle``, ``tcp_keepintvl`` and
``tcp_keepcnt`` for its client connections).

The statements on the lock's session (the pooler check, the heartbeat, the
completion record) are in :mod:`smd.checks._pg_lock_session`; how failures
are worded, in :mod:`smd.checks._pg_fleet_failures`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import anyio
from pydantic import SecretStr

from smd import Failure, PhaseError
from smd.checks import _pg_fleet_failures as failures
from smd.checks._pg_fleet import (
    FleetSettings,
    SchemaError,
    close,
    connect,
    ensure_schema,
    lock_id,
    qualified,
    register_secret_parts,
    replica_identity,
    storm_code,
    valid_schema,
)
from smd.checks._pg_lock_session import (
    POOLED,
    answer_within,
    forget_record,
    heartbeat,
    keep_alive,
    lock_holder,
    one_server_session,
    read_record,
    write_record,
)
from smd.checks._pg_options import PostgresOptions
from smd.checks.postgres_store import PostgresHistoryStore
from smd.plugins import OnceOutcome
from smd.retry import Backoff

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "WAIT_BACKOFF",
    "AdvisoryLockCoordinator",
    "FleetSettings",
    "PostgresHistoryStore",
    "coordinator_factory",
    "lock_id",
]

#: How waiters space their probes: 50 ms doubling to 0.5 s, equal jitter. On
#: a server with CPU to spare (see :data:`_SLOT_SHARE` for a busy one), a
#: waiter notices a finished work at most 0.5 s late and never probes more
#: than 4 times a second once capped (each probe: one short session). Past
#: the first seconds of a wait the cap stretches to a fifth of the time
#: already waited, at most 5 s (:data:`STRETCH`, :data:`STRETCH_CAP`): a
#: ten-minute migration is then noticed at most 5 s (20 %) late, and each of
#: its waiters opens one session every few seconds instead of 2-4 a second.
WAIT_BACKOFF: Final = Backoff(initial=0.05, multiplier=2.0, cap=0.5, jitter="equal")
STRETCH: Final = 0.2
STRETCH_CAP: Final = 5.0
#: A waiter sleeps at least this many times as long as its last probe held a
#: session (connect to close), so it holds a server slot at most a third of
#: its wait. On an idle server a probe takes ~10 ms and the ladder above
#: rules; on one so busy that a probe lasts a second, 200 waiters hold about
#: 67 slots, not all 100 of a ``max_connections=100`` server: the rest stay
#: free for the work itself (a migration's own connections) and for the
#: replicas still starting. Measured in ``benchmarks/fleet.py``. At most
#: :data:`_SLOT_SHARE_MAX` (the share of a 1-s probe): one probe that sat out
#: a storm for seconds must not make its waiter notice the work done that
#: much later (on a server that overloaded, refusals climb the ladder anyway).
_SLOT_SHARE: Final = 2.0
_SLOT_SHARE_MAX: Final = 2.0
_HEARTBEAT: Final = 1.0
# Waiting ends this much before the deadline (like DatabasePhase's attempt loop).
_MARGIN_FRACTION: Final = 0.05
_MARGIN_MAX: Final = 0.25
# The final probe runs this long before giving up (it takes a few milliseconds).
_FINAL_PROBE: Final = 0.05
# What the holder keeps of its deadline for the completion record: a write
# is one indexed upsert (milliseconds on a healthy server), 1 s covers a busy
# one; never more than a tenth of a short deadline.
_RECORD_RESERVE: Final = 1.0
_RECORD_FRACTION: Final = 0.1
_APP_PREFIX: Final = "smd fleet "


class AdvisoryLockCoordinator:
    """A :class:`smd.plugins.Coordinator` on PostgreSQL advisory locks (see the module docstring).

    ``url`` is the coordinating database (a DSN or
    :class:`~smd.checks.postgres.PostgresOptions`), ``schema`` where the
    completion records live, ``identity`` who this replica is in them
    (default ``hostname:pid``), ``backoff`` how waiters space their probes.
    """

    def __init__(
        self,
        url: str | SecretStr | PostgresOptions,
        *,
        schema: str = "smd",
        identity: str | None = None,
        backoff: Backoff = WAIT_BACKOFF,
        heartbeat_seconds: float = _HEARTBEAT,
        rng: random.Random | None = None,
    ) -> None:
        self.options = url if isinstance(url, PostgresOptions) else PostgresOptions.from_dsn(url)
        self.options.validate()
        if isinstance(self.options.dsn, SecretStr):
            register_secret_parts(self.options.dsn.get_secret_value())
        if not (math.isfinite(heartbeat_seconds) and heartbeat_seconds > 0):
            raise ValueError("heartbeat_seconds must be a positive finite number")
        self.schema = valid_schema(schema)
        self.identity = identity or replica_identity()
        self.backoff = backoff
        self.heartbeat_seconds = heartbeat_seconds
        self._rng = rng or random.Random()
        self._where = f"the fleet lock on {self.options.target_key()}"
        self._table = qualified(self.schema, "once_done")
        self._schema_ok = False
        self._session_ok = False

    def __repr__(self) -> str:
        return f"AdvisoryLockCoordinator({self.options.redacted()!r}, schema={self.schema!r})"

    async def run_once(
        self,
        key: str,
        work: Callable[[], Awaitable[Any]],
        *,
        deadline_seconds: float,
        lock_key: str | None = None,
    ) -> OnceOutcome:
        """Run ``work`` in this replica unless another one did or does; see the module docstring.

        ``key`` names the completion record; ``lock_key`` (default ``key``)
        the advisory lock, for work whose records differ but which must never
        run at the same time (two releases' migrations of one database).

        Raises :class:`smd.PhaseError`: ``timeout`` when another replica still
        holds the lock at the deadline, ``configuration`` when the lock cannot
        be held (a transaction pooler) or the database refuses us for good,
        ``infrastructure`` when the lock's session was lost during the work.
        An exception of ``work`` propagates unchanged (nothing is recorded).
        """
        if not (math.isfinite(deadline_seconds) and deadline_seconds > 0):
            raise ValueError("deadline_seconds must be a positive finite number")
        deadline = anyio.current_time() + deadline_seconds
        # Stop waiting a little before the deadline, so that this classified
        # failure, not the phase runner's cancellation, reports it.
        give_up = deadline - min(_MARGIN_MAX, deadline_seconds * _MARGIN_FRACTION)
        lock = lock_id(self.schema, lock_key or key)
        began = anyio.current_time()
        retry = 0
        first = True
        holder: str | None = None
        refused: Failure | None = None  # the last probe's, when the server had no slot for it
        while True:
            asked = anyio.current_time()
            delay = self._delay(retry, asked - began)
            conn, refused = await self._probe_connect(key, give_up)
            if conn is not None:
                try:
                    acquired = False
                    try:
                        # A probe's statements are bounded too: a server that
                        # accepts but stalls them (a table locked by a DDL)
                        # must not keep this waiter's session past giving up.
                        with anyio.fail_after(max(0.0, give_up - anyio.current_time())):
                            done, acquired, holder = await self._probe(
                                conn, key, lock, first, give_up, delay, holder
                            )
                        first = False
                        if done is not None:
                            return done
                    except PhaseError:
                        raise
                    except Exception as exc:
                        failure = self._classified(exc, key)
                        if not failure.kind.may_heal:
                            raise PhaseError(failure) from None
                    if acquired:
                        # Outside the handler above: the work's own exceptions propagate as they are.
                        return await self._hold(conn, key, lock, work, deadline)
                finally:
                    await close(conn)
            now = anyio.current_time()
            # Slots first: see _SLOT_SHARE (a busy server makes each probe long).
            delay = max(delay, min(_SLOT_SHARE * (now - asked), _SLOT_SHARE_MAX))
            left = give_up - now
            if left <= _FINAL_PROBE:
                if refused is not None:
                    # Refused for lack of slots to the end: given up at the deadline.
                    raise PhaseError(
                        failures.unreachable(refused, key, self._where, deadline_reached=True)
                    )
                raise PhaseError(failures.timed_out(key, deadline_seconds, holder, self._where))
            # The last probe comes just before giving up, not after.
            await anyio.sleep(min(delay, left - _FINAL_PROBE))
            retry += 1

    async def forget(self, key: str, *, deadline_seconds: float) -> bool:
        """Delete ``key``'s completion record, so that the next :meth:`run_once` runs the work.

        For work whose done-ness the caller can check itself and finds
        undone though recorded (a migration whose database was downgraded or
        restored since): the work must still check under the lock, since
        another replica may be redoing it right now. ``True`` when a record
        was deleted. Raises :class:`smd.PhaseError` (classified) when the
        coordinating database cannot be reached within ``deadline_seconds``.
        """
        if not (math.isfinite(deadline_seconds) and deadline_seconds > 0):
            raise ValueError("deadline_seconds must be a positive finite number")
        end = anyio.current_time() + deadline_seconds
        conn = await self._connect(key, end)
        try:
            with anyio.fail_after(max(0.0, end - anyio.current_time())):
                await self._prepare(conn)
                return await forget_record(conn, self._table, key)
        except PhaseError:
            raise
        except Exception as exc:
            raise PhaseError(self._classified(exc, key)) from None
        finally:
            await close(conn)

    async def _probe(
        self,
        conn: asyncpg.Connection,
        key: str,
        lock: int,
        first: bool,
        give_up: float,
        delay: float,
        holder: str | None,
    ) -> tuple[OnceOutcome | None, bool, str | None]:
        """One probe on ``conn``: (the record, if done; whether the lock is ours; who holds it)."""
        if first:
            await self._prepare(conn)
        # The record first: once the work is done, a waiter's probe is this
        # one statement and calls no lock function.
        done = await self._record(conn, key)
        if done is not None:
            return done, False, holder
        if first:
            await self._check_session(conn, key, give_up)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
            # Re-read under the lock: the holder may have finished since our read.
            done = await self._record(conn, key)
            return done, done is None, holder
        if anyio.current_time() + delay >= give_up - _FINAL_PROBE:
            holder = await lock_holder(conn, lock, prefix=_APP_PREFIX) or holder
        return None, False, holder

    def _delay(self, retry: int, waited: float) -> float:
        """The wait before the next probe: the backoff, its cap stretched on long waits."""
        cap = max(self.backoff.cap, min(STRETCH_CAP, STRETCH * waited))
        backoff = self.backoff if cap == self.backoff.cap else replace(self.backoff, cap=cap)
        return backoff.delay(retry, self._rng)

    # -- steps ----------------------------------------------------------------------

    async def _probe_connect(
        self, key: str, deadline: float
    ) -> tuple[asyncpg.Connection | None, Failure | None]:
        """A probe's connection, or ``(None, why)`` when the server had no slot for it.

        A refusal for lack of slots (53300, or a server still starting) is a
        probe that said "not yet". Retried at once (the storm backoff starts
        again from 20 ms at every probe), each refusal would cost the server
        that has no slot left a forked backend and a handshake; as a probe,
        it climbs the probe ladder like any other "not yet".
        """
        try:
            conn = await self._connect(
                key, deadline, retry_on=lambda f: f.kind.may_heal and not storm_code(f)
            )
        except PhaseError as exc:
            if storm_code(exc.failure) and anyio.current_time() < deadline:
                return None, exc.failure
            raise
        return conn, None

    async def _connect(
        self,
        key: str,
        deadline: float,
        *,
        retry_on: Callable[[Failure], bool] = lambda f: f.kind.may_heal,
    ) -> asyncpg.Connection:
        try:
            return await connect(
                self.options,
                deadline=deadline,
                now=anyio.current_time,
                sleep=anyio.sleep,
                retry_on=retry_on,
                rng=self._rng,
                application_name=f"{_APP_PREFIX}{self.identity}",
                # No named prepared statements: the pooler check below must be
                # able to run (and fail clearly) through a transaction pooler.
                statement_cache_size=0,
            )
        except SchemaError as exc:
            raise PhaseError(failures.unreachable(exc.failure, key, self._where)) from None

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        if self._schema_ok:
            return
        try:
            await ensure_schema(conn, self.schema, where=self._where)
        except SchemaError as exc:
            raise PhaseError(exc.failure) from None
        self._schema_ok = True

    async def _record(self, conn: asyncpg.Connection, key: str) -> OnceOutcome | None:
        done = await read_record(conn, self._table, key)
        return None if done is None else OnceOutcome(False, done_by=done[0], done_at=done[1])

    async def _check_session(self, conn: asyncpg.Connection, key: str, deadline: float) -> None:
        """Fail clearly, before any lock is taken, when this is not one server session."""
        if self._session_ok:
            return
        if not await one_server_session(conn, lambda: self._connect(key, deadline)):
            raise PhaseError(failures.pooled(key, self.options))
        self._session_ok = True

    async def _hold(
        self,
        conn: asyncpg.Connection,
        key: str,
        lock: int,
        work: Callable[[], Awaitable[Any]],
        deadline: float,
    ) -> OnceOutcome:
        """Run the work holding the lock; record completion on success only."""
        await keep_alive(conn)
        try:
            with anyio.fail_after(answer_within(deadline)):
                pid = await conn.fetchval("SELECT pg_backend_pid()")
        except Exception as exc:
            # The coordination's failure (the lock's session lost before the
            # work began), not the work's: classified, nothing ran.
            raise PhaseError(self._classified(exc, key)) from None
        lost: list[Failure] = []
        failed: list[Exception] = []
        stop = anyio.Event()
        started = anyio.current_time()
        value: Any = None
        # The work ends a little before the deadline, so that work that
        # finished in time always has time left to be recorded: unrecorded,
        # another replica would run it again.
        reserve = max(0.0, min(_RECORD_RESERVE, (deadline - started) * _RECORD_FRACTION))
        with anyio.CancelScope(deadline=deadline - reserve) as work_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, conn, key, lock, pid, stop, work_scope, lost, deadline)
                try:
                    value = await work()
                except Exception as exc:
                    failed.append(exc)
                finally:
                    stop.set()
        if lost:
            raise PhaseError(lost[0])
        if failed:
            raise failed[0]
        if work_scope.cancelled_caught:
            raise PhaseError(failures.overran(key))
        seconds = anyio.current_time() - started
        # Shielded (a record half-written by a cancellation is no record), but
        # never past the deadline: the phase's runner reports what happened.
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(answer_within(deadline)):
                await write_record(conn, self._table, key, self.identity, seconds)
        except Exception as exc:
            raise PhaseError(failures.unrecorded(key, exc, self.options)) from None
        return OnceOutcome(True, value)

    async def _watch(
        self,
        conn: asyncpg.Connection,
        key: str,
        lock: int,
        pid: int,
        stop: anyio.Event,
        work_scope: anyio.CancelScope,
        lost: list[Failure],
        deadline: float,
    ) -> None:
        """The heartbeat: when this session no longer holds the lock, stop the work."""
        problem = await heartbeat(
            conn,
            lock,
            pid,
            stop,
            every=self.heartbeat_seconds,
            deadline=deadline,
            describe=lambda exc: self._classified(exc, key).message,
            pooled=f"SMD_FLEET_URL ({self.options.target_key()}) {POOLED}",
        )
        if problem is None:
            return
        lost.append(failures.lost(key, self._where, problem))
        work_scope.cancel()

    def _classified(self, exc: BaseException, key: str) -> Failure:
        return failures.classified(exc, key, self.options)


def coordinator_factory(settings: Any) -> AdvisoryLockCoordinator | None:
    """The fleet coordinator the settings ask for: ``SMD_FLEET_URL``, else ``SMD_DATABASE_URL``.

    ``None`` when neither is set (once-per-fleet phases then have no fleet to
    coordinate; the engine decides what that means).
    """
    fleet = FleetSettings.of(settings)
    url = fleet.fleet_url or getattr(settings, "database_url", None)
    if url is None:
        return None
    return AdvisoryLockCoordinator(url, schema=fleet.history_schema)
