"""Every phase failure is a failure (issue 11): BaseException subclasses a phase
raises, and a phase that blocks the event loop past its deadline.

Real `smd run` processes where the exit code, the exec and stderr matter; the
same startups in-process for the report's details.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from smd import Outcome, State, load_settings, run_startup
from smd.exceptions import StartupFailed
from smd.history import MemoryHistoryStore

ROOT = Path(__file__).resolve().parent.parent
TARGET = str(ROOT / "tests" / "targets" / "raises.py") + ":startup"
sys.path.insert(0, str(ROOT / "tests" / "targets"))
import raises  # noqa: E402

KINDS = sorted(raises.RAISES)


def smd_run(tmp: Path, what: str, *cmd: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMD")}
    base.update(
        SMD_HISTORY_PATH=str(tmp / "history.sqlite3"),
        SMD_ENVIRONMENT="production",
        SMD_LOG_FORMAT="json",
        SMDTEST_RAISE=what,
        **env,
    )
    args = [sys.executable, "-m", "smd", "run", TARGET, "--report", str(tmp / "report.json")]
    if cmd:
        args += ["--", *cmd]
    return subprocess.run(args, cwd=tmp, env=base, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("what", KINDS)
def test_a_base_exception_from_a_phase_fails_startup_without_exec(
    tmp_path: Path, what: str
) -> None:
    marker = tmp_path / "exec-ran"
    out = smd_run(tmp_path, what, sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert out.returncode == 70, out.stderr
    assert not marker.exists()  # CMD is never exec'd after a failed startup
    assert "STARTUP FAILED" in out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["state"] == "failed"
    boom = next(p for p in report["phases"] if p["name"] == "boom")
    assert boom["outcome"] == "failed"
    assert boom["failure"]["kind"] == "application"
    assert type(raises.RAISES[what]).__name__ in boom["failure"]["message"]
    first = next(p for p in report["phases"] if p["name"] == "first")
    assert first["outcome"] == "ok"


@pytest.mark.parametrize("what", KINDS)
async def test_in_process_the_failure_goes_through_the_bypass_policy(what: str) -> None:
    os.environ["SMDTEST_RAISE"] = what
    try:
        settings = load_settings(environment="development", history_enabled=False)
        report = await run_startup(raises.startup, settings=settings, store=MemoryHistoryStore())
    finally:
        del os.environ["SMDTEST_RAISE"]
    boom = report.phase("boom")
    assert report.state is State.DEGRADED  # development: permissive, bypassed
    assert boom.outcome is Outcome.BYPASSED
    assert boom.failure is not None
    assert boom.failure.kind.value == "application"
    assert boom.decision is not None
    assert boom.decision.action.value == "continue"


async def test_a_base_exception_in_production_raises_startup_failed_with_the_original() -> None:
    os.environ["SMDTEST_RAISE"] = "keyboard-interrupt"
    try:
        settings = load_settings(environment="production", history_enabled=False)
        with pytest.raises(StartupFailed) as info:
            await run_startup(raises.startup, settings=settings, store=MemoryHistoryStore())
    finally:
        del os.environ["SMDTEST_RAISE"]
    (error,) = info.value.exceptions
    assert isinstance(error.__cause__, KeyboardInterrupt)  # kept, chained
    assert info.value.report.exit_code() == 70


async def test_the_callers_cancel_scope_is_a_real_interruption() -> None:
    os.environ["SMDTEST_RAISE"] = "block"
    os.environ["SMDTEST_BLOCK"] = "0"
    try:
        settings = load_settings(environment="production", history_enabled=False)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await run_startup(raises.startup, settings=settings, store=MemoryHistoryStore())
    finally:
        del os.environ["SMDTEST_RAISE"], os.environ["SMDTEST_BLOCK"]
    assert scope.cancelled_caught


def test_a_phase_blocking_the_loop_past_its_deadline_fails_as_timeout(tmp_path: Path) -> None:
    out = smd_run(tmp_path, "block", SMDTEST_TIMEOUT="0.5", SMDTEST_BLOCK="1.5")
    assert out.returncode == 75, out.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    boom = next(p for p in report["phases"] if p["name"] == "boom")
    assert boom["outcome"] == "failed"
    assert boom["failure"]["kind"] == "timeout"
    assert "overran its 0.5s deadline by" in boom["failure"]["message"]
    assert "blocked the event loop" in boom["failure"]["message"]
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    blocked = [e for e in events if e["event"] == "smd.loop.blocked"]
    assert blocked, out.stderr
    assert blocked[0]["phases"] == ["boom"]
    assert blocked[0]["seconds"] >= 1.0
    assert blocked[0]["level"] == "warning"


async def test_the_watchdog_names_the_phase_in_process() -> None:
    os.environ["SMDTEST_RAISE"] = "block"
    os.environ["SMDTEST_BLOCK"] = "0.6"
    try:
        settings = load_settings(environment="development", history_enabled=False)
        with capture_logs() as logs:
            report = await run_startup(
                raises.startup, settings=settings, store=MemoryHistoryStore()
            )
    finally:
        del os.environ["SMDTEST_RAISE"], os.environ["SMDTEST_BLOCK"]
    assert report.phase("boom").outcome is Outcome.OK  # 0.6 s is within its 5 s deadline
    blocked = [e for e in logs if e["event"] == "smd.loop.blocked"]
    assert [e["phases"] for e in blocked] == [["boom"]]
