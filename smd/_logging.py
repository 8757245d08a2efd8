"""structlog set-up: dotted event names, JSON off a terminal, console on one.

The app's stdlib ``logging`` goes through the same pipeline, and every event
passes :func:`smd._redact.redact` so no secret reaches a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

from smd._redact import redact_value

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _redact_processor(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str | dict | list | tuple):
            event_dict[key] = redact_value(value)
    return event_dict


def configure_logging(
    fmt: str = "auto", level: str = "info", *, stream: IO[str] | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr).

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when the stream is a
    terminal). Calling it again replaces the previous configuration.
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_processor,
                renderer,
            ],
        )
    )
    handler.set_name("smd")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "smd":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))


def get_logger(name: str = "smd", **bound: Any) -> Any:
    """A structlog logger bound to ``bound`` key/values."""
    return structlog.get_logger(name).bind(**bound)
