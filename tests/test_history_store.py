"""The SQLite history store on real files: round trip, bound, damage, read-only, factory."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from smd import (
    FailureKind,
    FixedTimeout,
    ManualClock,
    MemoryHistoryStore,
    Sample,
    Series,
    TimeoutContext,
    TimeoutDecision,
    TimeoutPolicy,
    TimingHistory,
)
from smd._history_view import quantile, render_text, split_target, summarize
from smd._matrix import success_rate
from smd._settings import Settings
from smd._sqlite_store import SCHEMA_VERSION, SQLiteHistoryStore, open_store
from smd._store import HistoryStore
from smd.timeouts import AdaptiveTimeout

TARGET = "postgres://db.internal:5432/app@production"
OTHER = "phase:cache@staging"


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
        store.append(f"postgres://h{t}:5432/db@production", h.pending)
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
    assert store.targets() == [TARGET]
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
    assert second.targets() == sorted([TARGET, OTHER])
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


# -- damaged files -------------------------------------------------------------


def test_corrupt_file_is_moved_aside_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    junk = os.urandom(16384)
    path.write_bytes(junk)

    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert store.load(TARGET).all_samples() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert store.targets() == [TARGET]
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


def test_two_stores_finding_the_same_damage_move_it_aside_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move-aside is serialised, and re-checked under the lock.

    The timestamp is taken between the check and the rename; slowing it
    down holds that window open, so without the lock both stores would pass
    the check and the second would fail to move (or move the fresh file).
    """
    path = tmp_path / "history.sqlite3"
    junk = os.urandom(16384)
    path.write_bytes(junk)

    import smd._sqlite_store as mod

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

    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert aside[0].read_bytes() == junk
    assert [s.degraded for s in stores] == [False, False]
    assert sum(s.moved_aside is not None for s in stores) == 1
    assert {w["event"] for w in history_warnings(logs)} == {"smd.history.corrupt"}
    assert integrity(path) == "ok"
    assert [s.at for s in SQLiteHistoryStore(path).load(TARGET).ready] == [0.0, 1.0]


def test_truncated_file_is_moved_aside_and_a_fresh_store_used(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    filled_store(path)
    assert not Path(f"{path}-wal").exists()  # checkpointed on close
    size = path.stat().st_size
    os.truncate(path, size // 2)

    with capture_logs() as logs:
        store = SQLiteHistoryStore(path)
        assert store.targets() == []
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert store.targets() == [TARGET]

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
        assert store.targets() == []
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
        assert store.targets() == [TARGET]
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
        assert store.targets() == []
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
    assert store.targets() == [TARGET]
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
    assert store.targets() == []
    assert not path.parent.exists()


def test_open_store_uncreatable_directory_gives_memory_and_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    with capture_logs() as logs:
        store = open_store(Settings(history_path=blocker / "smd" / "history.sqlite3"))
        store.append(TARGET, [Sample(Series.READY, 1.0, 0.3)])
        assert len(store.load(TARGET).ready) == 1
    assert isinstance(store, MemoryHistoryStore)
    assert [w["event"] for w in history_warnings(logs)] == ["smd.history.unwritable"]


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
    ],
)
def test_split_target(target: str, dependency: str, env: str | None) -> None:
    assert split_target(target) == (dependency, env)


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


def view_store(path: Path, clock: ManualClock) -> SQLiteHistoryStore:
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
    store.append(TARGET, h.pending)
    store.append(OTHER, [Sample(Series.ATTEMPT, now - 10, 0.003)])
    return store


def test_summarize_reports_counts_quantiles_success_and_degraded(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    summaries = summarize(store, clock=clock, half_life_hours=1.0)
    assert [s.target for s in summaries] == sorted([TARGET, OTHER])
    s = next(x for x in summaries if x.target == TARGET)

    assert s.dependency == "postgres://db.internal:5432/app"
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
    assert s.success.lower_bound is not None
    assert s.success.lower_bound < (s.success.estimate or 0)
    assert s.consecutive_degraded == 2
    assert s.last_at == clock.wall() - 500
    assert s.timeout is None
    assert s.timeout_error is None


def test_summarize_shows_the_timeout_a_policy_would_use_now(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    asked: list[str] = []

    def policy_for(target: str) -> TimeoutPolicy:
        asked.append(target)
        return AdaptiveTimeout(min_samples=3) if "@production" in target else FixedTimeout(7)

    contexts: list[str] = []

    def context_for(target: str) -> TimeoutContext | None:
        contexts.append(target)
        return None

    summaries = {
        s.target: s for s in summarize(store, policy_for, context_factory=context_for, clock=clock)
    }
    assert sorted(asked) == sorted(contexts) == sorted([TARGET, OTHER])
    prod = summaries[TARGET].timeout
    assert prod is not None
    assert prod == AdaptiveTimeout(min_samples=3).compute(store.load(TARGET))
    assert prod.source == "adaptive"
    other = summaries[OTHER].timeout
    assert other is not None
    assert (other.seconds, other.source) == (7.0, "fixed")


def test_summarize_survives_a_broken_policy(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)

    class Broken:
        def compute(
            self, history: TimingHistory, context: TimeoutContext | None = None
        ) -> TimeoutDecision:
            raise RuntimeError("estimator exploded")

    def policy_for(target: str) -> TimeoutPolicy:
        if target == OTHER:
            raise ValueError("no settings for staging")
        return Broken()

    summaries = {s.target: s for s in summarize(store, policy_for, clock=clock)}
    assert summaries[TARGET].timeout is None
    assert summaries[TARGET].timeout_error == "RuntimeError: estimator exploded"
    assert summaries[OTHER].timeout_error == "ValueError: no settings for staging"
    assert "unavailable: RuntimeError: estimator exploded" in render_text(list(summaries.values()))


def test_summarize_restricted_to_given_targets(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    (only,) = summarize(store, targets=[OTHER, OTHER], clock=clock)
    assert only.target == OTHER
    (unknown,) = summarize(store, targets=["phase:never@test"], clock=clock)
    assert unknown.total == 0
    assert unknown.success.total == 0
    assert unknown.ready.quantiles == ()


def test_history_view_json_and_text(tmp_path: Path) -> None:
    clock = ManualClock(start=2_000_000_000.0)
    store = view_store(tmp_path / "h.sqlite3", clock)
    summaries = summarize(store, lambda t: FixedTimeout(7), clock=clock)
    data = json.loads(json.dumps([s.to_dict() for s in summaries]))
    prod = next(d for d in data if d["target"] == TARGET)
    assert prod["environment"] == "production"
    assert prod["samples"] == {"attempt": 5, "ready": 6, "failure": 3, "bypass": 2}
    assert prod["censored"] == 1
    assert prod["ready"]["quantiles"] == {"p50": 0.6, "p90": 0.92, "p99": 0.992}
    assert prod["success_rate"]["successes"] == 5
    assert prod["success_rate"]["total"] == 9
    assert prod["consecutive_degraded"] == 2
    assert prod["timeout"]["seconds"] == 7.0
    assert prod["timeout"]["source"] == "fixed"
    assert prod["last_sample_at"] == "2033-05-18T03:25:00Z"  # 2e9 s minus 500 s

    text = render_text(summaries)
    assert "postgres://db.internal:5432/app  [production]" in text
    assert "ready 6 (1 censored)" in text
    assert "p50 600ms" in text
    assert "5/9 starts (55.6%)" in text
    assert "2 consecutive degraded startups" in text
    assert "timeout now  7s (fixed)" in text
    assert "fixed timeout of 7s" in text
    assert render_text([]).startswith("No history recorded yet")


def test_history_view_reads_without_creating_the_store(tmp_path: Path) -> None:
    path = tmp_path / "never" / "history.sqlite3"
    store = open_store(Settings(history_path=path), readonly=True)
    assert summarize(store) == []
    assert not path.parent.exists()
