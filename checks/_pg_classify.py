"""Classify what asyncpg (or the OS) raised into smd's failure kinds.

Most specific first: SQLSTATEs the server sent, then asyncpg's client-side
errors, then TLS, then ``TimeoutError``, ``socket.gaierror`` and
``ConnectionError`` -- which are all ``OSError``, so the generic ``OSError``
rule comes last. The server's own words (message, detail, hint) are kept;
any password is scrubbed from every text that leaves this module.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterable

from smd import Failure, FailureKind
from smd.checks._errnos import NAME_TRANSIENT, NAME_UNKNOWN, UNIX_SOCKET_ERRNOS
from smd.checks._pg_options import PostgresConfigError, scrub

__all__ = ["RedactedError", "classify", "server_answered"]

_INFRA = FailureKind.INFRASTRUCTURE
_CONFIG = FailureKind.CONFIGURATION

# SQLSTATE -> (kind, what it means to someone waiting for the database).
_SQLSTATES: dict[str, tuple[FailureKind, str]] = {
    "57P03": (_INFRA, "the server is not accepting connections yet (starting up or in recovery)"),
    "53300": (_INFRA, "too many connections"),
    "53000": (_INFRA, "insufficient resources on the server"),
    "53200": (_INFRA, "the server is out of memory"),
    "57P01": (_INFRA, "the server is shutting down (admin shutdown)"),
    "57P02": (_INFRA, "the server crashed and is restarting (crash shutdown)"),
    "08006": (_INFRA, "connection failure"),
    "08001": (_INFRA, "the client could not establish a connection"),
    "08004": (_INFRA, "the server rejected the connection"),
    "28P01": (_CONFIG, "wrong password"),
    "28000": (_CONFIG, "the server's pg_hba.conf or the role does not allow this login"),
    "3D000": (_CONFIG, "the database does not exist"),
    "42501": (_CONFIG, "permission denied"),
    "57P04": (_CONFIG, "the database was dropped"),
    "08P01": (_CONFIG, "protocol violation: the server does not speak this PostgreSQL protocol"),
    "0A000": (_CONFIG, "a feature the connection needs is not supported by the server"),
    "42601": (_CONFIG, "syntax error in the readiness query"),
    "42704": (_CONFIG, "an unknown object or setting was named (check server_settings)"),
    "22023": (_CONFIG, "invalid parameter value (check server_settings)"),
}
# Whole SQLSTATE classes that cannot be read any other way.
_CLASSES: dict[str, tuple[FailureKind, str]] = {
    "28": (_CONFIG, "invalid authorization"),
    "3D": (_CONFIG, "invalid catalog name"),
    "53": (_INFRA, "insufficient resources on the server"),
    "08": (_INFRA, "connection exception"),
}

_HOT_STANDBY_OFF = "hot standby mode is disabled"


class RedactedError(Exception):
    """Stands in for an exception whose text contained a secret.

    The original is dropped (not chained) so that no traceback, log
    renderer or report can reach the secret through ``__cause__``.
    """


def _where(target: str) -> str:
    return f" ({target})" if target else ""


def _server_text(exc: BaseException) -> str:
    parts = [str(exc.args[0]) if exc.args else str(exc)]
    for attr in ("detail", "hint"):
        value = getattr(exc, attr, None)
        if value:
            parts.append(f"{attr.upper()}: {value}")
    return "; ".join(p for p in parts if p)


def server_answered(exc: BaseException) -> bool:
    """True when the server itself sent this error (its latency is real data).

    asyncpg raises some client-side errors as ``PostgresError`` subclasses
    with a SQLSTATE (``ConnectionDoesNotExistError`` is 08003 when the socket
    died); only errors that carry the server's severity field were spoken by
    the server.
    """
    try:
        from asyncpg.exceptions import PostgresError
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(exc, PostgresError) and bool(
        getattr(exc, "severity", None) or getattr(exc, "severity_en", None)
    )


def _classify_postgres(exc: BaseException, target: str) -> tuple[FailureKind, str, str | None]:
    sqlstate = getattr(exc, "sqlstate", None)
    text = _server_text(exc)
    if not server_answered(exc):
        # Client-side PostgresError subclasses: the connection died under us.
        # asyncpg's synthetic SQLSTATE (08003) is not the server's; drop it.
        return _INFRA, f"connection lost{_where(target)}: {text}", None
    if sqlstate == "57P03" and _HOT_STANDBY_OFF in text.lower():
        # "Hot standby mode is disabled" does not clear with time: the server
        # is a standby that refuses every connection until it is promoted (or
        # restarted with hot_standby=on). We still call it infrastructure and
        # keep retrying because the one event that cures it -- a failover
        # promoting this standby -- is exactly what a service starting during
        # a failover waits for, and a bypassed phase's recovery probe must
        # notice the promotion. Calling it configuration would turn every
        # failover into a hard, non-retried startup failure. The message says
        # plainly that time alone will not fix it.
        return (
            _INFRA,
            f"the server is a standby with hot standby disabled{_where(target)}: it will not "
            "accept connections until it is promoted or hot_standby is turned on; waiting "
            f"helps only if a failover is under way (server said: {text})",
            sqlstate,
        )
    known = _SQLSTATES.get(sqlstate or "") or _CLASSES.get((sqlstate or "")[:2])
    if known is not None:
        kind, meaning = known
        return kind, f"{meaning}{_where(target)} [{sqlstate}]: {text}", sqlstate
    return (
        FailureKind.UNKNOWN,
        f"unexpected server error{_where(target)} [{sqlstate or 'no SQLSTATE'}]: {text}",
        sqlstate,
    )


def _classify_os(exc: OSError, target: str) -> tuple[FailureKind, str]:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        if exc.errno in NAME_UNKNOWN:
            return _CONFIG, f"unknown host name{_where(target)}: {text}"
        if exc.errno in NAME_TRANSIENT:
            return _INFRA, f"name resolution temporarily failed{_where(target)}: {text}"
        return FailureKind.UNKNOWN, f"name resolution failed{_where(target)}: {text}"
    if isinstance(exc, ssl.SSLError):
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return _INFRA, f"connection closed during the TLS handshake{_where(target)}: {text}"
        return _CONFIG, f"TLS misconfiguration{_where(target)}: {text}"
    if isinstance(exc, ConnectionRefusedError):
        return _INFRA, f"connection refused{_where(target)}: nothing is listening yet ({text})"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return _INFRA, f"connection reset{_where(target)}: {text}"
    if isinstance(exc, ConnectionError):
        lowered = text.lower()
        if "rejected ssl upgrade" in lowered:
            # asyncpg asked for TLS; a PostgreSQL server answers 'S' or 'N'.
            # 'N' with sslmode=require, or anything else at all, will not
            # change by waiting: TLS is required but not offered, or this
            # is not a PostgreSQL server.
            return (
                _CONFIG,
                f"TLS required but not offered, or not a PostgreSQL server{_where(target)}: {text}",
            )
        if "during ssl exchange" in lowered:
            # The postmaster writes a pre-TLS error only when it cannot even
            # fork a backend (resource exhaustion): transient.
            return _INFRA, f"the server refused the TLS request{_where(target)}: {text}"
        return _INFRA, f"connection lost{_where(target)}: {text}"
    if exc.errno in UNIX_SOCKET_ERRNOS:
        return _INFRA, f"network error{_where(target)}: {text}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return _CONFIG, f"permission denied opening the connection{_where(target)}: {text}"
    if exc.errno is None and text.startswith("Multiple exceptions"):
        # asyncio's summary when every address of a name failed (e.g. ::1 and
        # 127.0.0.1 both refused).
        return _INFRA, f"could not connect to any address{_where(target)}: {text}"
    return FailureKind.UNKNOWN, f"network error{_where(target)}: {text}"


def _sanitize(
    exc: BaseException, secrets: tuple[str, ...]
) -> tuple[BaseException, tuple[str, ...]]:
    chain = Failure.chain_of(exc)
    clean = tuple(scrub(c, secrets) for c in chain)
    if clean != chain:
        return RedactedError(clean[0]), clean
    return exc, chain


def classify(
    exc: BaseException,
    *,
    target: str = "",
    secrets: Iterable[str] = (),
    attempts: int = 1,
    elapsed: float = 0.0,
) -> Failure:
    """The :class:`smd.Failure` for an exception raised while probing PostgreSQL.

    ``target`` (``postgres://host:port/db``) is named in the message;
    ``secrets`` are masked from the message and the cause chain.
    """
    secrets = tuple(secrets)
    sqlstate: str | None = None
    kind: FailureKind
    from asyncpg import exceptions as pgexc

    if isinstance(exc, PostgresConfigError):
        kind, message = _CONFIG, f"invalid connection settings: {exc}"
    elif isinstance(exc, pgexc.PostgresError):
        kind, message, sqlstate = _classify_postgres(exc, target)
    elif isinstance(exc, pgexc.ClientConfigurationError):
        kind, message = _CONFIG, f"invalid connection settings{_where(target)}: {exc}"
    elif isinstance(exc, pgexc.TargetServerAttributeNotMatched):
        # e.g. target_session_attrs=primary while every host is a standby: a
        # failover cures it.
        kind, message = _INFRA, f"no server matches target_session_attrs{_where(target)}: {exc}"
    elif isinstance(exc, pgexc.ProtocolError):
        kind, message = (
            _CONFIG,
            f"protocol violation: not a PostgreSQL server?{_where(target)}: {exc}",
        )
    elif isinstance(exc, pgexc.InterfaceError):
        kind, message = FailureKind.UNKNOWN, f"client error{_where(target)}: {exc}"
    elif isinstance(exc, TimeoutError):
        kind, message = FailureKind.TIMEOUT, f"no answer before the deadline{_where(target)}"
    elif isinstance(exc, OSError):
        kind, message = _classify_os(exc, target)
    elif isinstance(exc, ValueError):
        # asyncpg validates some arguments with plain ValueError.
        kind, message = _CONFIG, f"invalid connection settings{_where(target)}: {exc}"
    else:
        text = str(exc)
        kind = FailureKind.UNKNOWN
        message = f"unexpected {type(exc).__name__}{_where(target)}" + (f": {text}" if text else "")
    cause, causes = _sanitize(exc, secrets)
    return Failure(
        kind,
        scrub(message, secrets),
        cause=cause,
        attempts=attempts,
        elapsed=elapsed,
        code=sqlstate,
        details={"sqlstate": sqlstate} if sqlstate else {},
        causes=causes,
    )
