"""The real ``smd`` command as a subprocess: exit codes, exec, signals, files."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
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
        SMDTEST_MARKS=str(tmp_path / "marks.txt"),
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
    assert "work: 20s, per attempt 5s [fixed] fixed timeout of 20s set on the phase" in out.stdout
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
        tmp_path, "run", KINDS, "--report", str(report), SMDTEST_KIND=kind, SMDTEST_TIMEOUT="0.5"
    )
    assert out.returncode == code, out.stderr
    doc = json.loads(report.read_text())
    assert doc["version"] == 2
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
        SMDTEST_KIND="configuration",
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
        (["run", KINDS, "--env", "prod"], {}, 78, "invalid argument --env (got 'prod')"),
        (["plan", KINDS], {"SMD_STARTUP_BUDGET": "nan"}, 78, "SMD_STARTUP_BUDGET"),
        (["frobnicate"], {}, 64, "invalid choice"),
        (["run", KINDS, "--", "no-such-command-xyz"], {}, 64, "command not found"),
        # Output paths are checked before the first phase: nothing runs, nothing is learned.
        (
            ["run", KINDS, "--report", "/nonexistent/dir/r.json"],
            {},
            64,
            "--report '/nonexistent/dir/r.json': directory '/nonexistent/dir' does not exist",
        ),
        (["run", KINDS, "--trace", "tests"], {}, 64, "--trace 'tests' is a directory"),
        # One file for both would hold the trace alone: the report lost.
        (
            ["run", KINDS, "--report", "tests/../out.json", "--trace", "./out.json"],
            {},
            64,
            "--report 'tests/../out.json' and --trace './out.json' are the same file; "
            "accepted: two different paths",
        ),
        (
            ["run", KINDS, "--trace", "README.md/trace.json"],
            {},
            64,
            "--trace 'README.md/trace.json': 'README.md' is not a directory",
        ),
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


def test_report_and_trace_may_share_a_pipe(tmp_path: Path) -> None:
    # One pipe behind stdout and stderr is not one file written twice over.
    out = subprocess.run(
        [sys.executable, "-m", "smd", "run", KINDS, "--report", "/dev/stdout",
         "--trace", "/dev/stderr"],
        cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout
    assert '"traceEvents"' in out.stdout
    assert '"exit_code"' in out.stdout or '"state"' in out.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="a bind mount needs root"
)
def test_a_report_on_a_bind_mounted_file_is_written_in_place(tmp_path: Path) -> None:
    # Kubernetes' /dev/termination-log is such a file: it cannot be replaced
    # (rename onto a mount point is EBUSY), only written.
    source, mounted = tmp_path / "source.json", tmp_path / "termination-log"
    source.write_text("old\n")
    mounted.touch()
    script = (
        f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(mounted))} && exec "
        + shlex.join([sys.executable, "-m", "smd", "run", KINDS, "--report", str(mounted)])
    )
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "smd.observer.failed" not in out.stderr
    assert json.loads(source.read_text())["state"] == "ready"


def test_a_report_that_cannot_be_written_is_one_warning_naming_it(tmp_path: Path) -> None:
    # /dev/full answers every write with ENOSPC (a full disk). Observers never
    # stop a startup: the run is ready, and the warning says which file failed.
    out = smd(tmp_path, "run", KINDS, "--report", "/dev/full")
    assert out.returncode == 0, out.stderr
    (warning,) = [line for line in out.stderr.splitlines() if "smd.observer.failed" in line]
    assert "ReportFile('/dev/full')" in warning
    assert "cannot write '/dev/full': No space left on device" in warning


@pytest.mark.parametrize(
    ("body", "code"),
    [("import sys\nsys.exit(3)\n", "3"), ("raise SystemExit('bye')\n", "'bye'")],
)
def test_a_target_that_exits_while_imported_cannot_be_imported(
    tmp_path: Path, body: str, code: str
) -> None:
    (tmp_path / "exits.py").write_text(body)
    by_path = f"{tmp_path / 'exits.py'}:startup"
    for args, target, env in [
        (["plan", by_path], by_path, {}),
        (["run", by_path, "--", sys.executable, "-c", "pass"], by_path, {}),
        (["plan", "exits:startup"], "exits:startup", {"PYTHONPATH": str(tmp_path)}),
    ]:
        out = smd(tmp_path, *args, **env)
        assert out.returncode == 64, (args, out.returncode, out.stderr)
        assert out.stderr.strip().splitlines() == [
            f"smd: cannot import TARGET {target!r}: its import called sys.exit({code})"
        ]
        assert out.stdout == ""
        assert not (tmp_path / "history.sqlite3").exists()


def test_env_argument_is_named_as_the_argument_not_the_variable(tmp_path: Path) -> None:
    """Issue 10 section 5: ``--env prod`` is the argument's mistake, not SMD_ENVIRONMENT's."""
    for command in (["plan", KINDS], ["run", KINDS], ["history"]):
        out = smd(tmp_path, *command, "--env", "prod")
        assert out.returncode == 78, out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert line.startswith("smd: invalid argument --env (got 'prod'): "), line
        assert "accepted: development, staging, production, test" in line
        assert "SMD_ENVIRONMENT" not in line
    # The variable is still named when the variable is wrong.
    out = smd(tmp_path, "plan", KINDS, SMD_ENVIRONMENT="prod")
    assert out.returncode == 78
    assert "SMD_ENVIRONMENT" in out.stderr
    assert "--env" not in out.stderr


def test_run_help_shows_the_command_and_explains_every_option(tmp_path: Path) -> None:
    """Issue 10 section 5: ``smd run --help`` shows ``-- CMD`` and every option has help text."""
    out = smd(tmp_path, "run", "--help")
    assert out.returncode == 0, out.stderr
    usage = out.stdout.split("\n\n", 1)[0]
    assert "TARGET [-- CMD ...]" in usage
    assert "-- CMD" in out.stdout.split("\n\n", 1)[1]  # and it is explained below
    # Every option the parser knows is in the usage and has its help text.
    from smd._cli import _parser

    def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    every = {p.prog: p for p in parsers(_parser())}
    assert {"smd", "smd plan", "smd run", "smd check", "smd check postgres", "smd history"} <= set(
        every
    )
    options = [a for a in every["smd run"]._actions if a.option_strings]
    assert {o for a in options for o in a.option_strings} == {
        "-h",
        "--help",
        "--env",
        "--report",
        "--trace",
        "--sequential",
    }
    text = " ".join(out.stdout.split())
    for action in options:
        assert action.help, f"smd run {action.option_strings} has no help text"
        assert " ".join(action.help.split()) in text, action.option_strings
        if action.option_strings[0] != "-h":
            assert action.option_strings[0] in usage, action.option_strings
    # And every argument of every command (options, TARGET, COMMAND, NAME) has its help.
    for prog, parser in every.items():
        for action in parser._actions:
            assert action.help, f"{prog}: {action.option_strings or action.dest} has no help"


def test_report_and_trace_files_are_owner_only(tmp_path: Path) -> None:
    """They name hosts, ports and databases: 0600 whatever the umask, even over an older file."""
    report, trace = tmp_path / "report.json", tmp_path / "trace.json"
    trace.write_text("old")
    trace.chmod(0o644)
    proc = subprocess.run(
        [
            "sh",
            "-c",
            'umask 000 && exec "$0" -m smd run "$1" --report "$2" --trace "$3"',
            sys.executable,
            KINDS,
            str(report),
            str(trace),
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for path in (report, trace):
        assert path.stat().st_mode & 0o777 == 0o600, (path, oct(path.stat().st_mode))
    assert json.loads(report.read_text())["state"] == "ready"
    assert json.loads(trace.read_text())["traceEvents"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = smd(tmp_path, "--debug", "plan", "tests/targets/broken_import.py:startup")
    assert out.returncode == 64
    assert "Traceback" in out.stderr


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_during_startup_tears_down_and_exits(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smd", "run", KINDS, "--report", str(report)],
        cwd=ROOT,
        env=_env(tmp_path, SMDTEST_KIND="hang"),
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
    assert doc["interrupted"] == sig.name.lower()
    assert doc["exit_code"] == code
    assert doc["phases"][2]["outcome"] == "cancelled"
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_abandons_teardown_but_still_reports(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Issue 11: the second signal skips what is left of teardown; report and summary say so."""
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smd", "run", KINDS, "--report", str(report)],
        cwd=ROOT,
        env=_env(tmp_path, SMDTEST_KIND="hang", SMDTEST_SLOW_TEARDOWN="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait_for(mark: str) -> None:
        deadline = time.monotonic() + 30
        while mark not in marks(tmp_path):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{mark!r} never happened"
            time.sleep(0.02)

    wait_for("waiting")
    proc.send_signal(sig)
    wait_for("slow teardown second")  # the first signal started the teardown
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    # Neither the abandoned teardown nor the one after it ran to its end.
    assert "teardown second" not in marks(tmp_path)
    assert "teardown first" not in marks(tmp_path)
    doc = json.loads(report.read_text())
    assert doc["interrupted"] == sig.name.lower()
    assert doc["teardown_skipped"] == ["second", "first"]
    assert "teardown skipped: second, first" in stderr
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
        SMDTEST_KIND="timeout",
        SMDTEST_TIMEOUT="1.2",
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


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_offers_the_traceback_only_without_debug(
    tmp_path: Path, debug: bool
) -> None:
    """A CMD exec refuses (no #!, not a binary) is an internal error: one line, 70."""
    server = tmp_path / "server"
    server.write_bytes(b"\x00\x01 not a program\n")
    server.chmod(0o755)
    out = smd(tmp_path, *(["--debug"] if debug else []), "run", KINDS, "--", str(server))
    assert out.returncode == 70, out.stderr
    last = out.stderr.splitlines()[-1]
    assert last.startswith("smd: internal error: OSError: "), out.stderr
    assert ("Traceback" in out.stderr) is debug
    assert last.endswith("(run with --debug for the traceback)") is not debug, last
