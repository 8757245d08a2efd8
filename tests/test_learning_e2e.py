"""The learned timeout, through the real CLI against the real cluster.

Healthy ``smd run``s (a fresh history store) teach smd that this database is
fast: ``smd history`` then shows a learned deadline shorter than the no-data
default, with source ``adaptive`` and its explanation. A slow episode (the
fault proxy delays every connection, the runs still succeed) makes it grow.

The database is reached through a fault proxy so that slowness can be
switched on without touching the server; the history key is therefore the
proxy's ``host:port``, which stays the same for the whole test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pgbed.proxy import FaultProxy, Forward

from smd.checks.postgres import PostgresOptions
from smd.history import SQLiteHistoryStore, TargetInfo
from smd.phases import DatabasePhase
from smd.timeouts import TimingHistory, policy_spec

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests/targets/db_only.py:startup"
ENV = "development"
NO_DATA_DEFAULT = 10.0  # development's default deadline (no history)
MIN_SAMPLES = 8  # AdaptiveTimeout's built-in min_samples
# The floor is raised so that a clearly slow but healthy database (1.5 s to
# connect) still fits in the deadline learned from fast starts; the learned
# value is clamped there and must then grow past it.
FLOOR = 2.0
SLOW_CONNECT = 1.5


def _env(tmp_path: Path, dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(
        SMD_HISTORY_PATH=str(tmp_path / "history.sqlite3"),
        SMD_ENVIRONMENT=ENV,
        SMD_LOG_FORMAT="json",
        SMD_DATABASE_URL=dsn,
        SMD_TIMEOUTS__DEVELOPMENT__FLOOR=str(FLOOR),
    )
    env.update(extra)
    return env


def _smd(tmp_path: Path, dsn: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smd", *args],
        cwd=ROOT,
        env=_env(tmp_path, dsn, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _run(tmp_path: Path, dsn: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    out = _smd(tmp_path, dsn, "run", TARGET, "--report", str(report))
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(report.read_text())
    assert doc["state"] == "ready", doc
    phase: dict[str, Any] = doc["phases"][0]
    return phase


def _learned(tmp_path: Path, dsn: str, target: str, **extra: str) -> dict[str, Any]:
    out = _smd(tmp_path, dsn, "history", "--format", "json", **extra)
    assert out.returncode == 0, out.stderr
    entries = {e["target"]: e for e in json.loads(out.stdout)}
    assert target in entries, sorted(entries)
    entry: dict[str, Any] = entries[target]
    return entry


def test_learned_timeout_shrinks_with_healthy_runs_then_grows_after_a_slow_episode(
    tmp_path: Path, fault_proxy: FaultProxy, pg_dsn: str
) -> None:
    dsn = fault_proxy.dsn(pg_dsn)
    target = f"db_only/{PostgresOptions.from_dsn(dsn).target_key()}@{ENV}"

    # No history: the first run uses the environment's no-data default.
    first = _run(tmp_path, dsn)
    assert first["timeout"]["source"] == "default"
    assert first["timeout"]["seconds"] == NO_DATA_DEFAULT
    entry = _learned(tmp_path, dsn, target)
    assert entry["timeout"]["source"] == "default"
    assert entry["timeout"]["seconds"] == NO_DATA_DEFAULT

    # The graded warm-up: the few fast samples may shorten the deadline from
    # the no-data default, never lengthen it past that default. From one
    # start to the next it is not monotone: the predictive quantile widens
    # when real connection times disagree (a 10 ms and a 40 ms connect on a
    # loaded machine), as it should; tests/test_timeouts.py pins the graded
    # steps with an injected clock.
    warm_up = [_run(tmp_path, dsn)["timeout"] for _ in range(MIN_SAMPLES - 1)]
    for warm in warm_up:
        assert warm["seconds"] <= NO_DATA_DEFAULT, warm
    assert warm_up[-1]["seconds"] < NO_DATA_DEFAULT  # what it is for: no 8 slow starts

    healthy = _learned(tmp_path, dsn, target)
    assert healthy["ready"]["count"] == MIN_SAMPLES
    assert healthy["ready"]["censored"] == 0
    fast = healthy["timeout"]
    assert fast["source"] == "adaptive", fast
    assert fast["seconds"] < NO_DATA_DEFAULT, fast
    assert fast["explanation"].startswith(f"adaptive {fast['seconds']:.3g}s from {MIN_SAMPLES}")
    # Every healthy start was far below the floor: the learned value is the floor.
    assert fast["seconds"] == FLOOR
    assert f"clamp: floor {FLOOR:g}s" in fast["explanation"]

    # The next run uses what was learned.
    used = _run(tmp_path, dsn)["timeout"]
    assert used["source"] == "adaptive"
    assert used["seconds"] == fast["seconds"]

    # A slow episode: every connection waits 1.5 s at the proxy; runs still succeed.
    fault_proxy.set_mode(Forward(latency=SLOW_CONNECT, on_connect=True, per_chunk=False))
    for _ in range(2):
        phase = _run(tmp_path, dsn)
        assert phase["end"] - phase["start"] >= SLOW_CONNECT
    slow = _learned(tmp_path, dsn, target)
    grown = slow["timeout"]
    assert slow["ready"]["count"] == MIN_SAMPLES + 3
    assert slow["ready"]["max"] >= SLOW_CONNECT
    assert grown["source"] == "adaptive", grown
    assert grown["seconds"] > fast["seconds"], (fast, grown)
    assert grown["seconds"] >= SLOW_CONNECT
    assert grown["explanation"].startswith(f"adaptive {grown['seconds']:.3g}s from 11 ready")

    print(f"\nlearned: healthy {fast['explanation']}\nlearned: slow {grown['explanation']}")

    # And the next run waits for the grown deadline.
    fault_proxy.set_mode(Forward())
    assert _run(tmp_path, dsn)["timeout"]["seconds"] == grown["seconds"]


def test_history_honours_the_min_samples_setting(tmp_path: Path) -> None:
    """``SMD_TIMEOUTS__MIN_SAMPLES`` decides when a learned timeout replaces the default.

    Four healthy starts with ``min_samples = 4`` must be enough for
    ``smd history`` (and ``smd run``) to show an adaptive deadline.
    """
    dsn = "postgresql://app:pw@db.example.invalid:5432/app"
    dependency = PostgresOptions.from_dsn(dsn).target_key()
    target = f"db_only/{dependency}@{ENV}"
    history = TimingHistory()
    now = time.time()
    samples = [history.record_success(0.05, at=now - 60.0 * (i + 1)) for i in range(4)]
    # What `smd run` of tests/targets/db_only.py records with the samples: the
    # target's startup, dependency and phase, and the phase's timeout policy
    # (`smd history` computes the deadline with that policy).
    phase = DatabasePhase().to_phase()
    info = TargetInfo(
        target, "db_only", dependency, ENV, phase.name, policy_spec(phase.timeout_policy())
    )
    SQLiteHistoryStore(tmp_path / "history.sqlite3").append_many({target: samples}, {target: info})
    # With the built-in min_samples (8), four starts are only a warm-up...
    warm = _learned(tmp_path, dsn, target)["timeout"]
    assert warm["details"]["min_samples"] == 8, warm
    assert warm["details"]["statistic"] == "warm-up log-normal predictive bound", warm
    # ...and with min_samples = 4 they are enough for the full estimate.
    entry = _learned(tmp_path, dsn, target, SMD_TIMEOUTS__MIN_SAMPLES="4")
    assert entry["timeout"]["details"]["min_samples"] == 4, entry["timeout"]
    assert entry["timeout"]["source"] == "adaptive", entry["timeout"]
    assert entry["timeout"]["details"]["statistic"].startswith("upper "), entry["timeout"]
