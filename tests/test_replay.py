"""``smd history replay``: recorded starts through the current policy and the baselines.

The figures are checked against a small case computed by hand (in the
comments), the censoring rule is pinned, and the CLI is run as a user runs
it, against a real SQLite history file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smd import load_settings
from smd.history import (
    BASELINES,
    MemoryHistoryStore,
    PolicyFigures,
    Rfc6298Timeout,
    SQLiteHistoryStore,
    TargetInfo,
    replay_store,
)
from smd.timeouts import AdaptiveTimeout, Sample, Series, TimingHistory

T0 = 1_800_000_000.0
KEY = "shop/postgres://db.internal:5432/app@production"

# The hand-computed case: six recorded starts, oldest first, 60 s apart.
#   1: ready after 1 s          4: not ready after 10 s (censored)
#   2: ready after 7 s          5: ready after 4 s
#   3: not ready after 3 s      6: ready after 6 s
CASE = [(1.0, False), (7.0, False), (3.0, True), (10.0, True), (4.0, False), (6.0, False)]


def recorded(case: list[tuple[float, bool]] = CASE) -> list[Sample]:
    return [
        Sample(Series.READY, T0 + 60 * i, seconds, censored=censored)
        for i, (seconds, censored) in enumerate(case)
    ]


def figures(policy: dict[str, object] | None = None) -> dict[str, PolicyFigures]:
    store = MemoryHistoryStore()
    store.append_many({KEY: recorded()}, {KEY: TargetInfo(KEY, policy=policy or {})})
    settings = load_settings(environment="production")
    (target,) = replay_store(store, settings)
    assert (target.starts, target.successes, target.censored) == (6, 4, 2)
    return {p.policy: p for p in target.policies}


def test_fixed_5s_by_hand() -> None:
    # D = 5 at every start.
    #   1: 1 <= 5 ready.     2: 7 > 5 false failure.
    #   3: censored at 3, D = 5 > 3: waited 5, unknown beyond the record.
    #   4: censored at 10, D = 5 <= 10: waited 5, exactly what would have happened.
    #   5: 4 <= 5 ready.     6: 6 > 5 false failure.
    # False failures 2 of 4 successes; detection (5 + 5) / 2 = 5, 1 unknown; deadline 5.
    f = figures()["fixed 5s"]
    assert (f.starts, f.successes, f.false_failures) == (6, 4, 2)
    assert f.false_failure_rate == 0.5
    assert (f.censored, f.unknown) == (2, 1)
    assert f.mean_detection == 5.0
    assert f.mean_deadline == 5.0


def test_fixed_30s_and_600s_by_hand() -> None:
    # D = 30: every success fits (0 false failures); both censored starts
    # are waited 30 s, both past the record (30 > 3, 30 > 10): 2 unknown.
    f = figures()["fixed 30s"]
    assert (f.false_failures, f.censored, f.unknown) == (0, 2, 2)
    assert (f.mean_detection, f.mean_deadline) == (30.0, 30.0)
    g = figures()["fixed 600s"]
    assert (g.false_failures, g.unknown, g.mean_detection) == (0, 2, 600.0)


def test_rfc6298_by_hand() -> None:
    # RTO starts at 1 s; SRTT/RTTVAR per RFC 6298 (alpha 1/8, beta 1/4), min 1 s, max 60 s.
    #   1: D = 1;  1 <= 1 ready: SRTT 1, RTTVAR 0.5, RTO = 1 + 4 * 0.5 = 3.
    #   2: D = 3;  7 > 3 false failure: RTO doubles to 6.
    #   3: D = 6;  censored at 3: waited 6 (6 > 3: unknown); RTO 12.
    #   4: D = 12; censored at 10: waited 12 (12 > 10: unknown); RTO 24.
    #   5: D = 24; 4 <= 24 ready: RTTVAR = 0.75 * 0.5 + 0.25 * |1 - 4| = 1.125,
    #      SRTT = 0.875 * 1 + 0.125 * 4 = 1.375, RTO = 1.375 + 4 * 1.125 = 5.875.
    #   6: D = 5.875; 6 > 5.875 false failure.
    # False failures 2/4; detection (6 + 12) / 2 = 9, 2 unknown;
    # mean deadline (1 + 3 + 6 + 12 + 24 + 5.875) / 6 = 51.875 / 6.
    f = figures()["RFC 6298"]
    assert (f.false_failures, f.successes) == (2, 4)
    assert (f.censored, f.unknown) == (2, 2)
    assert f.mean_detection == 9.0
    assert f.mean_deadline == pytest.approx(51.875 / 6)


def test_the_rfc6298_policy_is_a_timeout_policy_over_the_history() -> None:
    history = TimingHistory()
    policy = Rfc6298Timeout()
    assert policy.compute(history).seconds == 1.0
    assert policy.compute(history).source == "default"
    history.record_success(1.0, at=T0)
    assert policy.compute(history).seconds == 3.0
    history.record_timeout(3.0, at=T0 + 1)
    decision = policy.compute(history)
    assert decision.seconds == 6.0
    assert "doubled 1 time" in decision.explanation
    for i in range(10):  # backs off up to its 60 s maximum, never past it
        history.record_timeout(60.0, at=T0 + 2 + i)
    assert policy.compute(history).seconds == 60.0
    with pytest.raises(ValueError, match="minimum"):
        Rfc6298Timeout(minimum=5.0, maximum=2.0)


def test_the_current_policy_is_the_recorded_one() -> None:
    # A phase recorded with a fixed 5 s deadline: "current" is that deadline.
    by_policy = figures({"type": "fixed", "seconds": 5.0})
    current, fixed = by_policy["current"], by_policy["fixed 5s"]
    assert current.description == "the phase's fixed 5s"
    assert (current.false_failures, current.mean_detection, current.unknown) == (2, 5.0, 1)
    assert current.mean_deadline == fixed.mean_deadline
    # A phase without a timeout: the settings' phase_timeout (production: 30 s).
    default = figures({"type": "default"})["current"]
    assert default.description == "the settings' phase_timeout"
    assert (default.false_failures, default.mean_deadline, default.unknown) == (0, 30.0, 2)
    assert [p for p in figures() if p != "current"] == list(BASELINES)


def test_the_adaptive_replay_is_the_documented_loop_on_the_recorded_clock() -> None:
    # The current policy for a target without a recorded one is AdaptiveTimeout
    # with default parameters; the replay must match driving it by hand
    # through the public API, with the settings' production bounds.
    from smd.clock import ManualClock
    from smd.timeouts import phase_timeout

    settings = load_settings(environment="production")
    clock = ManualClock(T0)
    policy = AdaptiveTimeout(clock=clock)
    history = TimingHistory(clock=clock)
    deadlines, false_failures, detection = [], 0, []
    for sample in recorded():
        clock.advance(sample.at - clock.wall())
        d = phase_timeout(policy, history, settings).seconds
        deadlines.append(d)
        assert sample.seconds is not None
        if not sample.censored and sample.seconds <= d:
            history.record_success(sample.seconds, at=sample.at)
            continue
        if sample.censored:
            detection.append(d)
        else:
            false_failures += 1
        history.record_timeout(d, at=sample.at)
    current = figures()["current"]
    assert current.description == "adaptive timeout, default parameters"
    assert current.false_failures == false_failures
    assert current.mean_detection == pytest.approx(sum(detection) / len(detection))
    assert current.mean_deadline == pytest.approx(sum(deadlines) / len(deadlines))
    # The production default (30 s) while nothing is learned: the first start.
    assert deadlines[0] == 30.0


def test_a_target_without_ready_samples_replays_nothing() -> None:
    store = MemoryHistoryStore()
    store.append(KEY, [Sample(Series.ATTEMPT, T0, 0.1)])
    (target,) = replay_store(store, load_settings())
    assert target.starts == 0
    assert all(p.mean_deadline is None and p.false_failure_rate is None for p in target.policies)


def test_an_unknown_target_lists_the_known_ones() -> None:
    from smd.exceptions import UsageError

    store = MemoryHistoryStore()
    store.append(KEY, recorded())
    with pytest.raises(UsageError, match=r"unknown --target 'nope'; known targets: 'shop/"):
        replay_store(store, load_settings(), targets=["nope"])


# -- the command ----------------------------------------------------------------------


def smd(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(SMD_HISTORY_PATH=str(tmp / "h.sqlite3"), SMD_ENVIRONMENT="production")
    return subprocess.run(
        [sys.executable, "-m", "smd", *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_smd_history_replay_text_json_and_target(tmp_path: Path) -> None:
    other = "shop/phase:cache@production"
    SQLiteHistoryStore(tmp_path / "h.sqlite3").append_many(
        {KEY: recorded(), other: [Sample(Series.READY, T0, 0.2)]},
        {KEY: TargetInfo(KEY, policy={"type": "fixed", "seconds": 5.0})},
    )
    text = smd(tmp_path, "history", "replay", "--target", KEY)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == KEY
    assert other not in text.stdout
    assert "replayed 6 recorded starts: 4 ready, 2 censored" in lines[1]
    row = next(line for line in lines if line.strip().startswith("fixed 5s"))
    assert row.split()[2:6] == ["2/4", "(50.0%)", "5s", "(1"]
    done = smd(tmp_path, "history", "replay", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [t["target"] for t in data] == sorted([KEY, other])
    mine = next(t for t in data if t["target"] == KEY)
    rfc = next(p for p in mine["policies"] if p["policy"] == "RFC 6298")
    assert (rfc["false_failures"], rfc["unknown"], rfc["mean_detection"]) == (2, 2, 9.0)
    # The view's --format before the subcommand works too.
    assert json.loads(smd(tmp_path, "history", "--format", "json", "replay").stdout) == data
    # And the view itself is unchanged.
    view = smd(tmp_path, "history", "--format", "json")
    assert view.returncode == 0
    assert {t["target"] for t in json.loads(view.stdout)} == {KEY, other}


def test_smd_history_replay_unknown_target_is_one_line_exit_64(tmp_path: Path) -> None:
    SQLiteHistoryStore(tmp_path / "h.sqlite3").append(KEY, recorded())
    done = smd(tmp_path, "history", "replay", "--target", "api/nope@production")
    assert done.returncode == 64
    assert done.stderr.strip().splitlines() == [
        f"smd: usage error: unknown --target 'api/nope@production'; known targets: '{KEY}'"
    ]
    assert "Traceback" not in done.stderr


def test_policy_figures_json_names_every_figure() -> None:
    f = figures()["fixed 5s"].to_dict()
    assert f == {
        "policy": "fixed 5s",
        "description": "the same deadline at every start",
        "starts": 6,
        "successes": 4,
        "false_failures": 2,
        "censored": 2,
        "unknown": 1,
        "mean_detection": 5.0,
        "mean_deadline": 5.0,
        "false_failure_rate": 0.5,
    }
