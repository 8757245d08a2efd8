"""The PostgreSQL history store against the real cluster, with real processes.

- the protocol's semantics, like the SQLite store: batched reads, bounded
  per (target, series), target metadata upserted (and kept when a write
  carries none), read-only mode creating nothing;
- 120 concurrent writers (12 processes x 10 threads, one store each): no
  sample lost within the bound, the bound held exactly;
- 20 processes creating one schema at once: created once, one version row;
- a store that is down, blackholed or refusing the password raises
  StoreUnavailable, with no secret in the message: down, at its one refused
  connection attempt; blackholed, ended by the call's budget after one;
- a schema of a newer version is left untouched; a kept connection that was
  terminated is replaced; nothing stored holds a secret;
- through ``smd run`` with ``SMD_HISTORY_URL``, as a user sets it: a store
  that is down or blackholed costs one warning and one try of each call (the
  start is ready, learning into the embedded store); two replicas share
  learned history: a brand-new replica's first start uses the deadline the
  fleet learned (an empty local store, sharing nothing, gives the default).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pgbed.cluster import AppCredentials, PgCluster, free_port
from pgbed.proxy import FaultProxy

from smd import FailureKind, load_settings
from smd.checks import postgres_store
from smd.checks._pg_fleet import connect
from smd.checks.postgres_store import PostgresHistoryStore, open_store
from smd.clock import SystemClock
from smd.exceptions import StoreUnavailable
from smd.history import SQLiteHistoryStore, TargetInfo, target_key
from smd.plugins import store_factory
from smd.timeouts import Sample, Series

pytestmark = pytest.mark.postgres

DB = "smd_store_tests"
TARGET = target_key("api", "postgres://db.internal:5432/app", "production")


@pytest.fixture(scope="module")
def store_dsn(pg: PgCluster, pg_app: AppCredentials) -> str:
    pg.create_database(DB, owner=pg_app.user)
    return pg.dsn(pg_app.user, pg_app.password, DB)


@pytest.fixture
def schema(request: pytest.FixtureRequest) -> str:
    return f"h{time.time_ns() % 10**12}"


@pytest.fixture
def store(store_dsn: str, schema: str) -> Iterator[PostgresHistoryStore]:
    with PostgresHistoryStore(store_dsn, schema=schema, bound=5) as s:
        yield s


def ready(at: float, seconds: float = 0.1) -> Sample:
    return Sample(Series.READY, at, seconds)


def test_round_trip_bound_and_target_metadata(store: PostgresHistoryStore) -> None:
    info = TargetInfo(
        TARGET,
        "api",
        "postgres://db.internal:5432/app",
        "production",
        "database",
        {"type": "adaptive", "quantile": 0.99},
    )
    store.append_many(
        {
            TARGET: [ready(1000.0 + i, 0.01 * i) for i in range(8)],
            "api/phase:cache@production": [Sample(Series.ATTEMPT, 5.0, 0.2)],
        },
        {TARGET: info},
    )
    loaded = store.load_many([TARGET, "api/phase:cache@production", "unknown@production"])
    assert [s.at for s in loaded[TARGET].ready] == [1003.0, 1004.0, 1005.0, 1006.0, 1007.0]
    assert [s.seconds for s in loaded["api/phase:cache@production"].attempts] == [0.2]
    assert len(loaded["unknown@production"]) == 0
    targets = store.targets()
    assert list(targets) == ["api/phase:cache@production", TARGET]
    assert targets[TARGET] == info
    assert targets["api/phase:cache@production"] == TargetInfo("api/phase:cache@production")
    # A write without metadata keeps what was recorded; a censored sample and a
    # failure round-trip exactly.
    store.append_many(
        {
            TARGET: [
                Sample(Series.READY, 2000.0, 9.0, censored=True),
                Sample(Series.FAILURE, 2001.0, kind=FailureKind.CONFIGURATION),
            ]
        }
    )
    assert store.targets()[TARGET] == info
    again = store.load(TARGET)
    assert again.ready[-1] == Sample(Series.READY, 2000.0, 9.0, censored=True)
    assert again.failures[-1].kind is not None
    assert again.failures[-1].kind.value == "configuration"


def test_unstorable_samples_are_skipped_and_empty_calls_do_no_io(
    store: PostgresHistoryStore, pg: PgCluster, schema: str
) -> None:
    store.append_many({TARGET: [ready(float("nan")), Sample(Series.READY, 1.0, float("inf"))]})
    store.append_many({})
    assert store.load_many([]) == {}
    # No I/O at all so far: the schema does not even exist.
    assert pg.sql(f"SELECT to_regnamespace('{schema}') IS NULL", database=DB) == "t"
    store.append(TARGET, [ready(3.0)])
    assert [s.at for s in store.load(TARGET).all_samples()] == [3.0]


def test_readonly_creates_nothing_and_keeps_appends_in_memory(
    store_dsn: str, pg: PgCluster, schema: str
) -> None:
    with PostgresHistoryStore(store_dsn, schema=schema, readonly=True) as ro:
        assert ro.targets() == {}
        ro.append(TARGET, [ready(5.0)])
        assert [s.at for s in ro.load(TARGET).all_samples()] == [5.0]
    assert pg.sql(f"SELECT to_regnamespace('{schema}') IS NULL", database=DB) == "t"


_WRITER = textwrap.dedent(
    """
    import json, sys, threading
    from smd.checks.postgres_store import PostgresHistoryStore
    from smd.timeouts import Sample, Series

    dsn, schema, proc, threads, per = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    errors = []

    def write(t):
        writer = proc * threads + t
        try:
            with PostgresHistoryStore(dsn, schema=schema, bound=int(sys.argv[6]),
                                      write_budget=30.0, read_budget=30.0) as store:
                for j in range(per):
                    at = writer * 1000.0 + j
                    store.append_many({"shared@test": [Sample(Series.READY, at, 0.001 * j)],
                                       f"own-{writer}@test": [Sample(Series.ATTEMPT, at, 0.5)]})
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    ts = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps(errors))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("bound", [1000, 100])
def test_120_concurrent_writers_lose_nothing_within_the_bound(
    store_dsn: str, schema: str, bound: int
) -> None:
    procs, threads, per = 12, 10, 5
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER,
                store_dsn,
                schema,
                str(p),
                str(threads),
                str(per),
                str(bound),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-2000:]
        assert json.loads(out) == []
    written = sorted(w * 1000.0 + j for w in range(procs * threads) for j in range(per))
    with PostgresHistoryStore(store_dsn, schema=schema, bound=bound) as reader:
        loaded = reader.load_many(["shared@test", *(f"own-{w}@test" for w in range(120))])
        assert [s.at for s in loaded["shared@test"].ready] == written[-bound:]
        for w in range(120):
            assert len(loaded[f"own-{w}@test"].attempts) == per
        assert len(reader.targets()) == 121


_CREATOR = textwrap.dedent(
    """
    import sys
    from smd.checks.postgres_store import PostgresHistoryStore
    from smd.timeouts import Sample, Series
    with PostgresHistoryStore(sys.argv[1], schema=sys.argv[2], read_budget=30, write_budget=30) as s:
        s.append("t@test", [Sample(Series.READY, float(sys.argv[3]), 0.1)])
    """
)


@pytest.mark.slow
def test_twenty_processes_create_one_schema_at_once(
    store_dsn: str, schema: str, pg: PgCluster
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATOR, store_dsn, schema, str(i)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(20)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
    assert pg.sql(f"SELECT version FROM {schema}.schema_version", database=DB) == "1"
    assert pg.sql(f"SELECT count(*) FROM {schema}.samples", database=DB) == "20"


@dataclass
class _Connect:
    """One call of the store's ``connect``: the time it was given, the waits it asked for."""

    left: float  # its deadline less the store's clock as it began
    waits: list[float] = field(default_factory=list)  # between attempts (retries)


def _traced_connects(monkeypatch: pytest.MonkeyPatch) -> list[_Connect]:
    """Every call the store makes of ``connect`` (the real one, on the real network)."""
    calls: list[_Connect] = []

    async def traced(
        options: Any, *, deadline: float, now: Callable[[], float], sleep: Any, **kw: Any
    ) -> Any:
        call = _Connect(deadline - now())
        calls.append(call)

        async def wait(seconds: float) -> None:
            call.waits.append(seconds)
            await sleep(seconds)

        return await connect(options, deadline=deadline, now=now, sleep=wait, **kw)

    monkeypatch.setattr(postgres_store, "connect", traced)
    return calls


def test_a_store_that_is_down_raises_at_once(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"postgresql://smd_app:s3cret-pw@127.0.0.1:{free_port()}/smd_app"
    connects = _traced_connects(monkeypatch)
    with PostgresHistoryStore(dead, schema=schema) as s, pytest.raises(StoreUnavailable) as err:
        s.load(TARGET)
    # One connection attempt, refused, reported as it is: not retried, nothing
    # waited for, not the budget running out.
    (attempt,) = connects
    assert attempt.waits == []
    assert 0 < attempt.left <= s.read_budget
    message = str(err.value)
    assert message.startswith(f"{s.where}: connection refused"), message
    assert "budget" not in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize("call", ["read", "write"])
def test_a_blackholed_store_is_given_up_by_its_budget_after_one_connection_attempt(
    fault_proxy: FaultProxy,
    store_dsn: str,
    schema: str,
    call: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault_proxy.set_mode("blackhole")
    connects = _traced_connects(monkeypatch)
    with PostgresHistoryStore(
        fault_proxy.dsn(store_dsn), schema=schema, read_budget=0.4, write_budget=0.8
    ) as s:
        budget = s.read_budget if call == "read" else s.write_budget
        op = (
            (lambda: s.load(TARGET)) if call == "read" else (lambda: s.append(TARGET, [ready(1.0)]))
        )
        with pytest.raises(StoreUnavailable) as err:
            op()  # the call's own budget bounds it (and a grace after it)
    # The call's budget ended it: one connection reached the server's address
    # and was never answered; the connect had no more than the budget and
    # was not retried.
    assert str(err.value) == f"{s.where}: no answer within the {call} budget of {budget:g}s"
    assert fault_proxy.accepted == 1
    (attempt,) = connects
    assert 0 < attempt.left <= budget
    assert attempt.waits == []


def test_a_wrong_password_is_unavailable_without_the_password(
    pg: PgCluster, pg_app: AppCredentials, schema: str
) -> None:
    secret = "Wr0ng-pw-for-history"
    with (
        PostgresHistoryStore(pg.dsn(pg_app.user, secret, DB), schema=schema) as s,
        pytest.raises(StoreUnavailable) as err,
    ):
        s.targets()
    assert "28P01" in str(err.value)
    assert secret not in str(err.value)
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


def test_a_newer_schema_is_left_untouched(
    store: PostgresHistoryStore, pg: PgCluster, schema: str
) -> None:
    store.append(TARGET, [ready(1.0)])
    pg.sql(f"INSERT INTO {schema}.schema_version (version) VALUES (7)", database=DB)
    with (
        PostgresHistoryStore(store.options, schema=schema) as newer,
        pytest.raises(StoreUnavailable) as err,
    ):
        newer.load(TARGET)
    assert "version 7, newer than this smd supports (1)" in str(err.value)
    assert pg.sql(f"SELECT count(*) FROM {schema}.samples", database=DB) == "1"


def _store_backends(pg: PgCluster) -> list[str]:
    return pg.sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'smd history' "
        f"AND datname = '{DB}' ORDER BY backend_start"
    ).split()


def test_a_kept_connection_terminated_while_idle_is_not_reused(
    store_dsn: str, schema: str, pg: PgCluster
) -> None:
    """The server ends an idle kept session: the next call uses a new one, and closing frees it."""
    with PostgresHistoryStore(store_dsn, schema=schema, keep_open=30.0) as s:
        s.append(TARGET, [ready(1.0)])
        (first,) = _store_backends(pg)  # kept between calls
        pg.sql(f"SELECT pg_terminate_backend({first})")
        assert [x.at for x in s.load(TARGET).all_samples()] == [1.0]
        s.append(TARGET, [ready(2.0)])
        (second,) = _store_backends(pg)
        assert second != first
    assert _store_backends(pg) == []  # closed with the store


def test_a_kept_connection_broken_in_the_network_is_replaced_once(
    store_dsn: str, schema: str, pg: PgCluster
) -> None:
    """The client learns of the break only when it sends: the call reconnects once, and succeeds.

    This is the store's retry-once branch: without it the load fails with
    StoreUnavailable.
    """
    with (
        FaultProxy((pg.host, pg.port)) as proxy,
        PostgresHistoryStore(
            proxy.dsn(store_dsn), schema=schema, keep_open=30.0, read_budget=10.0
        ) as s,
    ):
        s.append(TARGET, [ready(1.0)])
        assert proxy.accepted == 1
        (first,) = _store_backends(pg)
        assert proxy.reset_open_connections() == 1
        assert [x.at for x in s.load(TARGET).all_samples()] == [1.0]
        assert proxy.accepted == 2  # exactly one replacement
        (second,) = _store_backends(pg)
        assert second != first


def test_a_kept_connection_terminated_mid_statement_is_replaced_once(
    store_dsn: str, schema: str, pg: PgCluster
) -> None:
    """``pg_terminate_backend`` while the store's statement waits (57P01): one new session.

    The read waits on a lock another session holds; its backend is ended
    while it waits; the store reconnects once, waits again, and answers when
    the lock is released.
    """
    with PostgresHistoryStore(store_dsn, schema=schema, keep_open=30.0, read_budget=60.0) as s:
        s.append(TARGET, [ready(1.0)])
        (first,) = _store_backends(pg)
        got: dict[str, Any] = {}

        def load() -> None:
            try:
                got["samples"] = [x.at for x in s.load(TARGET).all_samples()]
            except BaseException as exc:  # reported by the assertion below
                got["error"] = exc

        with _HeldLock(store_dsn, f"{schema}.samples"):
            reader = threading.Thread(target=load)
            reader.start()
            _wait_for(lambda: _waiting_on_a_lock(pg, first))
            pg.sql(f"SELECT pg_terminate_backend({first})")
            _wait_for(lambda: any(_waiting_on_a_lock(pg, p) for p in _store_backends(pg)))
        reader.join(30)
        assert not reader.is_alive()
        assert got == {"samples": [1.0]}
        (second,) = _store_backends(pg)
        assert second != first


def _waiting_on_a_lock(pg: PgCluster, pid: str) -> bool:
    return pg.sql(f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {pid}") == "Lock"


def _wait_for(condition: Callable[[], bool], guard: float = 30.0) -> None:
    """Poll ``condition`` (a hang guard, not a timing claim)."""
    stop = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < stop, "the condition never came true"
        time.sleep(0.02)


class _HeldLock:
    """A real session holding ``ACCESS EXCLUSIVE`` on a table until the block ends."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn, self.table = dsn, table
        self._held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()))
        self._error: BaseException | None = None

    async def _hold(self) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():
                    await conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
                    self._held.set()
                    await asyncio.to_thread(self._release.wait)
            finally:
                await conn.close()
        except BaseException as exc:
            self._error = exc
            self._held.set()

    def __enter__(self) -> _HeldLock:
        self._thread.start()
        assert self._held.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(30)


def test_the_plugin_registers_the_store_for_both_schemes(store_dsn: str) -> None:
    os.environ.setdefault("SMD_HISTORY_SCHEMA", "smd")
    settings = load_settings(history_read_budget=0.25)
    for scheme in ("postgresql", "postgres"):
        factory = store_factory(scheme)
        assert factory is not None, scheme
        # The plugin's factory is lazy (it imports the store when called) and
        # builds what open_store builds, from the settings.
        made = factory(store_dsn.replace("postgresql://", f"{scheme}://", 1), settings)
        try:
            assert isinstance(made, PostgresHistoryStore)
            assert (made.schema, made.read_budget, made.write_budget) == ("smd", 0.25, 2.0)
        finally:
            made.close()
    direct = open_store(store_dsn, settings)
    try:
        assert (direct.schema, direct.read_budget) == ("smd", 0.25)
    finally:
        direct.close()
    with pytest.raises(ValueError, match="scheme") as err:
        PostgresHistoryStore("mysql://u:pw-xyz@h/db")
    assert "pw-xyz" not in str(err.value)


# -- through `smd run`: SMD_HISTORY_URL as a user sets it ------------------------------

ROOT = Path(__file__).resolve().parent.parent
DB_ONLY = str(ROOT / "tests" / "targets" / "db_only.py") + ":startup"


def smd_run(
    tmp: Path, name: str, database_url: str, history_url: str | None, **env: str
) -> tuple[int, str, dict[str, Any]]:
    """``smd run`` of db_only as replica ``name`` (its own local history and report)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    full.update(
        SMD_DATABASE_URL=database_url,
        SMD_ENVIRONMENT="test",
        SMD_LOG_FORMAT="json",
        SMD_HISTORY_PATH=str(tmp / f"{name}.sqlite3"),
        HOME="/nonexistent",
        **env,
    )
    if history_url is not None:
        full["SMD_HISTORY_URL"] = history_url
    done = subprocess.run(
        [sys.executable, "-m", "smd", "run", DB_ONLY, "--report", str(tmp / f"{name}.json")],
        env=full,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    report = json.loads((tmp / f"{name}.json").read_text()) if done.returncode == 0 else {}
    return done.returncode, output, report


def events(output: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in output.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def local_ready(tmp: Path, name: str) -> int:
    """How many time-to-ready samples replica ``name`` keeps in its embedded store."""
    store = SQLiteHistoryStore(tmp / f"{name}.sqlite3", readonly=True)
    keys = [k for k in store.targets() if k.startswith("db_only/postgres://")]
    return sum(len(h.ready) for h in store.load_many(keys, clock=SystemClock()).values())


@pytest.mark.parametrize("fault", ["down", "blackholed"])
def test_smd_run_with_a_shared_store_that_is_down_or_blackholed_is_ready_with_one_warning(
    pg_dsn: str, store_dsn: str, fault_proxy: FaultProxy, tmp_path: Path, fault: str
) -> None:
    password = "h1st-S3cret"
    if fault == "down":
        url = f"postgresql://smd_app:{password}@127.0.0.1:{free_port()}/smd_app"
    else:
        fault_proxy.set_mode("blackhole")
        url = fault_proxy.dsn(store_dsn)
    code, output, report = smd_run(tmp_path, "replica", pg_dsn, url)
    assert code == 0, output[-3000:]
    assert report["state"] == "ready"
    # One warning, naming the store and what failed: the read before the phases.
    (warning,) = events(output, "smd.history.shared_unavailable")
    assert warning["level"] == "warning"
    assert (warning["store"], warning["operation"]) == ("PostgresHistoryStore", "read")
    assert warning["action"] == "using the embedded history store for this process"
    where = f"StoreUnavailable: {PostgresHistoryStore(url).where}: "
    if fault == "down":
        assert warning["error"].startswith(f"{where}connection refused"), warning["error"]
        assert password not in output
    else:
        # Given up by the read's budget; one connection for the read and one for
        # the write after the phases: neither was retried.
        assert warning["error"] == f"{where}no answer within the read budget of 0.5s"
        assert fault_proxy.accepted == 2
    # The read was given up before the phase began, and the phase ran.
    order = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
    assert order.index("smd.history.shared_unavailable") < order.index("smd.phase.started"), order
    (database,) = report["phases"]
    assert database["outcome"] == "ok"
    # The history fell back to the embedded store: empty, it gave the default
    # deadline, and the start was learned there.
    assert database["timeout"]["source"] == "default"
    assert database["timeout"]["details"]["samples"] == 0
    assert local_ready(tmp_path, "replica") == 1


@pytest.mark.slow
def test_two_replicas_share_learned_history_through_smd_run(
    pg_dsn: str, store_dsn: str, schema: str, pg: PgCluster, tmp_path: Path
) -> None:
    shared = {"SMD_HISTORY_SCHEMA": schema}

    def timeout(report: dict[str, Any]) -> dict[str, Any]:
        (database,) = report["phases"]
        assert database["outcome"] == "ok"
        decision: dict[str, Any] = database["timeout"]
        return decision

    # Replica A starts (and restarts) four times, learning into the shared store.
    first = []
    for _ in range(4):
        code, output, report = smd_run(tmp_path, "a", pg_dsn, store_dsn, **shared)
        assert code == 0, output[-3000:]
        assert not events(output, "smd.history.shared_unavailable"), output[-3000:]
        first.append(timeout(report))
    assert first[0]["source"] == "default"
    assert first[-1]["source"] == "adaptive"
    # Replica B has never started: an empty local store, its first start.
    code, output, report = smd_run(tmp_path, "b", pg_dsn, store_dsn, **shared)
    assert code == 0, output[-3000:]
    newcomer = timeout(report)
    # Replica C has never started either, and shares nothing.
    code, output, report = smd_run(tmp_path, "c", pg_dsn, None)
    assert code == 0, output[-3000:]
    alone = timeout(report)
    assert (alone["source"], alone["seconds"]) == ("default", 10.0)  # the test environment's
    assert newcomer["source"] == "adaptive"
    assert newcomer["seconds"] < alone["seconds"]
    assert "from 4 ready samples" in newcomer["explanation"]  # A's four starts
    # The fleet's five starts are in the shared store; a healthy shared store is
    # the only one used (the embedded one is the fallback).
    assert local_ready(tmp_path, "b") == 0
    assert (
        pg.sql(f"SELECT count(*) FROM {schema}.samples WHERE series = 'ready'", database=DB) == "5"
    )
    # What the fleet shares names no secret.
    password = store_dsn.split(":")[2].split("@")[0]
    dump = pg.sql(f"SELECT string_agg(t::text, ' ') FROM {schema}.targets t", database=DB) + pg.sql(
        f"SELECT string_agg(s::text, ' ') FROM {schema}.samples s", database=DB
    )
    assert "postgres://127.0.0.1" in dump
    assert password not in dump
    assert "://smd_app" not in dump  # no user either (keys end "/<database>@<environment>")
