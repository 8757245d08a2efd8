"""Report and Chrome trace files: observers that write them when a run concludes.

The trace opens in Perfetto / chrome://tracing: one complete (``ph: X``)
span per phase, its attempts nested inside it on the same lane; concurrent
phases get separate lanes so spans nest properly. Both files are written
owner-only (0600): they name hosts, ports and databases.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from smd._encode import encode
from smd._report import Report
from smd.events import Event, StartupFinished

__all__ = ["ReportFile", "TraceFile", "trace_events", "write_private"]


def _us(seconds: float) -> float:
    return round(seconds * 1_000_000, 3)


def trace_events(report: Report) -> dict[str, Any]:
    """The trace document for a report."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"smd {report.startup}"}},
    ]
    lanes: list[float] = []  # end time of the last span on each lane
    spans = sorted(
        (p for p in report.phases if p.start is not None and p.end is not None),
        key=lambda p: (p.start or 0.0, report.plan.order.index(p.name)),
    )
    origin = report.started_at
    for p in spans:
        start, end = p.start or 0.0, p.end or 0.0
        lane = next((i for i, busy in enumerate(lanes) if busy <= start), len(lanes))
        if lane == len(lanes):
            lanes.append(end)
            events.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": 1,
                    "tid": lane + 1,
                    "args": {"name": f"lane {lane + 1}"},
                }
            )
        else:
            lanes[lane] = end
        events.append(
            {
                "name": p.name,
                "cat": "phase",
                "ph": "X",
                "pid": 1,
                "tid": lane + 1,
                "ts": _us(start),
                "dur": _us(end - start),
                "args": encode(
                    {
                        "outcome": p.outcome,
                        "wave": p.wave,
                        "deadline": p.deadline,
                        "deadline_source": p.deadline_source,
                        "failure": p.failure,
                        "decision": p.decision,
                    }
                ),
            }
        )
        for a in p.attempts:
            a_start = max(a.start, start)
            events.append(
                {
                    "name": f"{p.name} attempt {a.number}",
                    "cat": "attempt",
                    "ph": "X",
                    "pid": 1,
                    "tid": lane + 1,
                    "ts": _us(a_start),
                    "dur": _us(max(0.0, a.end - a.start)),
                    "args": encode({"ok": a.ok, **dict(a.detail)}),
                }
            )
    doc = {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "startup": report.startup,
            "state": report.state.value,
            "environment": report.environment,
            "started_at": origin,
        },
    }
    encoded: dict[str, Any] = encode(doc)
    return encoded


def _write_owner_only(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod") and stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
    finally:
        if fd >= 0:
            os.close(fd)


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path``, owner-only (0600) whatever the umask, atomically.

    A regular file (or a new one) gets the text through a temporary file
    beside it that then replaces it: a reader sees the old file or the new
    one, never half of one, and a failed write (a full disk) leaves it as it
    was. A device, a FIFO or a symbolic link is written in place, as asked,
    and so is a file that cannot be replaced (a bind-mounted file such as
    Kubernetes' ``/dev/termination-log``, or one in a directory smd cannot
    add to).
    A failure raises :class:`~smd.exceptions.OutputError` naming the path.
    """
    from smd.exceptions import OutputError

    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if target.is_symlink() or (target.exists() and not target.is_file()):
            _write_owner_only(target, text)
            return
        try:
            _write_owner_only(temporary, text)
        except PermissionError:
            if not target.exists():
                raise
            # A writable file in a directory we cannot add to: in place.
            _write_owner_only(target, text)
            return
        try:
            os.replace(temporary, target)
        except OSError:
            # A file that cannot be replaced, only written: a bind mount such
            # as Kubernetes' /dev/termination-log (EBUSY), another filesystem.
            _write_owner_only(target, text)
    except OSError as exc:
        raise OutputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            if temporary.exists():
                temporary.unlink()


class ReportFile:
    """Observer: writes the JSON report to ``path`` when the run concludes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ReportFile({str(self.path)!r})"

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartupFinished):
            write_private(self.path, event.report.to_json())


class TraceFile:
    """Observer: writes the Chrome trace to ``path`` when the run concludes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TraceFile({str(self.path)!r})"

    def __call__(self, event: Event) -> None:
        if isinstance(event, StartupFinished):
            write_private(self.path, json.dumps(trace_events(event.report), indent=1))
