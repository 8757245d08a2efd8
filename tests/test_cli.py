"""The real ``smd`` command as a subprocess: exit codes, exec, signals, files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KINDS = "tests/targets/kinds.py:startup"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMD_")}
    env.update(
        SMD_HISTORY_PATH=str(tmp_path / "history.sqlite3"),
        SMD_ENVIRONMENT="test",
        SMD_LOG_FORMAT="json",
        SMD_TEST_MARKS=str(tmp_path / "marks.txt"),
    )
    env.update(extra)
    return env


def smd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smd", *args],
        cwd=ROOT,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def marks(tmp_path: Path) -> list[str]:
    path = tmp_path / "marks.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_plan_text_shows_order_waves_timeouts_and_decisions(tmp_path: Path) -> None:
    out = smd(tmp_path, "plan", KINDS)
    assert out.returncode == 0, out.stderr
    assert "order: first -> second -> work" in out.stdout
    assert "wave 0: first" in out.stdout
    assert "wave 2: work" in out.stdout
    assert "work: 20s [fixed]" in out.stdout
    assert "bypass decisions" in out.stdout


def test_plan_json_is_machine_readable(tmp_path: Path) -> None:
    out = smd(tmp_path, "plan", KINDS, "--format", "json", "--env", "Development")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["environment"] == "development"
    assert doc["order"] == ["first", "second", "work"]
    assert doc["waves"] == [["first"], ["second"], ["work"]]
    work = doc["phases"][2]
    assert work["timeout"]["source"] == "fixed"
    assert set(work["bypass"]) == {
        "infrastructure",
        "timeout",
        "configuration",
        "application",
        "unknown",
    }


def test_plan_writes_no_history(tmp_path: Path) -> None:
    assert smd(tmp_path, "plan", KINDS).returncode == 0
    assert not (tmp_path / "history.sqlite3").exists()


@pytest.mark.parametrize(
    ("kind", "code", "state"),
    [
        ("ok", 0, "ready"),
        ("bypass", 0, "degraded"),
        ("application", 70, "failed"),
        ("infrastructure", 75, "failed"),
        ("timeout", 75, "failed"),
        ("configuration", 78, "failed"),
        ("unknown", 69, "failed"),
    ],
)
def test_run_exit_code_follows_the_outcome(
    tmp_path: Path, kind: str, code: int, state: str
) -> None:
    report = tmp_path / "report.json"
    out = smd(
        tmp_path, "run", KINDS, "--report", str(report), SMD_TEST_KIND=kind, SMD_TEST_TIMEOUT="0.5"
    )
    assert out.returncode == code, out.stderr
    doc = json.loads(report.read_text())
    assert doc["version"] == 1
    assert doc["state"] == state
    assert doc["exit_code"] == code
    assert [p["name"] for p in doc["phases"]] == ["first", "second", "work"]
    if state == "failed":
        assert "STARTUP FAILED" in out.stderr
        assert doc["phases"][2]["failure"]["kind"] == kind
        assert doc["phases"][2]["decision"]["action"] == "fail"
        # rolled back: both completed phases torn down, in reverse order
        assert marks(tmp_path)[-2:] == ["teardown second", "teardown first"]
    assert "Traceback" not in out.stderr


def test_run_writes_a_chrome_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    out = smd(tmp_path, "run", KINDS, "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    doc = json.loads(trace.read_text())
    spans = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    assert [e["name"] for e in spans] == ["first", "second", "work"]
    assert all(e["dur"] >= 0 and "ts" in e for e in spans)


def test_run_exec_replaces_the_process(tmp_path: Path) -> None:
    code = "import os; print(os.getpid()); print(os.environ['SMD_STARTUP_STATE'])"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smd", "run", KINDS, "--", sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    pid, state = stdout.split()
    assert int(pid) == proc.pid
    assert state == "ready"


def test_failed_run_does_not_exec(tmp_path: Path) -> None:
    out = smd(
        tmp_path,
        "run",
        KINDS,
        "--",
        sys.executable,
        "-c",
        "print('server started')",
        SMD_TEST_KIND="configuration",
    )
    assert out.returncode == 78
    assert "server started" not in out.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["plan", "tests/targets/nope.py:startup"], {}, 64, "not found"),
        (["plan", "tests.targets.nope:startup"], {}, 64, "no module named"),
        (["plan", "tests/targets/kinds.py:missing"], {}, 64, "no attribute 'missing'"),
        (["plan", "tests/targets/kinds.py:not_a_startup"], {}, 64, "not a smd.Startup"),
        (["plan", "tests/targets/broken_import.py:startup"], {}, 64, "broken on purpose"),
        (["plan", "no-colon"], {}, 64, "invalid TARGET"),
        (["plan", "tests/targets/bad_plan.py:startup"], {}, 78, "cycle: a -> b -> a"),
        (["plan", KINDS, "--env", "prod"], {}, 78, "accepted: development, staging"),
        (["plan", KINDS], {"SMD_STARTUP_BUDGET": "nan"}, 78, "SMD_STARTUP_BUDGET"),
        (["frobnicate"], {}, 64, "invalid choice"),
        (["run", KINDS, "--", "no-such-command-xyz"], {}, 64, "command not found"),
    ],
)
def test_bad_input_gets_one_line_and_the_documented_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, needle: str
) -> None:
    out = smd(tmp_path, *args, **env)
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "history.sqlite3").exists()
    assert marks(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = smd(tmp_path, "--debug", "plan", "tests/targets/broken_import.py:startup")
    assert out.returncode == 64
    assert "Traceback" in out.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_startup_tears_down_and_exits(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smd", "run", KINDS, "--report", str(report)],
        cwd=ROOT,
        env=_env(tmp_path, SMD_TEST_KIND="hang"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while "waiting" not in marks(tmp_path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the hanging phase never started"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert marks(tmp_path)[-2:] == ["teardown second", "teardown first"]
    doc = json.loads(report.read_text())
    assert doc["state"] == "failed"
    assert doc["interrupted"] == ("sigterm" if sig == signal.SIGTERM else "sigint")
    assert doc["phases"][2]["outcome"] == "cancelled"
    assert "Traceback" not in stderr


@pytest.fixture
def listener() -> Iterator[tuple[int, list[int]]]:
    """A TCP listener that counts the connections it accepts (and never answers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    accepted: list[int] = []
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conns.append(conn)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield sock.getsockname()[1], accepted
    stop.set()
    t.join()
    for c in conns:
        c.close()
    sock.close()


def test_plan_of_the_quickstart_does_no_network_io(
    tmp_path: Path, listener: tuple[int, list[int]]
) -> None:
    port, accepted = listener
    dsn = f"postgresql://app:hunter2-secret@127.0.0.1:{port}/app"
    out = smd(
        tmp_path,
        "plan",
        "examples/quickstart.py:startup",
        "--format",
        "json",
        SMD_DATABASE_URL=dsn,
        QUICKSTART_CACHE_ADDR=f"127.0.0.1:{port}",
    )
    assert out.returncode == 0, out.stderr
    assert accepted == []
    assert "hunter2-secret" not in out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["waves"] == [["config"], ["database"], ["cache", "worker"]]


def test_a_long_wait_is_visible_at_a_steady_interval(tmp_path: Path) -> None:
    out = smd(
        tmp_path,
        "run",
        KINDS,
        SMD_TEST_KIND="timeout",
        SMD_TEST_TIMEOUT="1.2",
        SMD_PROGRESS_INTERVAL="0.25",
    )
    assert out.returncode == 75, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    waiting = [e for e in events if e["event"] == "smd.phase.waiting"]
    assert waiting, out.stderr
    for e in waiting:
        assert e["phase"] == "work"
        assert e["deadline"] == pytest.approx(1.2, abs=0.01)
        assert 0 < e["waited"] <= e["deadline"]
        assert e["left"] >= 0
    assert [e["waited"] for e in waiting] == sorted(e["waited"] for e in waiting)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("environment", "cache_up", "code", "state"),
    [
        ("development", False, 0, "degraded"),
        ("development", True, 0, "ready"),
        ("production", False, 75, "failed"),
    ],
)
def test_the_quickstart_runs_against_a_real_database(
    tmp_path: Path,
    pg_dsn: str,
    listener: tuple[int, list[int]],
    environment: str,
    cache_up: bool,
    code: int,
    state: str,
) -> None:
    port, _ = listener
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the cache is down
    report = tmp_path / "report.json"
    out = smd(
        tmp_path,
        "run",
        "examples/quickstart.py:startup",
        "--report",
        str(report),
        SMD_ENVIRONMENT=environment,
        SMD_DATABASE_URL=pg_dsn,
        QUICKSTART_CACHE_ADDR=f"127.0.0.1:{port if cache_up else closed_port}",
    )
    assert out.returncode == code, out.stderr
    doc = json.loads(report.read_text())
    assert doc["state"] == state
    assert doc["plan"]["waves"] == [["config"], ["database"], ["cache", "worker"]]
    phases = {p["name"]: p for p in doc["phases"]}
    assert phases["database"]["outcome"] == "ok"
    assert phases["database"]["timeout"]["source"] == "default"  # a first start
    if cache_up:
        assert phases["cache"]["outcome"] == "ok"
    else:
        assert phases["cache"]["failure"]["kind"] == "infrastructure"
        decision = phases["cache"]["decision"]
        assert decision["action"] == ("continue" if environment == "development" else "fail")
        assert decision["mode"] == ("permissive" if environment == "development" else "strict")
    password = pg_dsn.split("@", 1)[0].rsplit(":", 1)[1]
    assert password not in out.stdout + out.stderr + report.read_text()
