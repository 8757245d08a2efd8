"""structlog set-up: dotted event names, JSON off a terminal, console on one.

The app's stdlib ``logging`` goes through the same pipeline, and every event
passes :func:`smd._redact.redact` so no secret reaches a log.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, Any

import structlog

from smd._redact import redact

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact_rendered(_: Any, __: str, rendered: Any) -> Any:
    """Mask secrets in the finished line: one pass per line, not per field."""
    return redact(rendered) if isinstance(rendered, str) else rendered


class _LockedWriter:
    """One stream shared by structlog and stdlib logging, a line at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self.lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure_logging(
    fmt: str = "auto", level: str = "info", *, stream: IO[str] | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr).

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when the stream is a
    terminal). Calling it again replaces the previous configuration.

    smd's own events use structlog's native (fast) path, filtered by level
    before any processing; the app's stdlib ``logging`` records go through a
    handler that renders them with the same processors, so both come out in
    one format on one stream.
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    numeric = _LEVELS.get(level, logging.INFO)
    writer = _LockedWriter(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
            _redact_rendered,
        ],
        logger_factory=lambda *args: writer,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    # stdlib records are rare (the app's own); they pay for the formatter.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
                _redact_rendered,
            ],
        )
    )
    handler.set_name("smd")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "smd":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str = "smd", **bound: Any) -> Any:
    """A structlog logger bound to ``bound`` key/values (and ``logger=name``)."""
    return structlog.get_logger().bind(logger=name, **bound)
