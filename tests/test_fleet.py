"""Once-per-fleet work under a PostgreSQL advisory lock, against the real cluster.

Real processes where the issue asks for them: 30 concurrent ``smd run`` of a
startup with a ``once=True`` phase (tests/targets/fleet_once.py; its work
counts its runs in a table), the holder killed with SIGKILL half-way, a
failed once phase retried by the next replica. Each process writes its
``--report``: what the engine says about the phase (outcome, the note "done
by another replica (...) at ...") is checked against what the table and the
completion record say. In-process, against the same server: the fast path
calls no lock function (a database where ``pg_try_advisory_lock`` may not be
executed, and ``pg_locks``), waiters hold no connection while they wait
(``pg_stat_activity``), a holder whose session is terminated stops its work,
and a transaction-pooling pgbouncer fails with one clear line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from pgbed.cluster import AppCredentials, PgCluster
from pgbed.pgbouncer import PGBOUNCER, Pgbouncer
from pgbed.proxy import FaultProxy

from smd import Failure, FailureKind, PhaseError, load_settings
from smd.checks import postgres_fleet
from smd.checks._pg_lock_session import lock_parts
from smd.checks.postgres_fleet import (
    AdvisoryLockCoordinator,
    FleetSettings,
    coordinator_factory,
    lock_id,
)
from smd.clock import SystemClock
from smd.history import SQLiteHistoryStore, target_key
from smd.plugins import OnceOutcome

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
TARGET = str(ROOT / "tests" / "targets" / "fleet_once.py") + ":startup"
DB = "smd_fleet_tests"


@pytest.fixture(scope="module")
def fleet_dsn(pg: PgCluster, pg_app: AppCredentials) -> str:
    pg.create_database(DB, owner=pg_app.user)
    dsn = pg.dsn(pg_app.user, pg_app.password, DB)
    pg.sql(
        "CREATE TABLE IF NOT EXISTS once_runs (key text, who text, event text, "
        "at timestamptz DEFAULT now())",
        database=DB,
    )
    pg.sql(f"GRANT ALL ON once_runs TO {pg_app.user}", database=DB)
    return dsn


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}/{time.time_ns()}"


def runs(pg: PgCluster, key: str) -> list[tuple[str, str]]:
    out = pg.sql(f"SELECT who, event FROM once_runs WHERE key = '{key}' ORDER BY at", database=DB)
    return [(who, event) for who, _, event in (line.partition("|") for line in out.splitlines())]


def record(pg: PgCluster, key: str) -> str:
    return pg.sql(f"SELECT done_by FROM smd.once_done WHERE key = '{key}'", database=DB)


def smd_run(tmp: Path, dsn: str, key: str, i: int, **env: str) -> subprocess.Popen[str]:
    """Replica ``i``: ``smd run`` of the once target, its report at ``report-<i>.json``."""
    full = {
        **os.environ,
        "SMD_DATABASE_URL": dsn,
        "SMD_ENVIRONMENT": "test",
        "SMD_LOG_FORMAT": "json",
        "SMD_HISTORY_PATH": str(tmp / f"history-{i}.sqlite3"),
        "SMDTEST_ONCE_KEY": key,
        **env,
    }
    full.pop("SMD_FLEET_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smd", "run", TARGET, "--report", str(tmp / f"report-{i}.json")],
        env=full,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


DONE_ELSEWHERE = re.compile(r"^done by another replica \((?P<by>[^)]+)\) at (?P<at>\S+)$")


def migrate_report(tmp: Path, i: int) -> dict[str, Any]:
    """The ``migrate`` phase of replica ``i``'s report."""
    report = json.loads((tmp / f"report-{i}.json").read_text())
    (phase,) = [p for p in report["phases"] if p["name"] == "migrate"]
    found: dict[str, Any] = {**phase, "exit_code": report["exit_code"]}
    return found


def done_by(phase: dict[str, Any], since: float) -> str | None:
    """Who the engine's note says did the work (``None``: this replica ran it); the
    time it names is a wall-clock time of this test's (after ``since``)."""
    if phase["note"] == "":
        return None
    match = DONE_ELSEWHERE.match(phase["note"])
    assert match is not None, phase["note"]
    when = datetime.fromisoformat(match["at"]).timestamp()
    # The note's time is truncated to the millisecond.
    assert since - 0.001 <= when <= time.time(), (since, phase["note"])
    return match["by"]


def ready_samples(tmp: Path, i: int) -> int:
    """The ``migrate`` time-to-ready samples replica ``i`` learned (its local history)."""
    store = SQLiteHistoryStore(tmp / f"history-{i}.sqlite3", readonly=True)
    key = target_key("fleet_once", "phase:migrate", "test")
    return len(store.load_many([key], clock=SystemClock())[key].ready)


@pytest.mark.slow
def test_thirty_concurrent_smd_runs_run_the_once_work_exactly_once(
    pg: PgCluster, fleet_dsn: str, key: str, tmp_path: Path
) -> None:
    since = time.time()
    procs = [smd_run(tmp_path, fleet_dsn, key, i, SMDTEST_ONCE_SLEEP="2") for i in range(30)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    results = [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
    assert [rc for rc, _ in results] == [0] * 30, [out[-2000:] for rc, out in results if rc]
    assert [e for _, e in runs(pg, key)] == ["started", "completed"]
    (who, _), _ = runs(pg, key)
    assert record(pg, key) == who
    phases = [migrate_report(tmp_path, i) for i in range(30)]
    assert {p["outcome"] for p in phases} == {"ok"}
    by = [done_by(p, since) for p in phases]
    ran = [i for i, b in enumerate(by) if b is None]
    assert len(ran) == 1  # the engine says exactly one replica ran it...
    assert procs[ran[0]].pid == int(who.rpartition(":")[2])  # ...the one the table names
    assert {b for b in by if b is not None} == {who}  # the others name it, with when
    # A skip took milliseconds: no time-to-ready was learned from it.
    assert [ready_samples(tmp_path, i) for i in range(30)] == [
        1 if i == ran[0] else 0 for i in range(30)
    ]


@pytest.mark.slow
def test_sigkill_of_the_holder_halfway_lets_another_replica_complete_it(
    pg: PgCluster, fleet_dsn: str, key: str, tmp_path: Path
) -> None:
    since = time.time()
    procs = [smd_run(tmp_path, fleet_dsn, key, i, SMDTEST_ONCE_SLEEP="4") for i in range(6)]
    deadline = time.monotonic() + 60
    while not runs(pg, key) and time.monotonic() < deadline:
        time.sleep(0.05)
    ((holder, event),) = runs(pg, key)
    assert event == "started"
    pid = int(holder.rpartition(":")[2])
    victim = next(p for p in procs if p.pid == pid)
    time.sleep(1.0)  # half-way through the work
    os.kill(pid, signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=120)
    codes = {p.pid: p.returncode for p in procs}
    assert codes.pop(victim.pid) == -signal.SIGKILL
    assert set(codes.values()) == {0}
    events = runs(pg, key)
    assert [e for _, e in events] == ["started", "started", "completed"]
    completer = events[2][0]
    assert completer != holder
    assert events[1][0] == completer
    assert record(pg, key) == completer
    # Every survivor's report: the completer ran it, the others say it did.
    survivors = [i for i, p in enumerate(procs) if p.pid != victim.pid]
    phases = {procs[i].pid: migrate_report(tmp_path, i) for i in survivors}
    assert {p["outcome"] for p in phases.values()} == {"ok"}
    by = {pid: done_by(p, since) for pid, p in phases.items()}
    assert by.pop(int(completer.rpartition(":")[2])) is None
    assert set(by.values()) == {completer}


def test_a_failed_once_work_records_nothing_and_the_next_replica_runs_it(
    pg: PgCluster, fleet_dsn: str, key: str, tmp_path: Path
) -> None:
    first = smd_run(tmp_path, fleet_dsn, key, 0, SMDTEST_ONCE_FAIL="1", SMDTEST_ONCE_SLEEP="0")
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 70, out[-2000:]  # the phase's own code failed
    failed = migrate_report(tmp_path, 0)
    assert (failed["outcome"], failed["failure"]["kind"]) == ("failed", "application")
    assert "the once work failed on purpose" in failed["failure"]["message"]
    assert record(pg, key) == ""
    second = smd_run(tmp_path, fleet_dsn, key, 1, SMDTEST_ONCE_SLEEP="0")
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out[-2000:]
    retried = migrate_report(tmp_path, 1)
    assert (retried["outcome"], retried["note"]) == ("ok", "")  # it ran here, not skipped
    events = runs(pg, key)
    assert [e for _, e in events] == ["started", "started", "completed"]
    assert record(pg, key) == events[2][0] != events[0][0]


# -- in-process, against the same server ----------------------------------------------


async def superuser(pg: PgCluster, database: str = DB) -> asyncpg.Connection:
    return await asyncpg.connect(pg.dsn("postgres", database=database))


async def test_the_fast_path_calls_no_lock_function(
    pg: PgCluster, pg_app: AppCredentials, key: str
) -> None:
    # In this database nobody but a superuser may call pg_try_advisory_lock:
    # a run that found the work done and still probed the lock would fail.
    db = "smd_fleet_nolock"
    pg.create_database(db, owner=pg_app.user)
    pg.sql(
        "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_try_advisory_lock(bigint) FROM PUBLIC",
        database=db,
    )
    dsn = pg.dsn(pg_app.user, pg_app.password, db)
    coordinator = AdvisoryLockCoordinator(dsn, identity="fast")
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    with pytest.raises(PhaseError) as err:  # control: not done, so it must probe the lock
        await coordinator.run_once(key + "/control", work, deadline_seconds=5)
    assert err.value.failure.kind is FailureKind.CONFIGURATION
    assert err.value.failure.code == "42501"
    recorded = time.time()
    pg.sql(f"INSERT INTO smd.once_done (key, done_by) VALUES ('{key}', 'elsewhere:1')", database=db)
    outcome = await AdvisoryLockCoordinator(dsn, identity="fast").run_once(
        key, work, deadline_seconds=5
    )
    assert (outcome.ran, outcome.done_by, ran) == (False, "elsewhere:1", [])
    # When the record says it was done: the wall-clock time of the insert above.
    assert outcome.done_at is not None
    assert recorded <= outcome.done_at <= time.time()


async def test_pg_locks_shows_the_holder_alone_and_nothing_once_done(
    pg: PgCluster, fleet_dsn: str, key: str
) -> None:
    lock = lock_id("smd", key)
    high, low = (lock & 0xFFFFFFFFFFFFFFFF) >> 32, lock & 0xFFFFFFFF
    watch = await superuser(pg)
    query = (
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid "
        "AND l.objid = $2::bigint::oid AND l.objsubid = 1"
    )
    seen: list[list[str]] = []
    started = anyio.Event()

    async def work() -> None:
        started.set()
        await anyio.sleep(1.0)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: AdvisoryLockCoordinator(fleet_dsn, identity="holder").run_once(
                    key, work, deadline_seconds=10
                )
            )
            await started.wait()
            seen.append([r[0] for r in await watch.fetch(query, high, low)])
        assert seen == [["smd fleet holder"]]
        # Done: a burst of fast paths while pg_locks is sampled: no lock, ever.
        samples: list[int] = []

        async def sample() -> None:
            for _ in range(200):
                samples.append(len(await watch.fetch(query, high, low)))

        async def fast(i: int) -> None:
            c = AdvisoryLockCoordinator(fleet_dsn, identity=f"fast{i}")
            for _ in range(5):
                outcome = await c.run_once(key, work, deadline_seconds=5)
                assert outcome.ran is False
                assert outcome.done_by is not None

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            for i in range(10):
                tg.start_soon(fast, i)
        assert len(samples) == 200
        assert set(samples) == {0}
    finally:
        await watch.close()


class _Waiter(AdvisoryLockCoordinator):
    """The coordinator, recording what each of its probes was given and found."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.give_up: list[float] = []  # the deadline each probe's connection was given
        self.sessions: list[asyncpg.Connection] = []  # each probe's connection
        self.delays: list[float] = []  # the backoff decided before each probe
        self.holders: list[str | None] = []  # who holds the lock, as each probe knew it

    def _delay(self, retry: int, waited: float) -> float:
        delay = super()._delay(retry, waited)
        self.delays.append(delay)
        return delay

    async def _probe_connect(
        self, key: str, deadline: float
    ) -> tuple[asyncpg.Connection | None, Failure | None]:
        self.give_up.append(deadline)
        conn, refused = await super()._probe_connect(key, deadline)
        if conn is not None:
            self.sessions.append(conn)
        return conn, refused

    async def _probe(self, *args: Any) -> tuple[OnceOutcome | None, bool, str | None]:
        found = await super()._probe(*args)
        self.holders.append(found[2])
        return found


class _FleetClock:
    """``anyio`` as ``smd.checks.postgres_fleet`` sees it: the real one, recording
    (for the task that made it) every reading of the clock and every wait asked
    for, with the reading it was planned from; that task's waits are
    ``wait(seconds)``, which must sleep them."""

    def __init__(self, wait: Callable[[float], Awaitable[None]]) -> None:
        self.task = asyncio.current_task()
        self.readings: list[float] = []
        self.waits: list[tuple[float, float]] = []  # (the last reading, seconds)
        self._wait = wait

    def __getattr__(self, name: str) -> Any:
        return getattr(anyio, name)

    def current_time(self) -> float:
        now = anyio.current_time()
        if asyncio.current_task() is self.task:
            self.readings.append(now)
        return now

    async def sleep(self, seconds: float) -> None:
        if asyncio.current_task() is not self.task:
            await anyio.sleep(seconds)
            return
        self.waits.append((self.readings[-1], seconds))
        await self._wait(seconds)


async def test_a_waiter_holds_no_connection_while_it_waits_and_names_the_holder(
    pg: PgCluster, fleet_dsn: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = await superuser(pg)
    release = anyio.Event()
    started = anyio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    waiter = _Waiter(fleet_dsn, identity="waiter")
    # As each wait began: were all its probes' sessions closed (the client's
    # view), and how many sessions of the waiter's did the server have? (A
    # polite close returns once the server dropped the connection, and a
    # backend leaves pg_stat_activity before it drops it.)
    closed: list[bool] = []
    on_server: list[int] = []

    async def wait(seconds: float) -> None:
        end = anyio.current_time() + seconds
        closed.append(all(c.is_closed() for c in waiter.sessions))
        on_server.append(
            await watch.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'smd fleet waiter'"
            )
        )
        await anyio.sleep_until(end)  # the wait it asked for, the query included

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: AdvisoryLockCoordinator(fleet_dsn, identity="holder").run_once(
                    key, slow, deadline_seconds=20
                )
            )
            await started.wait()
            clock = _FleetClock(wait)
            monkeypatch.setattr(postgres_fleet, "anyio", clock)
            with anyio.fail_after(30), pytest.raises(PhaseError) as err:  # a hang guard
                await waiter.run_once(key, slow, deadline_seconds=3)
            release.set()
    finally:
        await watch.close()
    f = err.value.failure
    assert f.kind is FailureKind.TIMEOUT
    assert f.deadline_reached
    assert f.message == (
        f"once-per-fleet work {key!r} was still being run by replica holder when this "
        f"replica's deadline of 3s came (the fleet lock on {waiter.options.target_key()})"
    )
    # The deadline it used: its first reading is its start; it gives up 5 % of
    # its 3 s (0.15 s) before their end, and every probe's connection had that.
    start = clock.readings[0]
    give_up = start + 3.0 - 0.15
    assert waiter.give_up == [pytest.approx(give_up, abs=1e-9)] * len(waiter.give_up)
    # Probes spaced by waits: one wait between two probes, none after the last.
    probes = len(waiter.give_up)
    assert probes >= 2
    assert len(clock.waits) == probes - 1
    assert len(waiter.sessions) == probes  # a new session each
    assert len({id(c) for c in waiter.sessions}) == probes
    last_probe = give_up - 0.05  # the final probe's moment (_FINAL_PROBE before giving up)
    for i, (now, seconds) in enumerate(clock.waits):
        # Never shorter than the backoff, except cut so the final probe comes just
        # before giving up; never planned past that moment.
        assert seconds >= min(waiter.delays[i], last_probe - now) - 1e-9, (i, seconds)
        assert now + seconds <= last_probe + 1e-9, (i, now, seconds)
    # It gave up only once what was left was the final probe's (not early).
    assert give_up - clock.readings[-1] <= 0.05 + 1e-9
    # The holder was looked up on the last probe only (the first did not ask).
    assert waiter.holders[0] is None
    assert waiter.holders[-1] == "holder"
    # It held no connection while it waited: as each wait began its sessions
    # were all closed, and the server had none of them.
    assert closed == [True] * (probes - 1)
    assert on_server == [0] * (probes - 1)


async def test_a_holder_whose_session_is_terminated_stops_its_work_and_records_nothing(
    pg: PgCluster, fleet_dsn: str, key: str
) -> None:
    watch = await superuser(pg)
    started = anyio.Event()
    finished: list[bool] = []

    async def work() -> None:
        started.set()
        await anyio.sleep(10)
        finished.append(True)

    async def terminate() -> None:
        await started.wait()
        await watch.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'smd fleet doomed'"
        )

    async def doomed() -> PhaseError:
        async with anyio.create_task_group() as tg:
            tg.start_soon(terminate)
            try:
                await AdvisoryLockCoordinator(fleet_dsn, identity="doomed").run_once(
                    key, work, deadline_seconds=20
                )
            except PhaseError as exc:
                return exc
        raise AssertionError("the run survived the loss of its lock's session")

    try:
        error = await doomed()  # the heartbeat noticed: the work never reached its end
    finally:
        await watch.close()
    assert error.failure.kind is FailureKind.INFRASTRUCTURE
    assert "lost the fleet lock" in str(error)
    assert finished == []
    assert record(pg, key) == ""
    ran: list[int] = []

    async def again() -> None:
        ran.append(1)

    outcome = await AdvisoryLockCoordinator(fleet_dsn, identity="next").run_once(
        key, again, deadline_seconds=5
    )
    assert outcome.ran
    assert ran == [1]
    assert record(pg, key) == "next"


async def test_a_silent_lock_session_never_keeps_the_work_past_its_deadline(
    pg: PgCluster, fleet_dsn: str, key: str
) -> None:
    # The heartbeat's query is shielded (a statement cancelled half-way leaves
    # the session unknown) but bounded by the deadline as well as by its 5 s:
    # when the lock's session goes silent the deadline ends the phase as a
    # timeout, not a heartbeat that outlived it by seconds.
    started = anyio.Event()

    async def work() -> None:
        started.set()
        await anyio.sleep(30)

    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        coordinator = AdvisoryLockCoordinator(
            proxy.dsn(fleet_dsn), identity="silent", heartbeat_seconds=0.2
        )

        async def go_silent() -> None:
            await started.wait()
            proxy.set_mode("blackhole")

        async def silenced() -> PhaseError:
            async with anyio.create_task_group() as tg:
                tg.start_soon(go_silent)
                try:
                    await coordinator.run_once(key, work, deadline_seconds=1.5)
                except PhaseError as exc:
                    return exc
            raise AssertionError("the work outlived a silent lock session and its deadline")

        failure = (await silenced()).failure
    # Without the bound: INFRASTRUCTURE, "did not answer within 5s", long after the deadline.
    assert failure.kind is FailureKind.TIMEOUT, failure.message
    assert "did not finish within its deadline" in failure.message
    assert record(pg, key) == ""


async def test_a_waiter_whose_probe_stalls_gives_up_at_its_deadline(
    pg: PgCluster, fleet_dsn: str, key: str
) -> None:
    # The server accepts the probe's session but its statements wait (a DDL
    # holds the completion table): the probe is bounded by the waiter's
    # deadline, not left to whoever cancels the phase.
    ready = AdvisoryLockCoordinator(fleet_dsn, identity="maker")
    await ready.run_once(f"{key}/schema", _nothing, deadline_seconds=5)  # the schema exists
    ddl = await superuser(pg)
    try:
        async with ddl.transaction():
            await ddl.execute("LOCK TABLE smd.once_done IN ACCESS EXCLUSIVE MODE")
            stalled = AdvisoryLockCoordinator(fleet_dsn, identity="stalled")
            with anyio.fail_after(30):  # a hang fails the test instead of the suite
                with pytest.raises(PhaseError) as err:
                    await stalled.run_once(key, _nothing, deadline_seconds=1.0)
    finally:
        await ddl.close()
    failure = err.value.failure
    assert failure.kind is FailureKind.TIMEOUT, failure.message
    assert failure.deadline_reached
    assert record(pg, key) == ""


async def _nothing() -> None:
    return None


async def test_a_forgotten_record_lets_the_next_replica_run_the_work_again(
    pg: PgCluster, fleet_dsn: str, key: str
) -> None:
    ran: list[str] = []

    def work(who: str) -> Any:
        async def run() -> None:
            ran.append(who)

        return run

    first = AdvisoryLockCoordinator(fleet_dsn, identity="first")
    assert (await first.run_once(key, work("first"), deadline_seconds=5)).ran
    second = AdvisoryLockCoordinator(fleet_dsn, identity="second")
    skipped = await second.run_once(key, work("second"), deadline_seconds=5)
    assert (skipped.ran, skipped.done_by) == (False, "first")
    assert await second.forget(key, deadline_seconds=5) is True
    assert record(pg, key) == ""
    assert await second.forget(key, deadline_seconds=5) is False  # nothing left to forget
    assert (await second.run_once(key, work("second"), deadline_seconds=5)).ran
    assert ran == ["first", "second"]
    assert record(pg, key) == "second"


@pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed")
@pytest.mark.parametrize("mode", ["transaction", "session"])
async def test_through_pgbouncer(pg: PgCluster, fleet_dsn: str, key: str, mode: str) -> None:
    # The app database of the session cluster (the bouncer logs in as the app role).
    ran: list[int] = []

    async def work() -> None:
        ran.append(1)

    with Pgbouncer.start(pg, pool_mode=mode) as bouncer:
        coordinator = AdvisoryLockCoordinator(bouncer.dsn(), identity="bounced")
        if mode == "session":
            outcome = await coordinator.run_once(key, work, deadline_seconds=10)
            assert outcome.ran
            assert ran == [1]
            return
        with pytest.raises(PhaseError) as err:
            await coordinator.run_once(key, work, deadline_seconds=10)
        # Detected before any lock was taken: no server session the bouncer
        # keeps holds this key's lock (checked while they live; closing the
        # bouncer would release a leaked one).
        high, low = lock_parts(lock_id("smd", key))
        leaked = pg.sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            f"AND classid = {high}::bigint::oid AND objid = {low}::bigint::oid",
            database=DB,
        )
        assert leaked == "0"
    f = err.value.failure
    assert f.kind is FailureKind.CONFIGURATION
    assert f.code == "fleet-lock"
    assert "\n" not in f.message
    assert "pgbouncer" in f.message
    assert "SMD_FLEET_URL" in f.message
    assert ran == []


def test_a_wrong_password_is_a_configuration_failure_without_the_password(
    pg: PgCluster, pg_app: AppCredentials, key: str
) -> None:
    secret = "n0t-the-Passw0rd"
    dsn = pg.dsn(pg_app.user, secret, DB)

    async def work() -> None:
        raise AssertionError("never runs")

    async def main() -> PhaseError:
        with pytest.raises(PhaseError) as err:
            await AdvisoryLockCoordinator(dsn).run_once(key, work, deadline_seconds=5)
        return err.value

    err = anyio.run(main)
    assert err.failure.kind is FailureKind.CONFIGURATION
    assert err.failure.code == "28P01"
    assert secret not in str(err)
    assert secret not in repr(err.failure)


def test_the_plugin_offers_a_coordinator_when_a_url_is_set(
    monkeypatch: pytest.MonkeyPatch, fleet_dsn: str
) -> None:
    for name in ("SMD_FLEET_URL", "SMD_DATABASE_URL", "SMD_HISTORY_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    assert coordinator_factory(load_settings()) is None
    monkeypatch.setenv("SMD_DATABASE_URL", fleet_dsn)
    found = coordinator_factory(load_settings())
    assert isinstance(found, AdvisoryLockCoordinator)
    assert found.schema == "smd"
    monkeypatch.setenv("SMD_FLEET_URL", "postgresql://fleet@elsewhere:5433/coord")
    monkeypatch.setenv("SMD_HISTORY_SCHEMA", "fleet_a")
    found = coordinator_factory(load_settings())
    assert isinstance(found, AdvisoryLockCoordinator)
    assert (found.options.target_key(), found.schema) == (
        "postgres://elsewhere:5433/coord",
        "fleet_a",
    )
    assert FleetSettings.of(load_settings()).history_schema == "fleet_a"


@pytest.fixture(autouse=True)
def _no_stray_locks(pg: PgCluster) -> Iterator[None]:
    yield
    # Every test leaves the server without advisory locks: nothing leaks a session.
    deadline = time.monotonic() + 5
    while pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") != "0":
        assert time.monotonic() < deadline, "an advisory lock outlived its test"
        time.sleep(0.05)
