"""The processors that finish each line of smd's own pipeline (:func:`smd._logging.configure_logging`).

The time stamp, the process id, redaction of the rendered line, and the
writer that shares one stream between structlog and stdlib logging. They
run for every line smd writes (two per phase at ``info``), so each does
its work once where it can: the date and time once per second, the pid
once per process.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

from smd._redact import redact

__all__ = ["JsonDumps", "LockedWriter", "UtcStamp", "add_pid", "redact_rendered"]


def redact_rendered(_: Any, __: str, rendered: Any) -> Any:
    """Mask secrets in the finished line: one pass per line, not per field."""
    return redact(rendered) if isinstance(rendered, str) else rendered


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


# A forked worker (gunicorn -w 4) gets its own pid: read it once per process,
# not once per line (a system call on every line smd writes).
os.register_at_fork(after_in_child=_forked)


def add_pid(_: Any, __: str, event_dict: Any) -> Any:
    # Workers of one server (gunicorn -w 4) share a stream: say whose line it is.
    event_dict["pid"] = _pid
    return event_dict


class UtcStamp:
    """``timestamp``: what ``structlog.processors.TimeStamper(fmt="iso", utc=True)``
    writes (``2026-12-01T11:32:05.123456Z``; no fraction on a whole second, as
    ``datetime.isoformat`` does), with the date and time formatted once per
    second instead of once per line (two lines per phase: this is on the
    startup's critical path)."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        # (whole second, its text) in one tuple: threads replace it whole.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, _: Any, __: str, event_dict: Any) -> Any:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        micros = nanos // 1000  # floored, as datetime.now() is
        event_dict["timestamp"] = f"{text}.{micros:06d}Z" if micros else f"{text}Z"
        return event_dict


class JsonDumps:
    """``json.dumps`` for ``structlog.processors.JSONRenderer(serializer=...)``, the same text.

    Given ``default=`` (the renderer always passes its fallback),
    ``json.dumps`` builds a new encoder on every call; this builds it once,
    from the first call's options (one renderer always passes the same ones).
    """

    __slots__ = ("_encoder",)

    def __init__(self) -> None:
        self._encoder: json.JSONEncoder | None = None

    def __call__(self, obj: Any, **options: Any) -> str:
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = json.JSONEncoder(**options)
        return encoder.encode(obj)


class LockedWriter:
    """One stream shared by structlog and stdlib logging, a line at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self.lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg
