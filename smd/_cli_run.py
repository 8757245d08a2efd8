"""``smd run``: run the startup as a gate, then ``exec`` the server on ready or degraded."""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
from pathlib import Path

import anyio

from smd._exit import EXIT_CODES
from smd._lifecycle import lifecycle
from smd._report import Report
from smd._scheduler import Mode
from smd._settings import Settings
from smd._signals import Interruption, catch_signals
from smd._startup import Startup
from smd._trace import ReportFile, TraceFile
from smd.events import Observer
from smd.exceptions import StartupFailed, StartupInterrupted, UsageError

__all__ = ["check_output_path", "run_command"]


def check_output_path(option: str, path: str) -> Path:
    """``path`` for ``option`` if a file can be written there, else a :class:`UsageError`."""
    p = Path(path)
    accepted = "accepted: a file path in an existing, writable directory"
    if p.is_dir():
        raise UsageError(f"{option} {path!r} is a directory; {accepted}")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{option} {path!r}: {str(parent)!r} is not a directory; {accepted}")
    if not parent.is_dir():
        raise UsageError(f"{option} {path!r}: directory {str(parent)!r} does not exist; {accepted}")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{option} {path!r} is not writable; {accepted}")
    if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{option} {path!r}: directory {str(parent)!r} is not writable; {accepted}"
        )
    return p


def _same_file(a: Path, b: Path) -> bool:
    """Whether two output paths name one regular file (a link or ``./`` included).

    A device or a pipe is not a file one output would overwrite:
    ``--report /dev/stdout --trace /dev/stderr`` may share a terminal or a pipe.
    """
    if a.exists() and b.exists():
        return a.is_file() and b.is_file() and os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_command(name: str) -> None:
    """A :class:`UsageError` unless ``name`` (CMD's first word) is something exec can run."""
    if shutil.which(name) is not None:
        return
    path = Path(name)
    # A name with a slash is run as that file, never looked up on PATH.
    if os.sep in name or "/" in name:
        accepted = "accepted: an executable file or a command on PATH"
        if path.is_dir():
            raise UsageError(f"command after '--' is a directory: {name!r}; {accepted}")
        if path.is_file():
            raise UsageError(f"command after '--' is not executable: {name!r}; {accepted}")
        raise UsageError(f"command after '--' does not exist: {name!r}; {accepted}")
    raise UsageError(f"command not found after '--': {name!r} (not on PATH)")


async def _run(
    startup: Startup, settings: Settings, mode: Mode, observers: list[Observer]
) -> tuple[Report, str | None]:
    """The report, and the signal that arrived after it (during the gate's teardown)."""
    interruption = Interruption()
    with catch_signals(interruption):
        try:
            async with lifecycle(
                startup,
                settings=settings,
                mode=mode,
                recover=False,
                observers=observers,
                interruption=interruption,
            ) as run:
                assert run.report is not None
                report = run.report
        except (StartupFailed, StartupInterrupted) as exc:
            return exc.report, None
    return report, run.interrupted


def run_command(
    startup: Startup,
    settings: Settings,
    *,
    sequential: bool,
    report_path: str | None,
    trace_path: str | None,
    cmd: list[str],
) -> int:
    """Run ``startup``; on ready/degraded exec ``cmd`` (if given) in this process."""
    if cmd:
        _check_command(cmd[0])
    observers: list[Observer] = []
    report_file = check_output_path("--report", report_path) if report_path else None
    trace_file = check_output_path("--trace", trace_path) if trace_path else None
    if report_file and trace_file and _same_file(report_file, trace_file):
        # The trace would be written over the report (or the other way round).
        raise UsageError(
            f"--report {report_path!r} and --trace {trace_path!r} are the same file; "
            "accepted: two different paths"
        )
    if report_file is not None:
        observers.append(ReportFile(report_file))
    if trace_file is not None:
        observers.append(TraceFile(trace_file))
    mode: Mode = "sequential" if sequential else "concurrent"
    # Everything imported so far (the target, the settings, the plugins) lives
    # as long as the process: freeze it out of the garbage collector's
    # generations. Otherwise the first full collection, triggered by the
    # allocations of the first wave of phases, walks that whole heap and
    # delays the first phase by ~20 ms (benchmarks/engine.py, section d).
    # The process execs CMD or exits afterwards, so nothing outlives the gate.
    gc.freeze()
    report, late_signal = anyio.run(_run, startup, settings, mode, observers)
    print(report.summary(), file=sys.stderr)
    if late_signal is not None:
        # Ready, but told to stop while the gate tore down: do not start the server.
        print(
            f"smd: interrupted by {late_signal.upper()} after startup; not starting CMD",
            file=sys.stderr,
        )
        return EXIT_CODES[late_signal]
    code = report.exit_code()
    if code != 0 or not cmd:
        return code
    env = dict(os.environ)
    env["SMD_STARTUP_STATE"] = report.state.value
    env["SMD_STARTUP_REASONS"] = json.dumps(list(report.reasons))
    if report_path:
        env["SMD_STARTUP_REPORT"] = os.path.abspath(report_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)  # same PID: signals reach the server directly
    return EXIT_CODES["application"]  # not reached: execvpe replaces us or raises
