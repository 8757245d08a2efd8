"""The fleet coordinator's statements: the completion record, and the lock's session.

The completion record (``<schema>.once_done``, one row per key) is read by
:func:`read_record` and written by :func:`write_record`, only after the work
succeeded, on the session that holds the lock.

A session advisory lock is only as good as the session: it must be one
server session for the whole work, and it must still hold the lock while
the work runs. Three checks, each a few milliseconds:

- :func:`one_server_session`, before any lock is taken: is this connection
  really one server session (not a transaction pooler handing each
  statement to any session)?
- :func:`heartbeat`, while the work runs: every interval, does this very
  session still hold the lock (a server restart, ``pg_terminate_backend``
  or a lost network ends it)?
- :func:`lock_holder`, for a waiter's timeout message: who holds it?

``pg_locks`` shows a 64-bit advisory key as ``classid`` (high 32 bits) and
``objid`` (low 32 bits) with ``objsubid = 1``. Nothing here imports asyncpg
at module level.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio

from smd.checks._pg_fleet import close

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "ANSWER",
    "POOLED",
    "answer_within",
    "forget_record",
    "heartbeat",
    "keep_alive",
    "lock_holder",
    "lock_parts",
    "one_server_session",
    "read_record",
    "write_record",
]

#: A heartbeat (or a record write) unanswered this long: the session is lost.
ANSWER: Final = 5.0


def answer_within(deadline: float) -> float:
    """How long a lock-session statement may take now: :data:`ANSWER`, cut at
    ``deadline`` (``anyio.current_time()``), never below 0."""
    return max(0.0, min(ANSWER, deadline - anyio.current_time()))


#: What a connection that is not one server session is told (after "SMD_FLEET_URL (...) ").
POOLED: Final = (
    "goes through a connection pooler that shares server sessions between clients "
    "(pgbouncer with pool_mode = transaction?): a session advisory lock cannot be held "
    "through it; point SMD_FLEET_URL at PostgreSQL itself or at a session-mode pool"
)
_HELD: Final = (
    "SELECT pg_backend_pid() AS pid, EXISTS (SELECT 1 FROM pg_locks "
    "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
    "AND classid = $1::bigint::oid AND objid = $2::bigint::oid "
    "AND objsubid = 1) AS held"
)
_HOLDER: Final = (
    "SELECT a.application_name FROM pg_locks AS l JOIN pg_stat_activity AS a "
    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid "
    "AND l.objsubid = 1 LIMIT 1"
)


# TCP keepalives on the lock's session (10 s idle + 3 x 5 s): a holder whose
# host vanishes without closing the connection loses the lock within ~25 s.
_KEEPALIVES: Final = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)


async def read_record(conn: asyncpg.Connection, table: str, key: str) -> tuple[str, float] | None:
    """``(done_by, done_at)`` (wall-clock seconds) when ``key`` is recorded as done."""
    row = await conn.fetchrow(
        f"SELECT done_by, extract(epoch FROM done_at)::float8 AS done_at FROM {table} "
        "WHERE key = $1",
        key,
    )
    return None if row is None else (str(row["done_by"]), float(row["done_at"]))


async def forget_record(conn: asyncpg.Connection, table: str, key: str) -> bool:
    """Delete ``key``'s completion record; ``True`` when there was one."""
    status = await conn.execute(f"DELETE FROM {table} WHERE key = $1", key)
    return str(status) != "DELETE 0"


async def write_record(
    conn: asyncpg.Connection, table: str, key: str, done_by: str, seconds: float
) -> None:
    """Record ``key`` as done now by ``done_by`` (the work took ``seconds``)."""
    await conn.execute(
        f"INSERT INTO {table} (key, done_by, done_at, seconds) "
        "VALUES ($1, $2, now(), $3) ON CONFLICT (key) DO UPDATE SET "
        "done_by = EXCLUDED.done_by, done_at = EXCLUDED.done_at, "
        "seconds = EXCLUDED.seconds",
        key,
        done_by,
        seconds,
    )


async def keep_alive(conn: asyncpg.Connection) -> None:
    """Turn on TCP keepalives for the lock's session (best effort: a proxy may refuse them)."""
    with contextlib.suppress(Exception):
        await conn.execute(_KEEPALIVES)


def lock_parts(lock: int) -> tuple[int, int]:
    """A signed 64-bit advisory key as ``pg_locks``' (classid, objid)."""
    unsigned = lock & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


async def one_server_session(
    conn: asyncpg.Connection, connect: Callable[[], Awaitable[asyncpg.Connection]]
) -> bool:
    """Whether ``conn`` is one server session for good (``False``: a transaction pooler).

    A direct connection's backend pid (from the startup handshake) is the
    one its statements run in. A proxy reports its own; then a second
    client session is opened (``connect``): with session pooling the two
    run in different server sessions, each for good; a transaction pooler
    runs them in the same (recently used) one, or moves the first.
    """
    first = await conn.fetchval("SELECT pg_backend_pid()")
    if first == conn.get_server_pid():
        return True
    other = await connect()
    try:
        second = await other.fetchval("SELECT pg_backend_pid()")
    finally:
        await close(other)
    again = await conn.fetchval("SELECT pg_backend_pid()")
    return bool(second != first and again == first)


async def heartbeat(
    conn: asyncpg.Connection,
    lock: int,
    pid: int,
    stop: anyio.Event,
    *,
    every: float,
    describe: Callable[[BaseException], str],
    pooled: str,
    deadline: float = math.inf,
) -> str | None:
    """Check every ``every`` seconds that session ``pid`` still holds ``lock``, until ``stop``.

    Returns ``None`` once ``stop`` is set, or at the first check that fails,
    what is wrong (``describe`` words an exception; ``pooled`` is what to say
    when the statements run in another session). Queries are shielded, so
    the connection is in a known state afterwards, and bounded by
    :data:`ANSWER` and by ``deadline`` (``anyio.current_time()``): a check
    never keeps the work's phase past its deadline.
    """
    high, low = lock_parts(lock)
    while not stop.is_set():
        with anyio.move_on_after(every):
            await stop.wait()
        if stop.is_set():
            return None
        answer = answer_within(deadline)
        if answer <= 0:
            return None  # the deadline came: the work's own scope ends it
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(answer):
                row = await conn.fetchrow(_HELD, high, low)
        except TimeoutError:
            if answer < ANSWER:
                return None  # cut by the deadline, not a silent session
            return f"the session holding the lock did not answer within {ANSWER:g}s"
        except Exception as exc:
            return describe(exc)
        if row["pid"] != pid:
            return pooled
        if not row["held"]:
            return "the lock is no longer held by this session"
    return None


async def lock_holder(conn: asyncpg.Connection, lock: int, *, prefix: str) -> str | None:
    """Who holds ``lock`` (their ``application_name`` without ``prefix``), or ``None``."""
    high, low = lock_parts(lock)
    try:
        name = await conn.fetchval(_HOLDER, high, low)
    except Exception:
        return None
    return str(name).removeprefix(prefix) if name else None
