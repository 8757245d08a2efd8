"""A tiny fake PostgreSQL server for the rare startup answers a real server won't give on cue.

`FakePostgres` reads the startup packet like a server does (answering an
SSLRequest or GSSENCRequest with ``N``, then reading the StartupMessage) and
replies with an ErrorResponse carrying a chosen SQLSTATE and message (57P01,
08P01, XX000, 57P03 "the database system is starting up", ...), or with bytes
that are not PostgreSQL at all (an HTTP reply), then closes.

It runs on its own event loop in a background thread (`BackgroundServer`), so
it serves sync tests, async tests and subprocesses alike::

    with FakePostgres.error("57P01", "terminating connection due to administrator command") as fake:
        dsn = fake.dsn()
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = [
    "HTTP_REPLY",
    "STREAM_ERRORS",
    "BackgroundServer",
    "FakePgFactory",
    "FakePostgres",
    "Garbage",
    "PgError",
    "Reply",
    "answer",
    "error_response",
    "read_startup",
]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_PROTOCOL_3 = 196608
_MAX_STARTUP = 10_000

HTTP_REPLY = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Request"
)

# What a peer hanging up or resetting looks like through anyio.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class PgError:
    """Answer the startup packet with an ErrorResponse (severity FATAL)."""

    sqlstate: str
    message: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Garbage:
    """Answer with bytes that are not the PostgreSQL protocol.

    With ``after_startup=False`` the bytes are sent as soon as the client says
    anything (so an SSLRequest gets them instead of ``S``/``N``), which is what
    a client meets when the DSN points at, say, an HTTP server.
    """

    payload: bytes = HTTP_REPLY
    after_startup: bool = False


Reply = PgError | Garbage


class FakePgFactory(Protocol):
    """The ``fake_pg`` fixture: start a fake server with a reply."""

    def __call__(
        self, reply: Reply | str, message: str = "", detail: str | None = None
    ) -> FakePostgres: ...


def error_response(
    sqlstate: str, message: str, detail: str | None = None, *, severity: str = "FATAL"
) -> bytes:
    """Encode a protocol-3 ErrorResponse message."""
    fields = [(b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message)]
    if detail is not None:
        fields.append((b"D", detail))
    body = b"".join(code + value.encode() + b"\0" for code, value in fields) + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def read_startup(
    stream: anyio.abc.ByteStream, reader: BufferedByteReceiveStream | None = None
) -> dict[str, str] | None:
    """Read the client's startup packet the way a server does.

    SSLRequest and GSSENCRequest are declined with ``N`` and the next packet is
    read. Returns the StartupMessage parameters, or None for a CancelRequest or
    an unknown protocol.
    """
    reader = reader or BufferedByteReceiveStream(stream)
    while True:
        (length,) = struct.unpack("!i", await reader.receive_exactly(4))
        if not 8 <= length <= _MAX_STARTUP:
            return None
        payload = await reader.receive_exactly(length - 4)
        (code,) = struct.unpack("!i", payload[:4])
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            await stream.send(b"N")
            continue
        if code != _PROTOCOL_3:
            return None
        parts = payload[4:].split(b"\0")
        return {
            parts[i].decode(errors="replace"): parts[i + 1].decode(errors="replace")
            for i in range(0, len(parts) - 1, 2)
            if parts[i]
        }


class BackgroundServer:
    """A TCP server on 127.0.0.1 running on its own anyio event loop in a thread.

    Subclasses implement `handle`. Use as a context manager (or `start` /
    `close`); `port` is known once started. Handler errors never stop the
    server; unexpected ones are kept in `errors` for the test to inspect.
    """

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._main: Future[None] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None
        self._listen_scope: anyio.CancelScope | None = None
        self._listen_closed: anyio.Event | None = None

    # -- sync API ---------------------------------------------------------------------

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the event loop thread and begin listening."""
        self._portal_cm = start_blocking_portal("asyncio", name=type(self).__name__)
        self._portal = self._portal_cm.__enter__()
        try:
            self._main, self.port = self._portal.start_task(self._run)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None
            raise

    def close(self) -> None:
        """Stop listening, drop every connection and join the thread."""
        if self._portal is None or self._portal_cm is None:
            return
        try:
            if self._main is not None and not self._main.done():
                self._portal.call(self._request_stop)
                self._main.result(timeout=10)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None

    def call(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``func(*args)`` on the server's loop and wait for its result."""
        if self._portal is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._portal.call(func, *args)

    # -- loop side --------------------------------------------------------------------

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        """Serve one accepted connection (the stream is closed afterwards)."""
        raise NotImplementedError

    async def _run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self._listen(0)
            task_status.started(self.port)
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _request_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    async def _listen(self, port: int) -> None:
        """Open the listener (on ``port``, 0 = any) and start accepting."""
        assert self._tg is not None
        multi = await anyio.create_tcp_listener(local_host=self.host, local_port=port)
        # A literal IPv4 host gives exactly one socket.
        (listener,) = multi.listeners
        assert isinstance(listener, anyio.abc.SocketListener)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._listen_scope = anyio.CancelScope()
        self._listen_closed = anyio.Event()
        self._tg.start_soon(self._accept_loop, listener, self._listen_scope, self._listen_closed)

    async def _unlisten(self) -> None:
        """Close the listener so that new connects are refused; connections stay."""
        if self._listen_scope is not None and self._listen_closed is not None:
            self._listen_scope.cancel()
            self._listen_scope = None
            # Report back only once the socket is really closed.
            await self._listen_closed.wait()

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, scope: anyio.CancelScope, closed: anyio.Event
    ) -> None:
        assert self._tg is not None
        try:
            with scope:
                async with listener:
                    while True:
                        stream = await listener.accept()
                        with self._lock:
                            self.accepted += 1
                        self._tg.start_soon(self._serve_one, stream)
        finally:
            closed.set()

    async def _serve_one(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await self.handle(stream)
            except STREAM_ERRORS:
                pass
            except Exception as exc:  # keep serving; the test can look at .errors
                self.errors.append(exc)


class FakePostgres(BackgroundServer):
    """Answers every connection's startup packet with one chosen `Reply`, then closes."""

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply: Reply = reply
        # Startup parameters (user, database, ...) of each client, in order.
        self.startups: list[dict[str, str]] = []

    @classmethod
    def error(cls, sqlstate: str, message: str, detail: str | None = None) -> FakePostgres:
        """A fake server answering with ErrorResponse ``sqlstate``/``message``."""
        return cls(PgError(sqlstate, message, detail))

    @classmethod
    def garbage(cls, payload: bytes = HTTP_REPLY, *, after_startup: bool = False) -> FakePostgres:
        """A fake server that is not PostgreSQL (by default it answers like HTTP)."""
        return cls(Garbage(payload, after_startup))

    def __enter__(self) -> FakePostgres:
        self.start()
        return self

    def dsn(self, user: str = "smd", password: str = "fake-password", database: str = "smd") -> str:
        """A DSN pointing at this fake server."""
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        await answer(stream, self.reply, self.startups)


async def answer(
    stream: anyio.abc.SocketStream, reply: Reply, startups: list[dict[str, str]] | None = None
) -> None:
    """Speak just enough protocol to deliver ``reply`` on ``stream``."""
    if isinstance(reply, Garbage) and not reply.after_startup:
        await stream.receive()
        await stream.send(reply.payload)
        return
    params = await read_startup(stream)
    if params is None:
        return
    if startups is not None:
        startups.append(params)
    if isinstance(reply, Garbage):
        await stream.send(reply.payload)
    else:
        await stream.send(error_response(reply.sqlstate, reply.message, reply.detail))
