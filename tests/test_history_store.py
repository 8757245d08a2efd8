"""The SQLite history store on real files: round trip, bound, damage, read-only, factory.

Also the batch protocol (``load_many`` / ``append_many`` / ``targets``), the
v1 -> v2 schema move-aside, paths that are not regular files (devices, FIFOs,
directories: never opened, nothing created next to them) and the private
modes of what the store creates, whatever the umask.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from smd import Environment, FailureKind, Settings
from smd._stats import quantile
from smd.bypass import success_rate
from smd.clock import ManualClock
from smd.history import (
    SCHEMA_VERSION,
    HistoryStore,
    MemoryHistoryStore,
    SQLiteHistoryStore,
    TargetInfo,
    open_store,
    render_text,
    split_target,
    summarize,
    target_key,
)
from smd.settings import BypassSettings
from smd.timeouts import (
    AdaptiveTimeout,
    FixedTimeout,
    Sample,
    Series,
    TimeoutContext,
    TimeoutDecision,
    TimeoutPolicy,
    TimingHistory,
    attempt_split,
    phase_timeout,
    policy_spec,
    timeout_context,
)

# History keys name the startup: <startup>/<dependency>@<environment>.
TARGET = target_key("api", "postgres://db.internal:5432/app", "production")
OTHER = target_key("api", "phase:cache", "staging")


def history_warnings(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("log_level") == "warning"]


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def count_rows(path: Path, target: str, series: Series) -> int:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT count(*) FROM samples WHERE target = ? AND series = ?",
            (target, series.value),
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def filled_store(path: Path, *, targets: int = 6, per_series: int = 200) -> None:
    """A valid store big enough to span many pages."""
    store = SQLiteHistoryStore(path, bound=per_series)
    for t in range(targets):
        h = TimingHistory(bound=per_series)
        for i in range(per_series):
            h.record_attempt(0.01 * i, at=1000.0 + i)
            h.record_success(0.1 * i, at=1000.5 + i)
        store.append(target_key("api", f"postgres://h{t}:5432/db", "production"), h.pending)
    assert not store.degraded


# -- round trip and bound ------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3")
    h = store.load(TARGET)
    assert len(h) == 0
    h.record_attempt(0.012, at=10.0)
    h.record_success(0.5, at=11.0)
    h.record_timeout(30.0, at=12.0)
    h.record_failure(FailureKind.CONFIGURATION, at=13.0)
    h.record_bypass(at=14.0)
    store.append(TARGET, h.pending)

    back = store.load(TARGET)
    assert back.all_samples() == h.all_samples()
    assert back.ready[1].censored is True
    assert back.failures[0].kind is FailureKind.CONFIGURATION
    assert back.pending == []
    # Nothing was said about the target but its key.
    assert store.targets() == {TARGET: TargetInfo(TARGET)}
    assert not store.degraded


def test_load_uses_the_given_clock(tmp_path: Path) -> None:
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3")
    clock = ManualClock(start=5000.0)
    h = store.load(TARGET, clock=clock)
    sample = h.record_success(1.0)
    assert sample.at == 5000.0


def test_reload_across_store_instances(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    first = SQLiteHistoryStore(path)
    first.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    first.append(OTHER, [Sample(Series.ATTEMPT, 2.0, 0.01)])
    del first

    second = SQLiteHistoryStore(path)
    assert list(second.targets()) == sorted([TARGET, OTHER])
    assert second.load(TARGET).ready == (Sample(Series.READY, 1.0, 0.3),)
    second.append(TARGET, [Sample(Series.READY, 3.0, 0.4)])

    third = SQLiteHistoryStore(path)
    assert [s.seconds for s in third.load(TARGET).ready] == [0.3, 0.4]


def test_bound_is_enforced_per_target_and_series_keeping_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SQLiteHistoryStore(path, bound=5)
    # Appended newest-first in one batch and oldest-first in another: the
    # bound keeps the newest by time, not by insertion order.
    store.append(TARGET, [Sample(Series.READY, float(at), 0.1) for at in range(20, 10, -1)])
    store.append(TARGET, [Sample(Series.READY, float(at), 0.1) for at in range(8)])
    store.append(TARGET, [Sample(Series.ATTEMPT, float(at), 0.01) for at in range(3)])
    store.append(OTHER, [Sample(Series.READY, float(at), 0.2) for at in range(9)])

    assert count_rows(path, TARGET, Series.READY) == 5
    assert count_rows(path, TARGET, Series.ATTEMPT) == 3
    assert count_rows(path, OTHER, Series.READY) == 5
    assert [s.at for s in store.load(TARGET).ready] == [16.0, 17.0, 18.0, 19.0, 20.0]
    assert [s.at for s in store.load(OTHER).ready] == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert len(store.load(TARGET).attempts) == 3


def test_file_is_wal_with_versioned_schema_and_index(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    SQLiteHistoryStore(path).append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(samples)")]
        assert "samples_by_target" in indexes
    finally:
        conn.close()


def test_unstorable_samples_are_skipped_not_raised(tmp_path: Path) -> None:
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3")
    store.append(
        TARGET,
        [
            Sample(Series.READY, float("nan"), 0.1),
            Sample(Series.READY, 1.0, float("inf")),
            Sample(Series.READY, 2.0, 0.2),
        ],
    )
    assert [s.at for s in store.load(TARGET).ready] == [2.0]


def test_rows_from_a_newer_version_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SQLiteHistoryStore(path)
    store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "INSERT INTO samples (target, series, at, seconds, censored, kind) "
            "VALUES (?, 'warmup', 2.0, 1.0, 0, NULL), (?, 'failure', 3.0, NULL, 0, 'cosmic')",
            (TARGET, TARGET),
        )
        conn.commit()
    finally:
        conn.close()
    with capture_logs() as logs:
        back = SQLiteHistoryStore(path).load(TARGET)
    assert back.all_samples() == [Sample(Series.READY, 1.0, 0.3)]
    assert history_warnings(logs) == []


def test_store_is_usable_from_several_threads(tmp_path: Path) -> None:
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3", bound=10_000)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                store.append(TARGET, [Sample(Series.ATTEMPT, n * 1000.0 + i, 0.01)])
                store.load(TARGET)
        except BaseException as err:  # pragma: no cover - the assertion reports it
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.load(TARGET).attempts) == 100
    assert not store.degraded


# -- the batch protocol ----------------------------------------------------------


def make_store(kind: str, path: Path) -> SQLiteHistoryStore | MemoryHistoryStore:
    return SQLiteHistoryStore(path) if kind == "sqlite" else MemoryHistoryStore()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_load_many_reads_several_targets_in_one_call(tmp_path: Path, kind: str) -> None:
    store = make_store(kind, tmp_path / "h.sqlite3")
    assert isinstance(store, HistoryStore)
    keys = [target_key("api", f"phase:p{i}", "test") for i in range(5)]
    store.append_many(
        {
            key: [
                Sample(Series.READY, float(i), 0.1 * (i + 1)),
                Sample(Series.ATTEMPT, i + 0.5, 0.01),
            ]
            for i, key in enumerate(keys)
        }
    )
    never = target_key("api", "phase:never", "test")
    clock = ManualClock(start=7000.0)

    got = store.load_many([*keys, never, keys[0]], clock=clock)

    # One entry per distinct target, in the order asked; unknown ones empty.
    assert list(got) == [*keys, never]
    for i, key in enumerate(keys):
        assert got[key].ready == (Sample(Series.READY, float(i), 0.1 * (i + 1)),)
        assert got[key].attempts == (Sample(Series.ATTEMPT, i + 0.5, 0.01),)
        assert got[key].pending == []
    assert got[never].all_samples() == []
    # Each history records with the clock it was loaded with.
    assert got[keys[2]].record_success(1.0).at == 7000.0
    assert got[never].record_success(1.0).at == 7000.0
    assert store.load_many([], clock=clock) == {}


def test_load_many_is_one_query_on_one_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps the history off the critical path: one read for every target."""
    path = tmp_path / "h.sqlite3"
    keys = [target_key("api", f"phase:p{i}", "test") for i in range(40)]
    SQLiteHistoryStore(path).append_many({k: [Sample(Series.READY, 1.0, 0.1)] for k in keys})

    from smd._sqlite_file import connect as real_connect

    statements: list[str] = []
    connections: list[sqlite3.Connection] = []

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        connections.append(conn)
        return conn

    monkeypatch.setattr("smd._sqlite_store.connect", traced)
    got = SQLiteHistoryStore(path).load_many(keys)
    assert all(len(got[k].ready) == 1 for k in keys)
    assert len(connections) == 1
    reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1, reads
    assert "FROM samples" in reads[0]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_append_many_keeps_what_is_known_about_each_target(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "h.sqlite3"
    store = make_store(kind, path)
    prod = TargetInfo(
        TARGET,
        "api",
        "postgres://db.internal:5432/app",
        "production",
        "database",
        policy_spec(AdaptiveTimeout(min_samples=3)),
    )
    cache = TargetInfo(OTHER, "api", "phase:cache", "staging", "cache", policy_spec(None))
    never = target_key("api", "phase:never", "test")
    bare = target_key("api", "phase:bare", "test")
    store.append_many(
        {
            TARGET: [Sample(Series.READY, 1.0, 0.3)],
            OTHER: [Sample(Series.ATTEMPT, 2.0, 0.01)],
            bare: [Sample(Series.READY, 3.0, 0.2)],
            never: [],
        },
        info={TARGET: prod, OTHER: cache, never: TargetInfo(never, "api", "phase:never", "test")},
    )
    # A target without samples is not a target (even with info); one without
    # info is known by its key alone.
    expected = {bare: TargetInfo(bare), OTHER: cache, TARGET: prod}
    assert store.targets() == expected
    assert list(store.targets()) == sorted(expected)
    assert dict(store.targets()[TARGET].policy) == AdaptiveTimeout(min_samples=3).spec()
    if kind == "sqlite":
        assert SQLiteHistoryStore(path).targets() == expected  # persisted

    # A later run's record replaces the earlier one; samples accumulate.
    moved = replace(prod, phase="db", policy=policy_spec(FixedTimeout(3)))
    store.append_many({TARGET: [Sample(Series.READY, 4.0, 0.3)]}, info={TARGET: moved})
    again = SQLiteHistoryStore(path) if kind == "sqlite" else store
    assert again.targets()[TARGET] == moved
    assert dict(again.targets()[TARGET].policy) == {"type": "fixed", "seconds": 3.0}
    assert again.targets()[OTHER] == cache
    assert [s.at for s in again.load(TARGET).ready] == [1.0, 4.0]
    # Samples without info keep the info already recorded.
    store.append_many({TARGET: [Sample(Series.READY, 5.0, 0.3)]})
    assert (SQLiteHistoryStore(path) if kind == "sqlite" else store).targets()[TARGET] == moved


def test_target_info_of_a_degraded_store_is_kept_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    SQLiteHistoryStore(path).append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    store = SQLiteHistoryStore(path, readonly=True)
    info = TargetInfo(OTHER, "api", "phase:cache", "staging", "cache", {"type": "default"})
    store.append_many({OTHER: [Sample(Series.READY, 2.0, 0.2)]}, info={OTHER: info})
    assert store.targets() == {OTHER: info, TARGET: TargetInfo(TARGET)}
    # What this process recorded about a target of the file is the newer word.
    newer = TargetInfo(TARGET, "api", "postgres://db.internal:5432/app", "production", "db")
    store.append_many({TARGET: [Sample(Series.READY, 3.0, 0.2)]}, info={TARGET: newer})
    assert store.targets() == {OTHER: info, TARGET: newer}
    assert [s.at for s in store.load(TARGET).ready] == [1.0, 3.0]
    assert SQLiteHistoryStore(path).targets() == {TARGET: TargetInfo(TARGET)}  # nothing written


# -- damaged files -------------------------------------------------------------


V1_KEY = "postgres://db.internal:5432/app@production"  # v1 keys did not name the startup


def make_v1(path: Path, *, wal: bool = True) -> None:
    """A store file as smd wrote it before schema 2: ``samples`` only, user_version 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if wal:
            assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        conn.execute(
            """CREATE TABLE samples (
                id       INTEGER PRIMARY KEY,
                target   TEXT    NOT NULL,
                series   TEXT    NOT NULL,
                at       REAL    NOT NULL,
                seconds  REAL,
                censored INTEGER NOT NULL DEFAULT 0,
                kind     TEXT
            )"""
        )
        conn.execute("CREATE INDEX samples_by_target ON samples (target, series, at)")
        conn.executemany(
            "INSERT INTO samples (target, series, at, seconds, censored, kind) "
            "VALUES (?, ?, ?, ?, 0, NULL)",
            [(V1_KEY, "ready", 1000.0 + i, 0.1 * i) for i in range(20)],
        )
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()
    assert not Path(f"{path}-wal").exists()  # checkpointed on close: one file to move


def test_corrupt_file_is_moved_aside_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    junk = os.urandom(16384)
    path.write_bytes(junk)

    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert store.load(TARGET).all_samples() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert list(store.targets()) == [TARGET]
        assert len(store.load(TARGET).ready) == 1

    warnings = history_warnings(logs)
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning["event"] == "smd.history.corrupt"
    assert warning["path"] == str(path)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.sqlite3.corrupt-")]
    main_aside = [p for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert len(main_aside) == 1
    assert main_aside[0].read_bytes() == junk  # kept for inspection, untouched
    assert warning["moved_to"] == str(main_aside[0])
    assert main_aside[0].name in str(warning["action"])
    assert store.moved_aside == main_aside[0]
    assert not store.degraded
    assert integrity(path) == "ok"


@pytest.mark.parametrize(
    ("damage", "label", "event"),
    [("random bytes", "corrupt", "smd.history.corrupt"), ("v1", "v1", "smd.history.replaced")],
)
def test_two_stores_finding_the_same_damage_move_it_aside_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, label: str, event: str
) -> None:
    """The move-aside is serialised, and re-checked under the lock.

    The timestamp is taken between the check and the rename; slowing it
    down holds that window open, so without the lock both stores would pass
    the check and the second would fail to move (or move the fresh file).
    """
    path = tmp_path / "history.sqlite3"
    if damage == "v1":
        make_v1(path, wal=False)  # a v1 file must not even be switched to WAL on its way out
    else:
        path.write_bytes(os.urandom(16384))
    junk = path.read_bytes()

    import smd._sqlite_file as mod

    class SlowDatetime:
        @staticmethod
        def now(tz: object) -> datetime:
            time.sleep(0.3)
            return datetime.now(UTC)

    monkeypatch.setattr(mod, "datetime", SlowDatetime)
    stores = [SQLiteHistoryStore(path), SQLiteHistoryStore(path)]
    barrier = threading.Barrier(2)

    def work(store: SQLiteHistoryStore, n: int) -> None:
        barrier.wait()
        store.append(TARGET, [Sample(Series.READY, float(n), 0.1)])

    with capture_logs() as logs:
        threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    aside = [p for p in tmp_path.iterdir() if f".{label}-" in p.name]
    assert len(aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert aside[0].read_bytes() == junk
    assert [s.degraded for s in stores] == [False, False]
    assert sum(s.moved_aside is not None for s in stores) == 1
    assert {w["event"] for w in history_warnings(logs)} == {event}
    assert integrity(path) == "ok"
    assert [s.at for s in SQLiteHistoryStore(path).load(TARGET).ready] == [0.0, 1.0]


def test_v1_store_is_moved_aside_with_one_warning_and_a_fresh_v2_store_used(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path)
    old = path.read_bytes()

    with capture_logs() as logs:
        store = open_store(Settings(history_path=path))
        assert isinstance(store, SQLiteHistoryStore)
        # Its keys cannot be attributed to a startup: nothing is carried over.
        got = store.load_many([TARGET, V1_KEY])
        assert got[TARGET].all_samples() == got[V1_KEY].all_samples() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert list(store.targets()) == [TARGET]
        # Another instance (the next run) finds the fresh store: no warning.
        later = SQLiteHistoryStore(path)
        assert [s.at for s in later.load(TARGET).ready] == [1.0]

    warnings = history_warnings(logs)
    assert [w["event"] for w in warnings] == ["smd.history.replaced"]
    (warning,) = warnings
    assert warning["path"] == str(path)
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("history.sqlite3.v1-")]
    assert re.fullmatch(r"history\.sqlite3\.v1-\d{8}T\d{6}Z", moved.name), moved.name
    assert warning["moved_to"] == str(moved)
    assert moved.name in str(warning["action"])
    assert store.moved_aside == moved
    assert not store.degraded
    assert later.moved_aside is None
    # The old file is kept as it was, for inspection or a manual import.
    assert moved.read_bytes() == old
    assert count_rows(moved, V1_KEY, Series.READY) == 20
    # The fresh file is schema 2, with the targets table, and intact.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"samples", "targets"}
    finally:
        conn.close()
    assert integrity(path) == "ok"
    assert count_rows(path, V1_KEY, Series.READY) == 0


def test_v1_store_in_readonly_mode_is_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path)
    old = path.read_bytes()
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path, readonly=True)
        assert store.targets() == {}
        assert store.load(V1_KEY).all_samples() == []
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.replaced"]
    assert path.read_bytes() == old
    # Nothing moved aside, nothing else created (a reader of a WAL file gets
    # SQLite's own -wal/-shm, which are not the store's doing).
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if not n.endswith(("-wal", "-shm"))] == ["history.sqlite3"]


def test_truncated_file_is_moved_aside_and_a_fresh_store_used(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    filled_store(path)
    assert not Path(f"{path}-wal").exists()  # checkpointed on close
    size = path.stat().st_size
    os.truncate(path, size // 2)

    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert store.targets() == {}
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert list(store.targets()) == [TARGET]

    warnings = history_warnings(logs)
    assert [w["event"] for w in warnings] == ["smd.history.corrupt"]
    assert store.moved_aside is not None
    assert store.moved_aside.stat().st_size == size // 2
    assert integrity(path) == "ok"
    assert SQLiteHistoryStore(path).load(TARGET).ready == (Sample(Series.READY, 1.0, 0.3),)


def test_corrupt_file_in_readonly_mode_is_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    junk = os.urandom(8192)
    path.write_bytes(junk)
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path, readonly=True)
        assert store.targets() == {}
        assert store.load(TARGET).all_samples() == []
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.corrupt"]
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.sqlite3"]


def test_empty_file_is_a_fresh_store_without_warning(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.touch()
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert len(store.load(TARGET).ready) == 1
    assert history_warnings(logs) == []


def test_newer_schema_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    SQLiteHistoryStore(path).append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()

    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        store.append(TARGET, [Sample(Series.READY, 2.0, 0.4)])
        # What was appended is still visible to this process.
        assert [s.at for s in store.load(TARGET).ready] == [2.0]
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.unsupported_schema"]
    assert store.degraded
    assert path.read_bytes() == before


def test_path_is_a_directory_degrades_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.mkdir()
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert store.load(TARGET).all_samples() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        store.append(TARGET, [Sample(Series.READY, 2.0, 0.3)])
        assert list(store.targets()) == [TARGET]
        assert len(store.load(TARGET).ready) == 2
    warnings = history_warnings(logs)
    assert [w["event"] for w in warnings] == ["smd.history.unwritable"]
    assert warnings[0]["path"] == str(path)
    assert store.degraded
    assert path.is_dir()
    assert list(path.iterdir()) == []


def test_parent_is_a_file_degrades_with_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with capture_logs() as logs:
        store = SQLiteHistoryStore(blocker / "history.sqlite3")
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert len(store.load(TARGET).ready) == 1
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.unwritable"]
    assert blocker.read_text() == "not a directory"


def test_file_replaced_under_a_running_store_is_set_up_again(tmp_path: Path) -> None:
    # What a store sees when another process moved a damaged file aside.
    path = tmp_path / "history.sqlite3"
    store = SQLiteHistoryStore(path)
    store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    path.rename(tmp_path / "elsewhere.sqlite3")
    with capture_logs() as logs:
        store.append(TARGET, [Sample(Series.READY, 2.0, 0.4)])
        assert [s.at for s in store.load(TARGET).ready] == [2.0]
    assert history_warnings(logs) == []
    assert not store.degraded
    assert count_rows(path, TARGET, Series.READY) == 1


# -- read-only mode --------------------------------------------------------------


def test_readonly_never_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.sqlite3"
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path, readonly=True)
        assert store.targets() == {}
        assert store.load(TARGET).all_samples() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert len(store.load(TARGET).ready) == 1  # in memory only
    assert history_warnings(logs) == []
    assert not path.exists()
    assert not path.parent.exists()


def test_readonly_reads_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    SQLiteHistoryStore(path).append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    before = path.read_bytes()
    store = SQLiteHistoryStore(path, readonly=True)
    store.append(TARGET, [Sample(Series.READY, 2.0, 0.4)])
    assert list(store.targets()) == [TARGET]
    assert [s.at for s in store.load(TARGET).ready] == [1.0, 2.0]
    assert path.read_bytes() == before
    assert [s.at for s in SQLiteHistoryStore(path).load(TARGET).ready] == [1.0]


# -- the factory -------------------------------------------------------------------


def test_open_store_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "smd" / "history.sqlite3"
    store = open_store(Settings(history_path=path))
    assert isinstance(store, SQLiteHistoryStore)
    assert isinstance(store, HistoryStore)
    store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    assert path.is_file()


def test_open_store_follows_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SMD_HISTORY_PATH", raising=False)
    store = open_store(Settings())
    assert isinstance(store, SQLiteHistoryStore)
    assert store.path == tmp_path / "xdg" / "smd" / "history.sqlite3"


def test_open_store_disabled_gives_memory(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = open_store(Settings(history_enabled=False, history_path=path))
    assert isinstance(store, MemoryHistoryStore)
    store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    assert not path.exists()


def test_open_store_readonly_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.sqlite3"
    store = open_store(Settings(history_path=path), readonly=True)
    assert store.targets() == {}
    assert not path.parent.exists()


def test_open_store_uncreatable_directory_gives_memory_and_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    with capture_logs() as logs:
        store = open_store(Settings(history_path=blocker / "smd" / "history.sqlite3"))
        assert isinstance(store, MemoryHistoryStore)
        assert use_store(store) == [1.0]
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.unwritable"]


# -- paths that are not regular files; private modes ----------------------------------


def sidecars(path: Path) -> list[Path]:
    """What SQLite would create next to ``path`` if it ever opened it."""
    return [Path(f"{path}{suffix}") for suffix in ("-journal", "-wal", "-shm")]


def use_store(store: HistoryStore) -> list[float]:
    """Read, record and read again, as a run does; what the second read sees."""
    (h,) = store.load_many([TARGET]).values()
    h.record_success(0.3, at=1.0)
    store.append_many({TARGET: h.pending})
    return [s.at for s in store.load_many([TARGET])[TARGET].ready]


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
@pytest.mark.parametrize("readonly", [False, True], ids=["run", "readonly"])
def test_open_store_refuses_a_device_and_creates_nothing_next_to_it(
    device: str, readonly: bool
) -> None:
    path = Path(device)
    if not path.exists():
        pytest.skip(f"{device} does not exist here")
    assert stat.S_ISCHR(path.stat().st_mode)
    leftovers = [p for p in sidecars(path) if p.exists()]
    assert leftovers == [], f"left by an earlier run, remove them first: {leftovers}"
    with capture_logs() as logs:
        store = open_store(Settings(history_path=path), readonly=readonly)
        assert use_store(store) == [1.0]  # samples still kept for this process
    assert isinstance(store, MemoryHistoryStore)
    warnings = history_warnings(logs)
    assert [w["event"] for w in warnings] == ["smd.history.unwritable"]
    assert warnings[0]["path"] == device
    assert "character device" in str(warnings[0]["error"])
    assert "memory" in str(warnings[0]["action"])
    assert [p for p in sidecars(path) if p.exists()] == []


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
@pytest.mark.parametrize("readonly", [False, True], ids=["run", "readonly"])
def test_sqlite_store_never_opens_a_device(device: str, readonly: bool) -> None:
    """The store itself refuses too: the path may be swapped after open_store looked."""
    path = Path(device)
    if not path.exists():
        pytest.skip(f"{device} does not exist here")
    assert [p for p in sidecars(path) if p.exists()] == []
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path, readonly=readonly)
        assert use_store(store) == [1.0]
        assert list(store.targets()) == [TARGET]
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.unwritable"]
    assert store.degraded
    assert [p for p in sidecars(path) if p.exists()] == []


@pytest.mark.parametrize("what", ["fifo", "directory"])
@pytest.mark.parametrize("opener", ["open_store", "SQLiteHistoryStore"])
def test_a_fifo_or_directory_path_is_skipped_with_one_warning(
    tmp_path: Path, what: str, opener: str
) -> None:
    path = tmp_path / "history.sqlite3"
    if what == "fifo":
        os.mkfifo(path)  # opening it for reading would block: it must never be opened
    else:
        path.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with capture_logs() as logs:
        if opener == "open_store":
            store: HistoryStore = open_store(Settings(history_path=path))
            assert isinstance(store, MemoryHistoryStore)
        else:
            store = SQLiteHistoryStore(path)
        assert use_store(store) == [1.0]
    warnings = history_warnings(logs)
    assert [w["event"] for w in warnings] == ["smd.history.unwritable"]
    assert warnings[0]["path"] == str(path)
    assert ("a FIFO" if what == "fifo" else "a directory") in str(warnings[0]["error"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created next to it
    if what == "directory":
        assert list(path.iterdir()) == []  # nor inside it
    else:
        assert stat.S_ISFIFO(path.stat().st_mode)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000], ids=["022", "002", "000"])
def test_directory_0700_and_files_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    state = tmp_path / "xdg-state"  # missing: created by the store, like its smd/ below
    path = state / "smd" / "history.sqlite3"
    with umask(mask):
        store = open_store(Settings(history_path=path))
        assert isinstance(store, SQLiteHistoryStore)
        assert store.load(TARGET).all_samples() == []  # the store creates its file
        # A reader holds the file open, so SQLite's -wal/-shm stay to be looked at.
        reader = sqlite3.connect(path)
        try:
            store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
            assert reader.execute("SELECT count(*) FROM samples").fetchone()[0] == 1
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
            }
        finally:
            reader.close()
    assert modes == {
        "history.sqlite3": 0o600,
        "history.sqlite3-wal": 0o600,
        "history.sqlite3-shm": 0o600,
    }
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert not store.degraded


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_fresh_file_after_a_move_aside_is_0600_too(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1(path)
    path.chmod(0o644)
    with umask(0o000):
        store = SQLiteHistoryStore(path)
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    assert store.moved_aside is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.moved_aside.stat().st_mode) == 0o644  # kept as it was


def test_existing_directory_modes_are_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o755)
    store = open_store(Settings(history_path=state / "history.sqlite3"))
    assert isinstance(store, SQLiteHistoryStore)
    store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
    assert not store.degraded
    assert stat.S_IMODE(state.stat().st_mode) == 0o755  # the user's directory, not ours
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_late_process_never_moves_an_empty_fresh_store_aside(tmp_path: Path) -> None:
    """Seen once in a 20-process fleet: a process that had met the damaged file
    moved aside the empty store another process had just created in its
    place (and that process lost its journal). An empty file is never damaged."""
    from smd._sqlite_file import move_aside

    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"")
    assert move_aside(path, "corrupt", None) is None
    assert move_aside(path, "corrupt", path.stat().st_ino) is None
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []
    # A damaged one still goes, with or without the inode it was found with.
    path.write_bytes(os.urandom(4096))
    moved = move_aside(path, "corrupt", None)
    assert moved is not None
    assert not path.exists()


def test_move_aside_without_fcntl_uses_the_portable_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fcntl does not exist (Windows), the lock is a file in the directory."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` now raises ImportError
    path = tmp_path / "history.sqlite3"
    junk = os.urandom(8192)
    path.write_bytes(junk)
    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert use_store(store) == [1.0]
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.corrupt"]
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == junk
    assert not store.degraded
    lock = tmp_path / ".smd-history.lock"
    assert lock.is_file()
    assert stat.S_IMODE(lock.stat().st_mode) & 0o077 == 0


# -- the history view (``smd history``) ----------------------------------------------


@pytest.mark.parametrize(
    ("target", "dependency", "env"),
    [
        ("postgres://db:5432/app@production", "postgres://db:5432/app", "production"),
        ("phase:cache@staging", "phase:cache", "staging"),
        ("phase:cache", "phase:cache", None),
        ("postgres://user@db:5432/app", "postgres://user@db:5432/app", None),
        ("postgres://user@db:5432/app@test", "postgres://user@db:5432/app", "test"),
        ("@production", "@production", None),
        ("phase:x@", "phase:x@", None),
        # Keys as runs write them: the startup's name first.
        ("api/phase:cache@staging", "api/phase:cache", "staging"),
        ("api/postgres://u@db:5432/app@test", "api/postgres://u@db:5432/app", "test"),
    ],
)
def test_split_target(target: str, dependency: str, env: str | None) -> None:
    assert split_target(target) == (dependency, env)


def test_target_key_names_the_startup() -> None:
    assert target_key("api", "phase:cache", "test") == "api/phase:cache@test"
    assert target_key("quickstart", "postgres://127.0.0.1:5432/app", "development") == (
        "quickstart/postgres://127.0.0.1:5432/app@development"
    )
    # Two startups with a phase of the same name do not share a history.
    assert target_key("api", "phase:cache", "test") != target_key("worker", "phase:cache", "test")


def test_quantile_interpolates_between_order_statistics() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # 10..1, unsorted on purpose
    assert quantile(values, 0.5) == pytest.approx(5.5)
    assert quantile(values, 0.9) == pytest.approx(9.1)
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 1.0) == 10.0
    assert quantile([0.25], 0.99) == 0.25
    assert quantile([], 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        quantile(values, 1.5)


PROD_DEPENDENCY = "postgres://db.internal:5432/app"


def view_store(
    path: Path,
    clock: ManualClock,
    *,
    prod_policy: TimeoutPolicy | None = None,
    other_policy: TimeoutPolicy | None = None,
) -> SQLiteHistoryStore:
    """TARGET and OTHER recorded as a run records them: samples plus what the
    phase said about its target (startup, phase, timeout policy)."""
    store = SQLiteHistoryStore(path)
    h = store.load(TARGET, clock=clock)
    now = clock.wall()
    for i, ready in enumerate([0.2, 0.4, 0.6, 0.8, 1.0]):
        h.record_attempt(0.01 * (i + 1), at=now - 5000 + i)
        h.record_success(ready, at=now - 4000 + i)
    h.record_timeout(30.0, at=now - 3000)  # censored: must not enter the quantiles
    h.record_failure(FailureKind.CONFIGURATION, at=now - 2000)
    h.record_failure(FailureKind.CONFIGURATION, at=now - 1999)
    h.record_failure(FailureKind.INFRASTRUCTURE, at=now - 1998)
    h.record_bypass(at=now - 1000)
    h.record_bypass(at=now - 500)
    info = {
        TARGET: TargetInfo(
            TARGET,
            "api",
            PROD_DEPENDENCY,
            "production",
            "database",
            policy_spec(prod_policy or AdaptiveTimeout(min_samples=3)),
        ),
        OTHER: TargetInfo(
            OTHER,
            "api",
            "phase:cache",
            "staging",
            "cache",
            policy_spec(other_policy or FixedTimeout(7)),
        ),
    }
    store.append_many(
        {TARGET: h.pending, OTHER: [Sample(Series.ATTEMPT, now - 10, 0.003)]}, info=info
    )
    return store


def test_summarize_reports_counts_quantiles_success_and_degraded(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    # A short half-life, so that the decay the bypass mode applies is visible.
    settings = Settings(bypass=BypassSettings(success_half_life_hours=1.0))
    summaries = summarize(store, settings, clock=clock)
    assert [s.target for s in summaries] == sorted([TARGET, OTHER])
    s = next(x for x in summaries if x.target == TARGET)

    assert (s.startup, s.phase) == ("api", "database")
    assert s.dependency == PROD_DEPENDENCY
    assert s.environment == "production"
    assert s.counts == {"attempt": 5, "ready": 6, "failure": 3, "bypass": 2}
    assert s.total == 16
    assert s.censored == 1
    assert s.ready.uncensored == 5
    assert s.ready.get(0.5) == pytest.approx(0.6)
    assert s.ready.get(0.9) == pytest.approx(0.92)
    assert s.ready.maximum == pytest.approx(1.0)  # not the censored 30 s
    assert s.attempt.get(0.5) == pytest.approx(0.03)
    assert s.failures == {"configuration": 2, "infrastructure": 1}
    assert (s.success.successes, s.success.total) == (5, 9)
    # The same figure the conditional bypass mode would measure.
    expected = success_rate(store.load(TARGET), clock.wall(), 1.0)
    assert s.success == expected
    assert s.success.half_life_hours == 1.0
    assert s.success != success_rate(store.load(TARGET), clock.wall(), 72.0)
    assert s.success.lower_bound is not None
    assert s.success.lower_bound < (s.success.estimate or 0)
    assert s.consecutive_degraded == 2
    assert s.last_at == clock.wall() - 500
    assert s.timeout is not None
    assert s.timeout_error is None

    # Without settings: the same figures (default half-life), no timeout.
    (bare,) = summarize(store, targets=[TARGET], clock=clock)
    assert bare.counts == s.counts
    assert bare.success == success_rate(store.load(TARGET), clock.wall(), 72.0)
    assert bare.timeout is None
    assert bare.timeout_error is None


def test_summarize_shows_the_timeout_a_policy_would_use_now(tmp_path: Path) -> None:
    """Each target's own recorded policy and environment, through ``phase_timeout``."""
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    imported = target_key("api", "phase:imported", "production")
    store.append(imported, [Sample(Series.READY, clock.wall() - 5, 0.2)])  # no info recorded
    # The settings' own environment is not the targets': theirs must be used.
    settings = Settings(environment="development")
    summaries = {s.target: s for s in summarize(store, settings, clock=clock)}
    assert sorted(summaries) == sorted([TARGET, OTHER, imported])

    history = store.load(TARGET)
    policy = AdaptiveTimeout(min_samples=3)
    prod = summaries[TARGET].timeout
    assert prod is not None
    assert prod == phase_timeout(policy, history, settings, environment=Environment.PRODUCTION)
    # The same numbers as the policy itself with the production bounds.
    direct = policy.compute(history, timeout_context(settings, Environment.PRODUCTION))
    assert (prod.seconds, prod.source, prod.explanation) == (
        direct.seconds,
        "adaptive",
        direct.explanation,
    )
    assert prod.seconds < settings.timeouts.production.default  # learned, not the default
    assert prod.attempt_seconds == direct.attempt_seconds == 1.0  # production's attempt floor
    dev = phase_timeout(policy, history, settings, environment=Environment.DEVELOPMENT)
    assert dev.attempt_seconds != prod.attempt_seconds  # so the environment did matter

    other = summaries[OTHER].timeout
    assert other is not None
    assert (other.seconds, other.source) == (7.0, "fixed")
    assert other.attempt_seconds == attempt_split(7.0) == 2.0

    # History without a recorded policy (imported): the settings' default.
    bare = summaries[imported].timeout
    assert bare is not None
    assert (bare.seconds, bare.source) == (settings.phase_timeout, "default")
    assert summaries[imported].timeout_error is None


def test_summarize_survives_a_policy_it_cannot_rebuild(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)

    class Broken:
        def compute(
            self, history: TimingHistory, context: TimeoutContext | None = None
        ) -> TimeoutDecision:
            raise RuntimeError("estimator exploded")

    store = view_store(tmp_path / "h.sqlite3", clock, other_policy=Broken())
    # A spec written by another version of smd, which this one rejects.
    store.append_many(
        {TARGET: [Sample(Series.ATTEMPT, clock.wall() - 1, 0.01)]},
        info={TARGET: replace(store.targets()[TARGET], policy={"type": "adaptive", "target": 7})},
    )

    summaries = {s.target: s for s in summarize(store, Settings(), clock=clock)}
    prod, other = summaries[TARGET], summaries[OTHER]
    assert prod.timeout is None
    assert prod.timeout_error == (
        "stored timeout policy cannot be rebuilt (ValueError: target must be a number > 0 "
        "and < 0.5, got 7)"
    )
    assert other.timeout is None
    assert other.timeout_error is not None
    assert "custom policy" in other.timeout_error
    assert "Broken" in other.timeout_error
    # Everything else about both targets is still shown.
    assert prod.counts["attempt"] == 6
    assert other.counts["attempt"] == 1
    text = render_text(list(summaries.values()))
    assert "unavailable: stored timeout policy cannot be rebuilt (ValueError" in text
    assert "unavailable: set by the custom policy" in text


def test_summarize_restricted_to_given_targets(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    (only,) = summarize(store, targets=[OTHER, OTHER], clock=clock)
    assert only.target == OTHER
    never = target_key("api", "phase:never", "test")
    (unknown,) = summarize(store, targets=[never], clock=clock)
    assert unknown.total == 0
    assert unknown.success.total == 0
    assert unknown.ready.quantiles == ()


def test_history_view_json_and_text(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(
        tmp_path / "h.sqlite3", clock, prod_policy=FixedTimeout(7), other_policy=FixedTimeout(7)
    )
    summaries = summarize(store, Settings(), clock=clock)
    data = json.loads(json.dumps([s.to_dict() for s in summaries]))
    prod = next(d for d in data if d["target"] == TARGET)
    assert prod["startup"] == "api"
    assert prod["phase"] == "database"
    assert prod["dependency"] == PROD_DEPENDENCY
    assert prod["environment"] == "production"
    assert prod["counts"] == {"attempt": 5, "ready": 6, "failure": 3, "bypass": 2}
    assert prod["total"] == 16
    assert prod["censored"] == 1
    assert prod["ready"]["quantiles"] == {"p50": 0.6, "p90": 0.92, "p99": 0.992}
    assert prod["success"]["successes"] == 5
    assert prod["success"]["total"] == 9
    assert prod["consecutive_degraded"] == 2
    assert prod["timeout"]["seconds"] == 7.0
    assert prod["timeout"]["attempt_seconds"] == 2.0
    assert prod["timeout"]["source"] == "fixed"
    assert prod["timeout_error"] is None
    # The one timestamp format of every JSON document smd writes.
    assert prod["last_at"] == "2033-05-18T03:25:00.000Z"  # 2e9 s minus 500 s
    assert prod["first_at"] == "2033-05-18T02:10:00.000Z"  # 2e9 s minus 5000 s
    assert "history" not in prod  # the raw samples are not part of the view

    text = render_text(summaries)
    assert f"{PROD_DEPENDENCY}  [production]  (startup api, phase database)" in text
    assert "ready 6 (1 censored)" in text
    assert "p50 600ms" in text
    assert "5/9 starts (55.6%)" in text
    assert "2 consecutive degraded startups" in text
    assert "timeout now  7s (fixed, 2s per attempt)" in text
    assert "fixed timeout of 7s" in text
    assert render_text([]).startswith("No history recorded yet")


def test_history_view_reads_without_creating_the_store(tmp_path: Path) -> None:
    path = tmp_path / "never" / "history.sqlite3"
    store = open_store(Settings(history_path=path), readonly=True)
    assert summarize(store) == []
    assert not path.parent.exists()


def test_history_view_shows_an_out_of_range_time_as_its_number(tmp_path: Path) -> None:
    # A sample no datetime can hold (an older smd's import, or the store's API):
    # the views show the number instead of failing for good on it.
    clock = ManualClock(start=2_000_000_000.0)
    store = SQLiteHistoryStore(tmp_path / "h.sqlite3")
    store.append_many(
        {TARGET: [Sample(Series.READY, 3e11, 1.0), Sample(Series.READY, 1e30, 2.0)]},
        info={TARGET: TargetInfo(TARGET, "api", PROD_DEPENDENCY, "production", "database")},
    )
    (summary,) = summarize(store, Settings(), clock=clock)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["first_at"] == "3e+11 s since the epoch (out of range)"
    assert data["last_at"] == "1e+30 s since the epoch (out of range)"
    assert "last sample  1e+30 s since the epoch (out of range)" in render_text([summary])
