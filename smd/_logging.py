"""smd's logging: library manners by default, one pipeline when asked.

**As a library** (:func:`smd.asgi.smd_lifespan`, :func:`smd.lifecycle`,
:func:`smd.run_startup`) smd changes nothing in the host's logging: no
handler on the root logger, no level, no ``logging.logThreads`` /
``logProcesses`` / ``logMultiprocessing``. Its loggers (:func:`get_logger`)
emit where the host's configuration says:

- when structlog is configured (by the app, or by :func:`configure_logging`),
  through structlog, as any structlog logger would;
- otherwise through the stdlib logger of the same name (``smd``,
  ``smd.history``...): one record per event, whose message is
  ``event key=value ...`` and whose ``smd`` attribute holds the event's
  fields as JSON-ready data, so the app's handlers, formatters and levels
  decide what is shown and how.

Every field is redacted on the way (:func:`smd._encode.encode`), whichever
route an event takes.

**When asked** (the CLI for its own process; ``smd_lifespan(...,
configure_logging=True)``), :func:`configure_logging` routes structlog and
stdlib logging to one stream in one format: JSON off a terminal, console on
one; the app's stdlib records, and with ``servers=True`` the server's own
(uvicorn, gunicorn, hypercorn), go through the same processors, and every
line passes :func:`smd._redact.redact`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import IO, Any

import structlog

from smd._encode import encode
from smd._logline import JsonDumps, LockedWriter, UtcStamp, add_pid, redact_rendered
from smd._redact import redact

__all__ = ["SERVER_LOGGERS", "configure_logging", "get_logger", "render_message"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: The loggers of the ASGI servers smd runs under, which keep handlers of
#: their own and do not propagate: with ``configure_logging(servers=True)``
#: their records go through smd's pipeline instead (once each).
SERVER_LOGGERS: tuple[str, ...] = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
    "hypercorn",
    "hypercorn.error",
    "hypercorn.access",
)

# -- library mode: the stdlib route ------------------------------------------------

_BARE = re.compile(r"[^\s\"'=\\]+")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def render_message(event: str, fields: Mapping[str, Any]) -> str:
    """The text of a stdlib record for an smd event: ``event key=value ...``.

    Strings without spaces or quotes are written bare, anything else as JSON,
    so the line stays one line and parses back (logfmt style).
    """
    if not fields:
        return event
    return event + " " + " ".join(f"{key}={_value(value)}" for key, value in fields.items())


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info(value: Any) -> _ExcInfo | None:
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and value[0] is not None:
        return value
    if value:
        current = sys.exc_info()
        return None if current[0] is None else current
    return None


# Frames from the caller of an smd logger method to ``Logger.findCaller``:
# _SmdLogger.<method> -> _StdlibLogger.<method> -> _StdlibLogger._emit.
_STACKLEVEL = 4


class _StdlibLogger:
    """A structlog-shaped logger that emits one stdlib record per event."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: Mapping[str, Any]) -> None:
        self._logger = logger
        self._context = dict(context)

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def _emit(self, level: int, event: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        exc_info = _exc_info(kw.pop("exc_info", None))
        stack_info = bool(kw.pop("stack_info", False))
        text = str(event) % args if args else str(event)
        fields = {**structlog.contextvars.get_contextvars(), **self._context, **kw}
        data: dict[str, Any] = encode(fields)
        name = redact(text)
        path, line, func, stack = logger.findCaller(stack_info, _STACKLEVEL)
        record = logger.makeRecord(
            logger.name,
            level,
            path,
            line,
            render_message(name, data),
            (),
            exc_info,
            func,
            {"smd": {"event": name, **data}},
            None if stack is None else redact(stack),
        )
        if exc_info is not None:
            # Rendered here, redacted: the host's formatter uses this text
            # (a traceback quotes messages, and messages quote DSNs).
            record.exc_text = redact("".join(traceback.format_exception(*exc_info)).rstrip("\n"))
        logger.handle(record)

    def debug(self, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(logging.DEBUG, event, args, kw)

    def info(self, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(logging.INFO, event, args, kw)

    def warning(self, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(logging.WARNING, event, args, kw)

    def error(self, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(logging.ERROR, event, args, kw)

    def critical(self, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(logging.CRITICAL, event, args, kw)

    def exception(self, event: Any, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self._emit(logging.ERROR, event, args, kw)

    def log(self, level: int, event: Any, *args: Any, **kw: Any) -> None:
        self._emit(level, event, args, kw)

    warn = warning
    fatal = critical
    msg = info


# -- the logger smd's code holds -----------------------------------------------------

_METHODS = ("debug", "info", "warning", "warn", "error", "critical", "fatal", "exception", "msg")


class _SmdLogger:
    """What :func:`get_logger` returns: decides the route when it logs.

    Loggers are made at import time and bound at run creation, before or
    after the host configures anything, so the route (structlog when it is
    configured, else the stdlib logger of the same name) is resolved again
    whenever structlog's configuration changed, and kept otherwise.
    """

    __slots__ = ("_context", "_impl", "_key", "name")

    def __init__(self, name: str, context: Mapping[str, Any]) -> None:
        self.name = name
        self._context = dict(context)
        self._key: tuple[Any, ...] | None = None
        self._impl: Any = None

    def __repr__(self) -> str:
        return f"<smd logger {self.name!r} {self._context!r}>"

    def _resolve(self) -> Any:
        key = (structlog.is_configured(), *structlog.get_config().values())
        # Tuple equality checks identity first: the same configuration
        # objects compare equal without looking inside them.
        if key != self._key:
            if key[0]:
                self._impl = structlog.get_logger(self.name).bind(**self._context)
            else:
                self._impl = _StdlibLogger(logging.getLogger(self.name), self._context)
            self._key = key
        return self._impl

    # structlog's binding API, returning smd loggers (the route stays lazy).
    def bind(self, **values: Any) -> _SmdLogger:
        return _SmdLogger(self.name, {**self._context, **values})

    def new(self, **values: Any) -> _SmdLogger:
        return _SmdLogger(self.name, values)

    def unbind(self, *keys: str) -> _SmdLogger:
        context = dict(self._context)
        for key in keys:
            del context[key]
        return _SmdLogger(self.name, context)

    def try_unbind(self, *keys: str) -> _SmdLogger:
        return _SmdLogger(self.name, {k: v for k, v in self._context.items() if k not in keys})

    def is_enabled_for(self, level: int) -> bool:
        impl = self._resolve()
        enabled = getattr(impl, "is_enabled_for", None)
        return True if enabled is None else bool(enabled(level))

    def debug(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().debug(event, *args, **kw)

    def info(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().info(event, *args, **kw)

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().warning(event, *args, **kw)

    def error(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().error(event, *args, **kw)

    def critical(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().critical(event, *args, **kw)

    def exception(self, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().exception(event, *args, **kw)

    def log(self, level: int, event: Any, *args: Any, **kw: Any) -> Any:
        return self._resolve().log(level, event, *args, **kw)

    warn = warning
    fatal = critical
    msg = info

    def __getattr__(self, name: str) -> Any:
        # Anything else a structlog logger offers (ainfo, ...) on the current route.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._resolve(), name)


def get_logger(name: str = "smd", **bound: Any) -> Any:
    """An smd logger named ``name``, bound to ``bound`` key/values.

    It logs through structlog when structlog is configured (``name`` is
    passed to its logger factory, as ``structlog.get_logger(name)`` does),
    else through ``logging.getLogger(name)``: the host's logging
    configuration decides either way (see the module docstring).
    """
    return _SmdLogger(name, bound)


# -- opting in: one pipeline for the process ----------------------------------------


def _route_servers(names: Iterable[str]) -> None:
    """Send the servers' records to the root logger (smd's handler) instead of theirs."""
    known = logging.Logger.manager.loggerDict
    for name in names:
        logger = known.get(name)
        if not isinstance(logger, logging.Logger):
            continue  # never configured: nothing to re-route
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    *,
    stream: IO[str] | None = None,
    servers: bool = False,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr).

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when the stream is a
    terminal). Calling it again replaces the previous configuration. JSON
    lines carry the process id (``pid``).

    smd's own events use structlog's native (fast) path, filtered by level
    before any processing; stdlib records reach a handler on the root logger
    (named ``smd``; other handlers there are left alone) that renders them
    with the same processors, so both come out in one format on one stream.
    With ``servers``, the loggers of :data:`SERVER_LOGGERS` that exist lose
    their own handlers and propagate to it. The root level is set to
    ``level``; ``logging.logThreads`` / ``logProcesses`` are left as they are
    (a server's format may use ``%(process)d``).
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=JsonDumps(), sort_keys=False)
    )
    pid: list[Any] = [add_pid] if fmt != "console" else []
    numeric = _LEVELS.get(level, logging.INFO)
    writer = LockedWriter(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            UtcStamp(),
            *pid,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
            redact_rendered,
        ],
        logger_factory=lambda *args: writer,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                *pid,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
                redact_rendered,
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
    if servers:
        _route_servers(SERVER_LOGGERS)
