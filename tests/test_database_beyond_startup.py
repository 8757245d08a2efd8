"""The learned deadline beyond startup (issue 12): the published Database's own connects.

Real runs (``smd.lifecycle``) against the real cluster through the fault
proxy, with a real SQLite history store: the ``Database`` that
``DatabasePhase`` publishes bounds ``db.connect()`` and its pool's
connections by the per-attempt deadline the run computed, records their
latencies into the same history, and the store carries them to the next
run -- so a pool created after a slow episode gets the grown deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pgbed.proxy import FaultProxy

from smd import Outcome, PhaseContext, Report, Startup, State, lifecycle, load_settings
from smd.checks.postgres import PostgresOptions
from smd.history import SQLiteHistoryStore
from smd.phases import Database, DatabasePhase
from smd.timeouts import TimingHistory

pytestmark = pytest.mark.postgres

# Added by the proxy before it dials and to every chunk either way: a session
# (TLS negotiation, startup, SCRAM's two round trips, the final burst) crosses
# it at least five times, so each slow connect takes at least 0.5 s.
LATENCY = 0.1
AT_LEAST = 5 * LATENCY
SLOW_DIRECT = 4
SLOW_POOLED = 3


def pool_timeout(pool: Any) -> object:
    """The ``timeout`` the pool passes to each new connection (asyncpg keeps the
    connect arguments of ``create_pool`` there)."""
    return pool._connect_kwargs.get("timeout")


class App:
    """One run of a startup with a DatabasePhase (pool of one), as a service runs it."""

    def __init__(self, dsn: str, store: SQLiteHistoryStore) -> None:
        self.dsn = dsn
        self.store = store
        self.settings = load_settings(environment="test", history_enabled=False)
        self.startup = Startup("beyond")
        self.startup.add(DatabasePhase(dsn, pool=True, pool_kwargs={"min_size": 1, "max_size": 1}))
        self.seen: dict[str, Any] = {}

        @self.startup.phase(requires=["database"])
        async def app(ctx: PhaseContext) -> None:
            self.seen["db"] = ctx.get("database", Database)


async def connects(db: Database, *, direct: int, pooled: int) -> list[float]:
    """What the app does while it runs: new sessions, direct and through the pool
    (each pooled one a fresh connection: the pool's old ones are expired first)."""
    assert db.pool is not None
    recorded = db.history
    assert isinstance(recorded, TimingHistory)
    before = len(recorded.attempts)
    for _ in range(direct):
        conn = await db.connect()
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    for _ in range(pooled):
        await db.pool.expire_connections()
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    return [float(s.seconds or 0.0) for s in recorded.attempts[before:]]


def learned(report: Report) -> float:
    rep = report.phase("database")
    assert rep.outcome is Outcome.OK
    assert rep.timeout is not None
    assert rep.timeout.attempt_seconds is not None
    return rep.timeout.attempt_seconds


async def two_runs(
    proxy: FaultProxy, dsn: str, path: Path, *, slow: bool
) -> tuple[float, float, list[float], Database, str]:
    """Run 1, the app's connects (slow or not), run 2: the two per-attempt deadlines,
    the latencies run 1's connects recorded, run 2's database and the history key."""
    store = SQLiteHistoryStore(path)
    first = App(dsn, store)
    async with lifecycle(first.startup, settings=first.settings, store=store) as run:
        assert run.report is not None
        assert run.report.state is State.READY
        db1: Database = first.seen["db"]
        deadline1 = learned(run.report)
        # Run 1 has no attempt history yet: its deadline is the split of the
        # phase's, and the database's connects use that one too.
        assert db1.attempt_seconds == pytest.approx(deadline1)
        assert pool_timeout(db1.pool) == pytest.approx(deadline1)
        if slow:
            proxy.set_mode("forward", latency=LATENCY)
        try:
            recorded = await connects(db1, direct=SLOW_DIRECT, pooled=SLOW_POOLED)
        finally:
            proxy.set_mode("forward")
        key = run.report.phase("database").target
    # The run wrote what the app's connects recorded (at shutdown): the store has it.
    stored = [float(s.seconds or 0.0) for s in store.load(key).attempts]
    assert len(recorded) == SLOW_DIRECT + SLOW_POOLED
    assert stored[-len(recorded) :] == pytest.approx(recorded)

    second = App(dsn, store)
    async with lifecycle(second.startup, settings=second.settings, store=store) as run:
        assert run.report is not None
        assert run.report.state is State.READY
        db2: Database = second.seen["db"]
        deadline2 = learned(run.report)
        # The deadline the run learned is the one its database and pool use.
        assert db2.attempt_seconds == pytest.approx(deadline2)
        assert db2.connect_arguments()["timeout"] == pytest.approx(deadline2)
        assert pool_timeout(db2.pool) == pytest.approx(deadline2)
        # A pool the app creates later is bounded the same way.
        extra = db2.create_pool(min_size=1, max_size=1)
        async with extra as pool:
            assert pool_timeout(pool) == pytest.approx(deadline2)
            assert await pool.fetchval("SELECT 2") == 2
    return deadline1, deadline2, recorded, db2, key


@pytest.mark.slow
async def test_a_pool_created_after_a_slow_episode_gets_the_grown_deadline(
    fault_proxy: FaultProxy, pg_dsn: str, tmp_path: Path
) -> None:
    dsn = fault_proxy.dsn(pg_dsn)
    # The same two runs twice: once with a slow episode between them (the
    # proxy adds latency while the app connects after startup), once without.
    _, grown, slow, _, key = await two_runs(fault_proxy, dsn, tmp_path / "slow.db", slow=True)
    _, steady, fast, _, _ = await two_runs(fault_proxy, dsn, tmp_path / "fast.db", slow=False)
    assert all(s >= AT_LEAST for s in slow)  # the episode was slow, and recorded so
    assert max(fast) < AT_LEAST
    # After the slow episode the learned per-attempt deadline covers what the
    # database needed then, and is longer than what a fast history teaches.
    assert grown >= max(slow)
    assert grown > steady
    history = SQLiteHistoryStore(tmp_path / "slow.db").load(key)
    # probe + pool, run 1; the slow episode; probe + pool + the extra pool, run 2.
    assert len(history.attempts) == 2 + SLOW_DIRECT + SLOW_POOLED + 3


async def test_a_hand_built_database_has_no_deadline_and_records_nothing(pg_dsn: str) -> None:
    db = Database(PostgresOptions.from_dsn(pg_dsn))
    assert db.attempt_seconds is None
    assert "timeout" not in db.connect_arguments()
    conn = await db.connect()
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    with pytest.raises(ValueError, match="attempt_seconds"):
        Database(PostgresOptions.from_dsn(pg_dsn), attempt_seconds=0.0)


async def test_connects_the_server_refuses_are_recorded_when_it_answered(
    pg_limited_dsn: str,
) -> None:
    """53300 (CONNECTION LIMIT 0) is the server's own answer: its latency is learned.
    An explicit timeout wins over the learned one."""
    history = TimingHistory()
    db = Database(PostgresOptions.from_dsn(pg_limited_dsn), attempt_seconds=3.0, history=history)
    assert db.connect_arguments()["timeout"] == 3.0
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.connect(timeout=5.0)
    assert info.value.sqlstate == "53300"
    assert len(history.attempts) == 1


async def test_a_dsn_connect_timeout_caps_the_deadline(pg_dsn: str) -> None:
    options = PostgresOptions.from_dsn(pg_dsn + "?connect_timeout=2")
    assert Database(options, attempt_seconds=7.5).attempt_seconds == 2.0
    assert Database(options, attempt_seconds=0.8).attempt_seconds == 0.8
