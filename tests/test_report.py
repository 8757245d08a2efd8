"""The run report: versioned JSON in plan order, exit codes, the human summary."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from smd import (
    Failure,
    FailureKind,
    Outcome,
    Phase,
    PhaseContext,
    PhaseError,
    Report,
    Startup,
    StartupFailed,
    State,
    load_settings,
    run_startup,
)
from smd._exit import EXIT_CODES, for_kind
from smd._report import REPORT_VERSION
from smd.bypass import PermissivePolicy, StrictPolicy
from smd.clock import ManualClock
from smd.history import MemoryHistoryStore


async def run(s: Startup, **kw: Any) -> Report:
    kw.setdefault("settings", load_settings(environment="test"))
    kw.setdefault("store", MemoryHistoryStore())
    kw.setdefault("policy", StrictPolicy())
    return await run_startup(s, **kw)


async def failed(s: Startup, **kw: Any) -> Report:
    with pytest.raises(StartupFailed) as info:
        await run(s, **kw)
    return info.value.report


async def value(ctx: PhaseContext) -> int:
    return 1


def raising(exc: Exception) -> Any:
    async def fn(ctx: PhaseContext) -> None:
        raise exc

    return fn


def mixed_startup() -> Startup:
    """Declared so that plan order differs from declaration order and completion order."""
    s = Startup("api")
    gate = anyio.Event()

    async def slow(ctx: PhaseContext) -> str:
        await gate.wait()
        return "slow"

    async def fast(ctx: PhaseContext) -> str:
        gate.set()
        return "fast"

    async def retry(ctx: PhaseContext) -> None:
        # Attempt times are on the run's clock, like every time the run records.
        t = ctx.clock.monotonic()
        ctx.record_attempt(t, t, False, error="refused")
        ctx.record_attempt(t, ctx.clock.monotonic(), True)

    s.add(Phase(name="api", run=value, requires=("slow", "fast")))
    s.add(Phase(name="slow", run=slow, timeout=30))
    s.add(Phase(name="fast", run=fast, timeout=5))
    s.add(Phase(name="retry", run=retry))
    s.add(Phase(name="cache", run=raising(RuntimeError("cache down")), requires=("fast",)))
    s.add(Phase(name="warm", run=value, requires=("cache",)))
    return s


async def test_report_json_is_versioned_and_round_trips() -> None:
    report = await run(mixed_startup(), policy=PermissivePolicy())
    text = report.to_json()
    data = json.loads(text)
    assert data["version"] == REPORT_VERSION == 2
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["startup"] == "api"
    assert data["environment"] == "test"
    assert data["mode"] == "concurrent"
    assert data["state"] == "degraded"
    assert data["exit_code"] == 0
    assert data["budget"] == 120.0
    # One timestamp format: ISO-8601 UTC text, the run's own wall-clock start.
    started_at = datetime.fromisoformat(data["started_at"])
    assert started_at.utcoffset() == timedelta(0)
    assert abs(started_at.timestamp() - report.started_at) < 1e-3
    assert data["teardown_skipped"] == []
    assert data["interrupted"] is None
    assert data["reasons"] == list(report.reasons)
    assert len(data["reasons"]) == 1
    assert data["plan"]["order"] == list(report.plan.order)
    assert data["plan"]["waves"] == [list(w) for w in report.plan.waves]
    # Phases in plan order (not declaration, not completion order).
    assert [p["name"] for p in data["phases"]] == [
        "slow",
        "fast",
        "api",
        "retry",
        "cache",
        "warm",
    ]
    assert [p["name"] for p in data["phases"]] == data["plan"]["order"]
    by_name = {p["name"]: p for p in data["phases"]}
    assert {n: p["outcome"] for n, p in by_name.items()} == {
        "slow": "ok",
        "fast": "ok",
        "api": "ok",
        "retry": "ok",
        "cache": "bypassed",
        "warm": "skipped",
    }
    fast = by_name["fast"]
    assert fast["timeout"]["seconds"] == 5
    assert fast["timeout"]["source"] == "fixed"
    assert fast["deadline"] == 5
    assert fast["start"] <= fast["end"]
    assert fast["duration"] == pytest.approx(fast["end"] - fast["start"], abs=2e-6)
    cache = by_name["cache"]
    assert cache["failure"]["kind"] == "application"
    assert cache["failure"]["causes"] == ["RuntimeError: cache down"]
    assert cache["decision"]["action"] == "continue"
    assert cache["decision"]["mode"] == "permissive"
    warm = by_name["warm"]
    assert warm["start"] is None
    assert warm["duration"] is None
    assert warm["reason"] == "requirement 'cache' ended bypassed"
    attempts = by_name["retry"]["attempts"]
    assert [(a["number"], a["ok"]) for a in attempts] == [(1, False), (2, True)]
    assert attempts[0]["detail"] == {"error": "refused"}
    # Attempt times are relative to the startup's start, like phase times.
    assert by_name["retry"]["start"] <= attempts[0]["start"] <= by_name["retry"]["end"]


async def test_compact_json_is_one_line() -> None:
    report = await run(mixed_startup(), policy=PermissivePolicy())
    assert "\n" not in report.to_json(indent=None)


async def test_failed_report_json() -> None:
    s = Startup("api")
    s.add(Phase(name="config", run=value))
    s.add(
        Phase(
            name="db",
            run=raising(
                PhaseError(
                    Failure(
                        FailureKind.CONFIGURATION,
                        "password authentication failed for user app",
                        code="28P01",
                        details={"sqlstate": "28P01"},
                        attempts=1,
                    )
                )
            ),
            requires=("config",),
        )
    )
    s.add(Phase(name="api", run=value, requires=("db",)))
    report = await failed(s)
    data = json.loads(report.to_json())
    assert data["state"] == "failed"
    assert data["exit_code"] == 78
    db = data["phases"][1]
    assert db["name"] == "db"
    assert db["outcome"] == "failed"
    assert db["failure"]["code"] == "28P01"
    assert db["failure"]["details"] == {"sqlstate": "28P01"}
    assert "sqlstate" not in db["failure"]
    assert db["failure"]["kind"] == "configuration"
    assert db["decision"]["action"] == "fail"
    assert data["phases"][2]["outcome"] == "skipped"


def test_exit_codes_are_the_documented_sysexits() -> None:
    assert EXIT_CODES == {
        "ready": 0,
        "degraded": 0,
        "usage": 64,
        "application": 70,
        "output": 74,
        "infrastructure": 75,
        "timeout": 75,
        "configuration": 78,
        "invalid_settings": 78,
        "invalid_plan": 78,
        "unknown": 69,
        "sighup": 129,
        "sigint": 130,
        "sigterm": 143,
    }
    assert {k: for_kind(k) for k in FailureKind} == {
        FailureKind.INFRASTRUCTURE: 75,
        FailureKind.TIMEOUT: 75,
        FailureKind.CONFIGURATION: 78,
        FailureKind.APPLICATION: 70,
        FailureKind.UNKNOWN: 69,
    }


async def test_exit_code_of_ready_degraded_interrupted() -> None:
    s = Startup("api")
    s.add(Phase(name="a", run=value))
    ready = await run(s)
    assert ready.state is State.READY
    assert ready.exit_code() == 0
    degraded = dataclasses.replace(ready, state=State.DEGRADED, reasons=("a: x",))
    assert degraded.exit_code() == 0
    failed_no_phase = dataclasses.replace(ready, state=State.FAILED)
    assert failed_no_phase.exit_code() == 69
    assert dataclasses.replace(failed_no_phase, interrupted="sigint").exit_code() == 130
    assert dataclasses.replace(failed_no_phase, interrupted="sigterm").exit_code() == 143
    assert dataclasses.replace(failed_no_phase, interrupted="sighup").exit_code() == 129
    assert (
        json.loads(dataclasses.replace(ready, interrupted="sigterm").to_json())["exit_code"] == 143
    )


async def test_summary_of_a_failed_startup() -> None:
    s = Startup("api")
    s.add(
        Phase(
            name="db",
            run=raising(PhaseError(Failure(FailureKind.INFRASTRUCTURE, "connection refused"))),
        )
    )
    report = await failed(s)
    text = report.summary()
    lines = text.splitlines()
    assert lines[0] == "STARTUP FAILED: api (test)"
    assert "  phase:    db" in lines
    assert "  kind:     infrastructure" in lines  # no code: nothing in parentheses
    assert "  error:    connection refused" in lines
    assert any(line.startswith("  decision: fail: strict mode") for line in lines)
    assert any(line.startswith("  todo:") and "exit 75" in line for line in lines)


async def test_summary_shows_the_failure_code_and_teardown_errors() -> None:
    async def close(value: object) -> None:
        raise OSError("socket already closed")

    s = Startup("api")
    s.add(Phase(name="first", run=value, teardown=close))
    s.add(
        Phase(
            name="db",
            run=raising(
                PhaseError(
                    Failure(
                        FailureKind.CONFIGURATION,
                        "no db",
                        code="3D000",
                        details={"sqlstate": "3D000"},
                    )
                )
            ),
            requires=("first",),
        )
    )
    report = await failed(s)
    text = report.summary()
    assert "  kind:     configuration (code 3D000)" in text
    assert "  teardown error: OSError: socket already closed" in text
    assert report.teardown_errors == ("OSError: socket already closed",)


async def test_summary_of_ready_and_degraded() -> None:
    s = Startup("api")
    s.add(Phase(name="a", run=value))
    s.add(Phase(name="b", run=raising(RuntimeError("x"))))
    report = await run(s, policy=PermissivePolicy())
    lines = report.summary().splitlines()
    assert lines[0].startswith("startup api degraded in ")
    assert lines[1].startswith("  degraded: b: application failure bypassed: permissive mode")


async def test_report_helpers() -> None:
    async def slow_value(ctx: PhaseContext) -> int:
        await ctx.clock.sleep(0.5)
        return await value(ctx)

    async def slow_failure(ctx: PhaseContext) -> None:
        await ctx.clock.sleep(0.25)
        raise RuntimeError("x")

    s = Startup("api")
    s.add(Phase(name="a", run=slow_value))
    s.add(Phase(name="b", run=slow_failure, requires=("a",)))
    report = await failed(s, clock=ManualClock())  # exact times: only the sleeps move it
    assert report.failed_phase is not None
    assert report.failed_phase.name == "b"
    assert report.phase("a").outcome is Outcome.OK
    assert (report.phase("a").start, report.phase("a").end) == (0.0, 0.5)
    assert report.phase("a").duration == 0.5
    assert (report.phase("b").start, report.phase("b").end) == (0.5, 0.75)
    assert report.phase("b").duration == 0.25
    with pytest.raises(KeyError):
        report.phase("zzz")
    assert report.duration == 0.75  # the run ends when its last phase does


async def test_startup_failed_message_names_phase_kind_and_error() -> None:
    s = Startup("api")
    s.add(Phase(name="db", run=raising(RuntimeError("postgresql://u:hunter22@h/db refused"))))
    with pytest.raises(StartupFailed) as info:
        await run(s)
    exc = info.value
    assert exc.message.startswith("startup 'api': phase 'db' failed (application): ")
    assert "hunter22" not in exc.message
    assert exc.report.failed_phase is not None
    derived = exc.derive([RuntimeError("x")])
    assert isinstance(derived, ExceptionGroup)
    assert derived.message == exc.message
