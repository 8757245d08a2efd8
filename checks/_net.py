"""What the TCP, HTTP and Redis checks share.

Parsing ``host:port``, opening a connection (TLS through anyio's
:class:`~anyio.streams.tls.TLSStream`), running one attempt under its
deadline, and classifying what the network raised -- most specific first:
TLS, name resolution, ``TimeoutError``, refused, reset, then the generic
``OSError`` rule (``ssl.SSLError``, ``socket.gaierror``, ``TimeoutError`` and
``ConnectionError`` are all ``OSError``). A refused or reset connection may
heal by waiting (infrastructure); a certificate or protocol mismatch will
not (configuration).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from smd import Failure, FailureKind
from smd.checks._errnos import NAME_TRANSIENT, NAME_UNKNOWN, NETWORK_ERRNOS
from smd.retry import ProbeResult

__all__ = [
    "STREAM_ERRORS",
    "Answer",
    "Progress",
    "attempt",
    "classify",
    "connect",
    "format_host",
    "misplaced_userinfo",
    "split_host_port",
]

INFRA = FailureKind.INFRASTRUCTURE
CONFIG = FailureKind.CONFIGURATION

# What a peer hanging up, resetting or refusing looks like through anyio.
STREAM_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
)

_EAI_NAMES = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_") and n != "EAI_MAX"}


def split_host_port(
    text: str, *, default_port: int | None, accepted: str, echo: bool = True
) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` (or a bare host when ``default_port`` is given).

    ``ValueError`` names the part that is wrong and what is ``accepted``; it
    quotes the wrong text only with ``echo`` (never where it may be a
    password that broke a URL apart).
    """
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"an IPv6 address needs a closing ']'; accepted: {accepted}")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after the IPv6 address; accepted: {accepted}")
        port_text = rest[1:] if rest else ""
        if ":" not in host:
            raise ValueError(f"the bracketed host is not an IPv6 address; accepted: {accepted}")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError(
            f"write an IPv6 address in brackets, e.g. [::1]:6379; accepted: {accepted}"
        )
    if not host:
        raise ValueError(f"no host given; accepted: {accepted}")
    if any(c.isspace() or c in "/@?#[]" for c in host):
        shown = f" {host!r}" if echo else ""
        raise ValueError(f"invalid host name{shown}; accepted: {accepted}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"no port given; accepted: {accepted}")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        shown = f" {port_text!r}" if echo else ""
        raise ValueError(f"invalid port{shown} (1-65535); accepted: {accepted}")
    return host, int(port_text)


def misplaced_userinfo(accepted: str) -> ValueError:
    """The error for a URL whose password holds an unescaped ``/``, ``?`` or ``#``
    (which ends the host part early, so the parts around it are nonsense)."""
    return ValueError(
        "the user name or password before '@' holds a '/', '?' or '#': percent-encode it "
        f"(%2F, %3F, %23); accepted: {accepted}"
    )


def format_host(host: str) -> str:
    """The host as it appears in a URL or ``host:port`` (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


async def connect(
    host: str, port: int, tls: ssl.SSLContext | None, progress: Progress
) -> anyio.abc.ByteStream:
    """Open a TCP connection, then the TLS session when ``tls`` is given."""
    progress.stage = "connect"
    stream = await anyio.connect_tcp(host, port)
    if tls is None:
        return stream
    progress.stage = "tls"
    try:
        return await TLSStream.wrap(
            stream, server_side=False, hostname=host, ssl_context=tls, standard_compatible=False
        )
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


# How far an attempt got, as its failure says it ("closed during the TLS handshake").
_STAGES = {
    "connect": "while connecting",
    "tls": "during the TLS handshake",
    "request": "while sending the request",
    "reply": "before answering",
    "answer": "in the middle of its answer",
}


@dataclass(slots=True)
class Progress:
    """How far one attempt got: ``connect``, ``tls``, ``request``, ``reply`` or
    ``answer`` (cut short mid-answer); the failure's ``details["stage"]``."""

    stage: str = "connect"

    @property
    def phrase(self) -> str:
        return _STAGES.get(self.stage, f"at {self.stage}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the dependency said in one attempt (``failure`` when it said no)."""

    failure: Failure | None = None
    summary: str = "answered"
    server_message: str | None = None


def _root(exc: BaseException) -> BaseException:
    """The error that says what happened, under anyio's wrappers.

    ``connect_tcp`` raises ``OSError("All connection attempts failed")`` from
    the real error (or from a group, one per address: a refusal is the most
    telling); a broken stream is ``BrokenResourceError`` from the ``OSError``.
    """
    for _ in range(8):
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            errors = list(cause.exceptions)
            refused = [e for e in errors if isinstance(e, ConnectionRefusedError)]
            cause = (refused or errors)[0] if errors else None
        wrapper = isinstance(exc, anyio.BrokenResourceError) or (
            type(exc) in (OSError, anyio.ConnectionFailed)
            and isinstance(exc, OSError)
            and exc.errno is None
        )
        if cause is None or not wrapper:
            return exc
        exc = cause
    return exc


def classify(exc: BaseException, *, target: str, stage: str = "connect") -> Failure:
    """The failure for what the network raised while talking to ``target``.

    ``code`` is the OpenSSL reason for TLS errors (``CERTIFICATE_VERIFY_FAILED``),
    the ``EAI_*`` name for name resolution, the errno name otherwise
    (``ECONNREFUSED``).
    """
    root = _root(exc)
    where = Progress(stage).phrase
    kind: FailureKind
    code: str | None = None
    if isinstance(root, ssl.SSLCertVerificationError):
        kind, code = CONFIG, root.reason or "CERTIFICATE_VERIFY_FAILED"
        why = (root.verify_message or str(root)).rstrip(".")
        message = f"TLS certificate rejected ({target}): {why}; trust its CA or fix the host name"
    elif isinstance(root, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        # The peer hung up or reset mid-handshake (a server restarting): not
        # a protocol mismatch, which OpenSSL reports with a reason of its own.
        kind, code = INFRA, root.reason
        message = f"connection lost during the TLS handshake ({target}): {root}"
    elif isinstance(root, ssl.SSLError):
        kind, code = CONFIG, root.reason
        message = (
            f"TLS misconfiguration ({target}): {root.reason or root}"
            " (is it a TLS port? a client certificate required?)"
        )
    elif isinstance(root, socket.gaierror):
        code = _EAI_NAMES.get(root.errno)
        if root.errno in NAME_UNKNOWN:
            kind, message = CONFIG, f"unknown host name ({target}): {root}"
        elif root.errno in NAME_TRANSIENT:
            kind, message = INFRA, f"name resolution temporarily failed ({target}): {root}"
        else:
            kind, message = FailureKind.UNKNOWN, f"name resolution failed ({target}): {root}"
    elif isinstance(root, TimeoutError):
        kind, message = FailureKind.TIMEOUT, f"no answer {where} ({target}): {root}"
    elif isinstance(root, ConnectionRefusedError):
        kind, code = INFRA, "ECONNREFUSED"
        message = f"connection refused ({target}): nothing is listening yet"
    elif isinstance(root, anyio.EndOfStream | anyio.IncompleteRead):
        kind = INFRA
        message = f"the server closed the connection {where} ({target})"
    elif isinstance(root, anyio.BrokenResourceError):
        kind, message = INFRA, f"connection lost {where} ({target})"
    elif isinstance(root, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        kind, code = INFRA, errno.errorcode.get(root.errno or 0)
        message = f"connection reset {where} ({target}): {root.strerror or root}"
    elif isinstance(root, OSError):
        code = errno.errorcode.get(root.errno or 0)
        text = root.strerror or str(root) or type(root).__name__
        if isinstance(root, ConnectionError) or root.errno in NETWORK_ERRNOS:
            kind, message = INFRA, f"network error {where} ({target}): {text}"
        elif root.errno in (errno.EACCES, errno.EPERM):
            kind, message = CONFIG, f"permission denied opening the connection ({target}): {text}"
        else:
            kind, message = FailureKind.UNKNOWN, f"network error {where} ({target}): {text}"
    else:
        kind = FailureKind.UNKNOWN
        message = f"unexpected {type(root).__name__} {where} ({target}): {root}"
    return Failure(kind, message, cause=exc, code=code, details={"stage": stage})


async def attempt(
    target: str, attempt_seconds: float, talk: Callable[[Progress], Awaitable[Answer]]
) -> ProbeResult:
    """Run ``talk`` (one conversation with the dependency) under ``attempt_seconds``.

    Never raises for a network problem: refusals, resets, TLS errors and the
    attempt's own timeout come back as a classified failure. ``latency`` runs
    from the connect to the last answer.
    """
    start = anyio.current_time()
    if not attempt_seconds > 0:
        late = Failure(FailureKind.TIMEOUT, f"no time left to try {target}")
        return ProbeResult(False, late, start=start, end=start)
    progress = Progress()
    answer: Answer | None = None
    failure: Failure | None = None
    with anyio.move_on_after(attempt_seconds):
        try:
            answer = await talk(progress)
        except STREAM_ERRORS as exc:
            failure = classify(exc, target=target, stage=progress.stage)
    end = anyio.current_time()
    latency = end - start
    if answer is None:
        if failure is None:  # the attempt's deadline came first
            failure = Failure(
                FailureKind.TIMEOUT,
                f"no answer within the attempt timeout of {attempt_seconds:.3g}s "
                f"{progress.phrase} ({target})",
                details={"stage": progress.stage},
            )
        return ProbeResult(False, failure, latency, False, start=start, end=end)
    return ProbeResult(
        answer.failure is None,
        answer.failure,
        latency,
        True,
        server_message=answer.server_message,
        summary=answer.summary,
        start=start,
        end=end,
    )
