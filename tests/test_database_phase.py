"""DatabasePhase through the real sequencer against the real cluster and faults.

The phase's outcome must follow the bypass matrix in development (permissive),
staging (conditional: needs healthy history and a healable kind) and
production (strict); a ready database is published to later phases; attempt
latencies are learned; the pool is closed at teardown.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
import structlog.testing
from pgbed.cluster import AppCredentials, PgCluster, free_port
from pgbed.proxy import FaultProxy
from pydantic import SecretStr

from smd import (
    FailureKind,
    InvalidPlan,
    Outcome,
    PhaseContext,
    PhaseError,
    Report,
    Startup,
    StartupFailed,
    State,
    load_settings,
    run_startup,
)
from smd.checks.postgres import PostgresOptions
from smd.clock import SystemClock
from smd.history import MemoryHistoryStore
from smd.phases import Database, DatabasePhase
from smd.timeouts import FixedTimeout, Sample, Series, TimeoutDecision, TimingHistory

pytestmark = pytest.mark.postgres

SECRET = "wr0ng-Secret-pw"


async def run(
    startup: Startup, environment: str, store: MemoryHistoryStore | None = None, **settings: Any
) -> Report:
    """Run and return the report, whether startup succeeded or not."""
    cfg = load_settings(environment=environment, history_enabled=False, **settings)
    try:
        return await run_startup(startup, settings=cfg, store=store or MemoryHistoryStore())
    except StartupFailed as failed:
        return failed.report


def healthy_history(store: MemoryHistoryStore, target: str, n: int = 30) -> None:
    now = time.time()
    store.append(
        target,
        [Sample(Series.READY, now - 60.0 * (n - i), seconds=0.02) for i in range(n)],
    )


def refused_dsn(password: str = SECRET) -> str:
    return f"postgresql://smd_app:{password}@127.0.0.1:{free_port()}/smd_app"


def test_database_phase_is_a_phase_with_adaptive_timeout_and_dsn_target() -> None:
    from smd.timeouts import AdaptiveTimeout

    dp = DatabasePhase(f"postgresql://app:{SECRET}@db.internal:5433/orders", requires=["config"])
    phase = dp.to_phase()
    assert phase.name == "database"
    assert phase.requires == ("config",)
    assert isinstance(phase.timeout, AdaptiveTimeout)
    assert phase.target == "postgres://db.internal:5433/orders"
    assert phase.teardown is not None
    assert phase.recovery is not None
    assert SECRET not in repr(dp)
    assert DatabasePhase(timeout=3).to_phase().timeout == 3.0
    with pytest.raises(ValueError, match="SMD_DATABASE_URL"):
        DatabasePhase(settings_dsn=False)


async def test_ready_database_is_published_learned_and_torn_down(
    pg: PgCluster, pg_dsn: str
) -> None:
    startup = Startup("svc")
    startup.add(DatabasePhase(pg_dsn, pool=True, pool_kwargs={"min_size": 1, "max_size": 2}))
    seen: dict[str, Any] = {}

    @startup.phase(requires=["database"])
    async def use(ctx: PhaseContext) -> None:
        db: Database = ctx["database"]
        seen["db"] = db
        assert db.pool is not None
        async with db.pool.acquire() as conn:
            seen["pooled"] = await conn.fetchval("SELECT 40 + 2")
        conn2 = await db.connect()
        try:
            seen["direct"] = await conn2.fetchval("SELECT current_database()")
        finally:
            await conn2.close()

    store = MemoryHistoryStore()
    report = await run(startup, "test", store)
    assert report.state is State.READY
    rep = report.phase("database")
    assert rep.outcome is Outcome.OK
    # The history key names the startup, the database (no user, no password)
    # and the environment.
    assert rep.target == f"svc/postgres://{pg.host}:{pg.port}/smd_app@test"
    assert len(rep.attempts) == 1
    assert rep.attempts[0].ok
    assert seen["pooled"] == 42
    assert seen["direct"] == "smd_app"
    db: Database = seen["db"]
    assert db.target == f"postgres://{pg.host}:{pg.port}/smd_app"
    assert db.pool is not None
    assert db.pool.is_closing()  # teardown closed the pool
    history = store.load(rep.target)
    # The phase's probe, then the Database's own connects (the pool's first
    # connection and the direct connect a later phase made): the learned
    # per-attempt deadline bounds them, and they teach it too.
    assert len(history.attempts) == 3
    assert len(history.ready) == 1  # the sequencer recorded the time to ready
    assert not history.ready[0].censored


async def test_dsn_from_settings(pg_dsn: str) -> None:
    startup = Startup("svc")
    startup.add(DatabasePhase())
    report = await run(startup, "production", database_url=SecretStr(pg_dsn))
    assert report.state is State.READY
    # The history key is the database itself (no user, no password), known
    # once settings are loaded.
    host_port_db = pg_dsn.split("@", 1)[1].split("?", 1)[0]
    assert report.phase("database").target == f"svc/postgres://{host_port_db}@production"


async def test_no_dsn_anywhere_is_a_configuration_failure() -> None:
    startup = Startup("svc")
    startup.add(DatabasePhase())
    report = await run(startup, "production")
    rep = report.phase("database")
    assert rep.outcome is Outcome.FAILED
    assert rep.failure is not None
    assert rep.failure.kind is FailureKind.CONFIGURATION
    assert "SMD_DATABASE_URL" in rep.failure.message


# (environment, fault, seed healthy history?, expected outcome)
MATRIX = [
    ("development", "refused", False, Outcome.BYPASSED),
    ("development", "password", False, Outcome.BYPASSED),
    ("staging", "refused", True, Outcome.BYPASSED),
    ("staging", "refused", False, Outcome.FAILED),  # no evidence of health: no bypass
    ("staging", "password", True, Outcome.FAILED),  # configuration is never bypassed
    ("production", "refused", True, Outcome.FAILED),
    ("production", "password", True, Outcome.FAILED),
]


@pytest.mark.parametrize(("environment", "fault", "seed", "expected"), MATRIX)
async def test_outcome_follows_the_bypass_matrix(
    pg: PgCluster,
    pg_app: AppCredentials,
    environment: str,
    fault: str,
    seed: bool,
    expected: Outcome,
) -> None:
    if fault == "refused":
        dsn, kind = refused_dsn(), FailureKind.INFRASTRUCTURE
    else:
        dsn, kind = pg.dsn(pg_app.user, SECRET, pg_app.database), FailureKind.CONFIGURATION
    store = MemoryHistoryStore()
    target = f"svc/{PostgresOptions.from_dsn(dsn).target_key()}@{environment}"
    if seed:
        healthy_history(store, target)
    startup = Startup("svc")
    startup.add(DatabasePhase(dsn, timeout=0.6))
    ran: list[str] = []

    @startup.phase()
    async def other(ctx: PhaseContext) -> None:
        ran.append("other")

    report = await run(startup, environment, store)
    rep = report.phase("database")
    assert rep.outcome is expected, rep.reason
    assert rep.target == target
    assert rep.failure is not None
    assert rep.failure.kind is kind
    assert rep.decision is not None
    if kind is FailureKind.CONFIGURATION:
        assert rep.failure.attempts == 1
        assert rep.failure.code == "28P01"
        assert rep.failure.details["sqlstate"] == "28P01"
    else:
        assert rep.failure.attempts >= 2
        # The phase's own classified failure, not the sequencer's cut-off.
        assert "refused" in rep.failure.message
    assert len(rep.attempts) == rep.failure.attempts
    expected_state = State.DEGRADED if expected is Outcome.BYPASSED else State.FAILED
    assert report.state is expected_state
    assert SECRET not in str(report.to_dict())


async def test_blackhole_ends_with_the_phase_own_timeout_failure(
    fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    fault_proxy.set_mode("blackhole")
    startup = Startup("svc")
    startup.add(DatabasePhase(fault_proxy.dsn(pg_dsn), timeout=FixedTimeout(1.0)))
    report = await run(startup, "production")
    rep = report.phase("database")
    assert rep.outcome is Outcome.FAILED
    assert rep.failure is not None
    assert rep.failure.kind is FailureKind.TIMEOUT
    # Stopped by its own loop just before the sequencer's deadline, so the
    # report says how many attempts and what they saw: one attempt, given all
    # that the deadline left (less the phase's margin), cut off by that timeout.
    assert rep.failure.attempts == len(rep.attempts) == 1
    (attempt,) = rep.attempts
    assert attempt.detail["kind"] == "timeout"
    given = attempt.detail["timeout"]
    assert isinstance(given, float)
    assert rep.deadline is not None
    assert rep.deadline == pytest.approx(1.0)
    assert 0 < given < rep.deadline
    assert rep.failure.message.startswith(f"no answer within the attempt timeout of {given:.3g}s (")
    assert rep.failure.deadline_reached
    assert "did not finish within its deadline" not in rep.failure.message
    assert "overran" not in rep.failure.message


def _ctx(phase: DatabasePhase, seconds: float, history: TimingHistory) -> PhaseContext:
    import structlog

    return PhaseContext(
        phase=phase.to_phase(),
        settings=load_settings(environment="test", history_enabled=False),
        log=structlog.get_logger("test"),
        results={},
        timeout=TimeoutDecision(seconds, "fixed", "test"),
        deadline=anyio.current_time() + seconds,
        history=history,
        clock=SystemClock(),
    )


async def test_recovery_probe_raises_until_the_database_is_back(
    fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    dp = DatabasePhase(fault_proxy.dsn(pg_dsn))
    history = TimingHistory()
    fault_proxy.set_mode("refuse")
    with pytest.raises(PhaseError) as info:
        await dp.recover(_ctx(dp, 2.0, history))
    assert info.value.failure.kind is FailureKind.INFRASTRUCTURE
    assert history.attempts == ()  # refused: nothing answered
    fault_proxy.set_mode("forward")
    ctx = _ctx(dp, 2.0, history)
    db = await dp.recover(ctx)
    assert isinstance(db, Database)
    assert db.pool is None  # nothing opened that a caller could leak
    conn = await db.connect()
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert len(history.attempts) == 2  # the recovery probe, then the Database's connect
    assert ctx.attempts[0].ok


async def test_run_function_with_a_hand_built_context_records_attempts(
    pg_limited_dsn: str,
) -> None:
    dp = DatabasePhase(pg_limited_dsn)
    history = TimingHistory()
    ctx = _ctx(dp, 0.6, history)
    with pytest.raises(PhaseError) as info:
        await dp.run(ctx)
    failure = info.value.failure
    assert failure.kind is FailureKind.INFRASTRUCTURE
    assert failure.code == "53300"
    assert failure.details["sqlstate"] == "53300"
    assert failure.attempts >= 2
    assert len(history.attempts) == failure.attempts  # each 53300 was answered
    assert len(ctx.attempts) == failure.attempts
    assert history.ready == ()  # time to ready is the sequencer's to record


async def test_learned_timeout_shrinks_after_healthy_runs(pg_dsn: str) -> None:
    store = MemoryHistoryStore()
    seconds: list[float] = []
    sources: list[str] = []
    for _ in range(10):
        startup = Startup("svc")
        startup.add(DatabasePhase(pg_dsn))
        report = await run(startup, "staging", store)
        rep = report.phase("database")
        assert rep.outcome is Outcome.OK
        assert rep.timeout is not None
        seconds.append(rep.timeout.seconds)
        sources.append(rep.timeout.source)
    default = load_settings(environment="staging").timeouts.staging.default
    assert sources[0] == "default"
    assert seconds[0] == pytest.approx(default)
    assert sources[-1] == "adaptive"
    assert seconds[-1] < default


@pytest.mark.parametrize(
    "dsn", ["not a dsn", "postgresql://u:hunter2-marker@h:notaport/db", "mysql://u:p@h/db"]
)
def test_a_bad_dsn_in_code_is_an_invalid_plan_at_declaration(dsn: str) -> None:
    with pytest.raises(InvalidPlan) as info:
        DatabasePhase(dsn)
    assert "phase 'database'" in str(info.value)
    assert "hunter2-marker" not in str(info.value)


# -- a full server is not a dead one --------------------------------------------------

BUSY_ROLE = "smd_busy"
BUSY_PASSWORD = "busy-role-pw-4711"


@pytest.mark.parametrize("policy", ["adaptive", "fixed"])
async def test_a_learned_deadline_gives_way_when_the_server_is_full(
    pg: PgCluster, policy: str
) -> None:
    # The fleet's connection storm, on one role: every login is refused with
    # 53300 (CONNECTION LIMIT 0) for 1.5 s, far past the deadline learned
    # from healthy 20 ms starts (the test environment's floor, 0.5 s). The
    # server is up, only full: a learned deadline gives way to the one
    # without history (10 s here) and the phase waits for a slot. A fixed
    # deadline is the user's and stays.
    pg.create_role(BUSY_ROLE, BUSY_PASSWORD, connection_limit=0)
    try:
        dsn = pg.dsn(BUSY_ROLE, BUSY_PASSWORD, "postgres")
        store = MemoryHistoryStore()
        healthy_history(store, f"svc/{PostgresOptions.from_dsn(dsn).target_key()}@test")
        startup = Startup("svc")
        timeout = None if policy == "adaptive" else FixedTimeout(0.5)
        startup.add(DatabasePhase(dsn, timeout=timeout))
        with structlog.testing.capture_logs() as logs:

            def open_role() -> None:
                # Marked in the captured log, so the order of what the phase
                # did and when the server got a slot can be read from it.
                logs.append({"event": "test.opening_role"})
                pg.sql(f"ALTER ROLE {BUSY_ROLE} CONNECTION LIMIT -1")

            opened = threading.Timer(1.5, open_role)
            opened.start()
            try:
                report = await run(startup, "test", store)
            finally:
                opened.join()
    finally:
        pg.sql(f"DROP ROLE IF EXISTS {BUSY_ROLE}")
    rep = report.phase("database")
    assert rep.timeout is not None
    assert rep.timeout.seconds == pytest.approx(0.5)  # learned or fixed: the same 0.5 s
    if policy == "fixed":
        assert rep.outcome is Outcome.FAILED
        assert rep.failure is not None
        assert rep.failure.code == "53300"
        assert rep.deadline == pytest.approx(0.5)
        assert "extended" not in rep.deadline_source
        assert rep.deadline_extended == ""
        assert not [e for e in logs if e["event"] == "smd.database.deadline_extended"]
        return
    assert rep.timeout.source == "adaptive"
    assert rep.outcome is Outcome.OK, rep.failure
    no_data = load_settings(environment="test").timeouts.test.default
    assert rep.deadline == pytest.approx(no_data)
    assert "extended to 10s" in rep.deadline_source
    (extended,) = (e for e in logs if e["event"] == "smd.database.deadline_extended")
    # The learned deadline ran out while the server was still full, the phase
    # went on waiting (extended before the role got a slot), and it was ready
    # only after the slot was made.
    order = [e["event"] for e in logs]
    assert order.index("smd.database.deadline_extended") < order.index("test.opening_role"), order
    assert order.index("test.opening_role") < order.index("smd.database.ready"), order
    assert extended["deadline"] == pytest.approx(no_data)
    assert "53300" in extended["reason"]
    assert "53300" in rep.deadline_source
    assert "53300" in rep.deadline_extended
    assert rep.deadline_extended in rep.deadline_source
    refused = [a for a in rep.attempts if a.detail.get("code") == "53300"]
    assert refused  # refused while full...
    assert rep.attempts[-1].ok  # ...then in
