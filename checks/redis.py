"""The Redis check: ``PING`` answers ``+PONG``, after ``AUTH`` and ``SELECT`` from the URL.

A few lines of RESP on anyio (no client library): connect (TLS for
``rediss://``), ``AUTH [user] password`` when the URL has a password,
``SELECT db`` when it names a database other than 0, then ``PING``. An error
reply is classified by its prefix, which becomes the failure's ``code``:

- ``LOADING`` (loading the dataset), ``MASTERDOWN`` (a replica without its
  master), ``BUSY`` (a script running), ``TRYAGAIN``, ``CLUSTERDOWN``, ``ERR max
  number of clients reached``, and a refused or reset connection:
  infrastructure (may heal by waiting);
- ``NOAUTH`` (a password is required), ``WRONGPASS`` / ``ERR invalid
  password`` (wrong credentials), ``ERR ... called without any password
  configured``, ``NOPERM`` (the ACL user may not run the command), ``DENIED``
  (protected mode), ``ERR DB index is out of range``, an answer that is not
  RESP, and TLS errors: configuration;
- anything else: unknown; no answer within the attempt: timeout.

The password is registered as a secret and never shown. The module's
:data:`plugin` contributes ``smd check redis URL``.
"""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import ByteStream

from smd import Failure, FailureKind
from smd.checks._accepted import REDIS_ACCEPTED as _ACCEPTED
from smd.checks._net import (
    Answer,
    Progress,
    attempt,
    connect,
    format_host,
    misplaced_userinfo,
    split_host_port,
)
from smd.retry import ProbeResult
from smd.secrets import register_secret

__all__ = ["RedisCheck", "RedisError", "classify_error"]

_DEFAULT_PORT = 6379
_MAX_LINE = 64 * 1024
_INFRA = FailureKind.INFRASTRUCTURE
_CONFIG = FailureKind.CONFIGURATION

# Error prefix -> (kind, what it means to someone waiting for Redis).
_PREFIXES: dict[str, tuple[FailureKind, str]] = {
    "LOADING": (_INFRA, "the server is loading its dataset into memory"),
    "MASTERDOWN": (_INFRA, "the replica lost its master and does not serve stale data"),
    "BUSY": (_INFRA, "the server is busy running a script or function"),
    "TRYAGAIN": (_INFRA, "the cluster asked to try again (resharding)"),
    "CLUSTERDOWN": (_INFRA, "the cluster is down"),
    "NOAUTH": (_CONFIG, "the server requires a password and the URL gives none"),
    "WRONGPASS": (_CONFIG, "the user name or password was rejected"),
    "NOPERM": (_CONFIG, "the user's ACL does not allow this command"),
    "DENIED": (_CONFIG, "the server refuses this client (protected mode)"),
}
# ERR replies, recognised by their text (lower case) -> (kind, meaning).
_ERR_TEXTS: tuple[tuple[str, FailureKind, str], ...] = (
    ("max number of clients reached", _INFRA, "the server has no connection slot left"),
    ("invalid password", _CONFIG, "the password was rejected"),
    ("invalid username-password", _CONFIG, "the user name or password was rejected"),
    ("without any password configured", _CONFIG, "a password was given but the server has none"),
    ("db index is out of range", _CONFIG, "the database number is out of range"),
    ("invalid db index", _CONFIG, "the database number is out of range"),
    ("unknown command", _CONFIG, "the server does not know the command (renamed? not Redis?)"),
)


class RedisError(Exception):
    """An error reply (``-PREFIX message``) to one of the check's commands."""

    def __init__(self, command: str, line: str) -> None:
        super().__init__(f"{command}: {line}")
        self.command = command
        self.line = line
        self.prefix = line.split(" ", 1)[0]


def classify_error(error: RedisError, *, target: str) -> Failure:
    """The failure for an error reply; ``code`` is its prefix (``LOADING``, ``ERR``)."""
    prefix = error.prefix
    known = _PREFIXES.get(prefix)
    if known is None and prefix == "ERR":
        lowered = error.line.lower()
        known = next(((k, m) for text, k, m in _ERR_TEXTS if text in lowered), None)
    kind, meaning = known or (FailureKind.UNKNOWN, "unexpected error reply")
    return Failure(
        kind,
        f"{meaning} ({target}) [{prefix}]: {error.command} answered {error.line}",
        cause=error,
        code=prefix,
        details={"prefix": prefix, "command": error.command},
    )


def _parse_url(url: str) -> tuple[bool, str, int, int, str | None, str | None]:
    """(tls, host, port, db, user, password); ``ValueError`` never echoes a password."""
    text = url.strip()
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise ValueError(f"not a URL (no scheme); accepted: {_ACCEPTED}")
    if scheme.lower() not in ("redis", "rediss"):
        raise ValueError(f"unsupported scheme {scheme!r}; accepted: {_ACCEPTED}")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError(f"the URL contains spaces or control characters; accepted: {_ACCEPTED}")
    parts = urlsplit(text)
    if "@" in text and "@" not in parts.netloc:
        raise misplaced_userinfo(_ACCEPTED)
    if parts.query or parts.fragment:
        raise ValueError(f"query parameters and fragments are not supported; accepted: {_ACCEPTED}")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, port = split_host_port(
        hostport, default_port=_DEFAULT_PORT, accepted=_ACCEPTED, echo="@" not in text
    )
    db_text = parts.path.strip("/")
    if db_text and not db_text.isdigit():
        raise ValueError(
            f"the path must be the database number (/0, /1, ...); accepted: {_ACCEPTED}"
        )
    user = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        if not colon or not raw_password:
            raise ValueError(
                # Not "password: give ...": redaction masks what follows "password:".
                "a user name without a password (give USER:PASSWORD@ for an ACL user, "
                f":PASSWORD@ for the default user); accepted: {_ACCEPTED}"
            )
        user = unquote(raw_user) or None
        password = unquote(raw_password)
    return scheme.lower() == "rediss", host, port, int(db_text or 0), user, password


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    """Simple-string and error replies, one line each, from a byte stream."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buf = b""

    async def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                return line
            if len(self.buf) > _MAX_LINE or (self.buf and self.buf[:1] not in b"+-:$*_,#!=(%~>|"):
                return self.buf  # not RESP: the caller says so
            try:
                self.buf += await self.stream.receive(65536)
            except anyio.EndOfStream:
                if self.buf:
                    return self.buf
                raise


class RedisCheck:
    """Ready when Redis answers ``PING`` with ``PONG`` (a :class:`smd.retry.Check`).

    ``url`` is ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://``
    for TLS, verified against the system CAs, ``SSL_CERT_FILE`` or the
    ``ssl_context`` given).
    """

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        tls, self.host, self.port, self.db, self.user, password = _parse_url(url)
        register_secret(password)
        self._password = password
        self.ssl_context: ssl.SSLContext | None = None
        if tls:
            self.ssl_context = ssl_context or ssl.create_default_context()

    @classmethod
    def from_target(cls, target: str) -> RedisCheck:
        """The check ``smd check redis URL`` runs; ``ValueError`` names what is wrong."""
        return cls(target)

    @property
    def target(self) -> str:
        """``redis://host:port/db`` (``rediss://`` with TLS), never the user or password."""
        scheme = "rediss" if self.ssl_context is not None else "redis"
        return f"{scheme}://{format_host(self.host)}:{self.port}/{self.db}"

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One conversation (connect, AUTH, SELECT, PING), bounded by ``attempt_seconds``."""

        async def talk(progress: Progress) -> Answer:
            stream = await connect(self.host, self.port, self.ssl_context, progress)
            async with stream:
                reader = _Reader(stream)
                try:
                    if self._password is not None:
                        auth = (self.user, self._password) if self.user else (self._password,)
                        await self._ask(stream, reader, progress, "AUTH", *auth, expect="OK")
                    if self.db:
                        await self._ask(stream, reader, progress, "SELECT", str(self.db))
                    await self._ask(stream, reader, progress, "PING", expect="PONG")
                except RedisError as exc:
                    return Answer(
                        classify_error(exc, target=self.target),
                        summary=exc.line,
                        server_message=exc.line,
                    )
                except _NotRedis as exc:
                    return Answer(exc.failure, summary="not Redis")
            return Answer(summary="PING answered PONG")

        return await attempt(self.target, attempt_seconds, talk)

    async def _ask(
        self,
        stream: ByteStream,
        reader: _Reader,
        progress: Progress,
        *args: str,
        expect: str = "OK",
    ) -> None:
        command = args[0]
        progress.stage = "request"
        await stream.send(_command(*args))
        progress.stage = "reply"
        line = await reader.line()
        text = line.decode("utf-8", "replace")
        if line.startswith(b"-"):
            raise RedisError(command, text[1:])
        if line == f"+{expect}".encode():
            return
        if line[:1] in (b"+", b":", b"$", b"*", b"_", b"%", b">"):
            failure = Failure(
                FailureKind.UNKNOWN,
                f"unexpected answer to {command} ({self.target}): {line[:40]!r}",
                details={"command": command},
            )
        else:
            why = (
                "it speaks TLS: use rediss://"
                if line[:1] in (b"\x15", b"\x16")
                else (f"it answered {line[:24]!r}; check the host and port")
            )
            failure = Failure(
                FailureKind.CONFIGURATION,
                f"not a Redis server ({self.target}): {why}",
                details={"command": command},
            )
        raise _NotRedis(failure)

    def __repr__(self) -> str:
        return f"RedisCheck({self.target!r})"


class _NotRedis(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
