"""A TCP fault proxy (anyio) between a client and a real PostgreSQL server.

It listens on 127.0.0.1 and forwards to an upstream ``(host, port)``. The mode
can be switched while it runs (from any thread, sync or async tests, or while
a subprocess such as the ``smd`` CLI is connected through it):

- `Forward` — forward bytes, optionally with added latency (fixed seconds or a
  callable drawing from a distribution), before dialing upstream and/or on
  each chunk;
- `Blackhole` — accept, never forward, never answer;
- `Refuse` — close the listener so connects are refused (another mode
  reopens it on the same port);
- `Reset` — accept, then send a TCP RST (SO_LINGER 0 + close);
- `CloseAfter` — forward ``n_bytes`` (both directions together), then close
  (or reset);
- `PgError` — answer the startup packet with a chosen SQLSTATE, like the
  fake server (e.g. 57P03 "the database system is starting up").

Mode changes also act on open connections: blackhole drops their traffic,
reset sends RST on both sides; latency applies to each chunk.
`set_mode_after` schedules a switch (e.g. 57P03 for 3 s, then forward)::

    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        dsn = proxy.dsn(pg_dsn)
        proxy.set_mode("blackhole")
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from .cluster import PgCluster
from .fakepg import STREAM_ERRORS, BackgroundServer, PgError, answer

__all__ = [
    "Blackhole",
    "CloseAfter",
    "FaultProxy",
    "Forward",
    "Latency",
    "Mode",
    "PgError",
    "Refuse",
    "Reset",
    "StartingStandby",
    "replace_host_port",
]

# Seconds, or a callable returning seconds (e.g. ``lambda: rng.expovariate(20)``).
Latency = float | Callable[[], float]


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward traffic, adding ``latency`` before dialing upstream and/or per chunk."""

    latency: Latency = 0.0
    on_connect: bool = True
    per_chunk: bool = True

    def delay(self) -> float:
        """Draw one delay in seconds (never negative)."""
        value = self.latency() if callable(self.latency) else self.latency
        return max(0.0, float(value))


@dataclass(frozen=True, slots=True)
class Blackhole:
    """Accept connections but never forward or answer anything."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Close the listening socket: connects get ECONNREFUSED."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Accept, wait (briefly) for the client's first bytes, then send RST."""


@dataclass(frozen=True, slots=True)
class CloseAfter:
    """Forward ``n_bytes`` in total, then close the client (RST if ``reset``)."""

    n_bytes: int
    reset: bool = False


Mode = Forward | Blackhole | Refuse | Reset | CloseAfter | PgError

_NAMES: dict[str, Callable[..., Mode]] = {
    "forward": Forward,
    "blackhole": Blackhole,
    "refuse": Refuse,
    "reset": Reset,
    "close_after": CloseAfter,
    "error": PgError,
}


def _make_mode(mode: Mode | str, kwargs: dict[str, Any]) -> Mode:
    if isinstance(mode, str):
        try:
            return _NAMES[mode](**kwargs)
        except KeyError:
            raise ValueError(
                f"unknown proxy mode {mode!r}; expected one of {sorted(_NAMES)}"
            ) from None
    if kwargs:
        raise TypeError("keyword arguments are only accepted with a mode name")
    return mode


def replace_host_port(dsn: str, host: str, port: int) -> str:
    """Return ``dsn`` (a ``postgresql://`` URL) pointing at ``host:port`` instead."""
    parts = urlsplit(dsn)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _reset(stream: anyio.abc.SocketStream) -> None:
    """Abort ``stream`` with a TCP RST instead of a FIN."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    # If the peer already closed it, a plain close is all that is left.
    with contextlib.suppress(OSError):
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


class _Conn:
    """Per-connection state shared by the two pump directions."""

    __slots__ = ("budget", "doomed", "reset")

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.reset = False
        self.doomed = False  # reset on its next chunk (reset_open_connections)


class FaultProxy(BackgroundServer):
    """A fault-injecting TCP proxy to ``upstream``, on its own event loop thread."""

    def __init__(
        self, upstream: tuple[str, int], mode: Mode | str = "forward", **kwargs: Any
    ) -> None:
        super().__init__()
        self.upstream = upstream
        self._mode: Mode = _make_mode(mode, kwargs)
        self._open: set[_Conn] = set()  # connections being forwarded (loop side only)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    def dsn(self, dsn: str) -> str:
        """``dsn`` rewritten to go through this proxy."""
        return replace_host_port(dsn, self.host, self.port)

    def set_mode(self, mode: Mode | str, **kwargs: Any) -> None:
        """Switch mode now, e.g. ``set_mode("forward", latency=0.2)`` or ``set_mode(Reset())``."""
        self.call(self._apply, _make_mode(mode, kwargs))

    def reset_open_connections(self) -> int:
        """RST every connection open now on its next chunk; new ones are served as usual.

        A connection the network broke while it was idle: its client learns it
        only when it sends its next statement. Returns how many were doomed.
        """
        return int(self.call(self._doom))

    def set_mode_after(self, seconds: float, mode: Mode | str, **kwargs: Any) -> None:
        """Switch to ``mode`` ``seconds`` from now (on the proxy's own loop)."""
        self.call(self._schedule, seconds, _make_mode(mode, kwargs))

    # -- loop side --------------------------------------------------------------------

    async def _doom(self) -> int:
        for conn in self._open:
            conn.doomed = True
        return len(self._open)

    async def _schedule(self, seconds: float, mode: Mode) -> None:
        assert self._tg is not None

        async def later() -> None:
            await anyio.sleep(seconds)
            try:
                await self._apply(mode)
            except OSError as exc:  # e.g. the port was taken while refusing
                self.errors.append(exc)

        self._tg.start_soon(later)

    async def _apply(self, mode: Mode) -> None:
        listening = self._listen_scope is not None
        self._mode = mode
        if isinstance(mode, Refuse) and listening:
            await self._unlisten()
        elif not isinstance(mode, Refuse) and not listening:
            await self._listen(self.port)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self._listen(0)
            if isinstance(self._mode, Refuse):
                await self._unlisten()
            task_status.started(self.port)
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        mode = self._mode
        if isinstance(mode, Blackhole):
            # Read and discard, so that a client hanging up frees the socket.
            async for _ in stream:
                pass
        elif isinstance(mode, Reset):
            with anyio.move_on_after(1.0):
                await stream.receive()
            await _reset(stream)
        elif isinstance(mode, PgError):
            await answer(stream, mode)
        elif isinstance(mode, Forward | CloseAfter):
            await self._forward(stream, mode)
        # Refuse: a connection that raced the listener closing is just closed.

    async def _forward(self, client: anyio.abc.SocketStream, mode: Forward | CloseAfter) -> None:
        if isinstance(mode, Forward) and mode.on_connect:
            await anyio.sleep(mode.delay())
        try:
            upstream = await anyio.connect_tcp(*self.upstream)
        except OSError:
            await _reset(client)
            return
        conn = _Conn(mode.n_bytes if isinstance(mode, CloseAfter) else None)
        self._open.add(conn)
        try:
            async with upstream:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, client, upstream, conn, tg.cancel_scope)
                    tg.start_soon(self._pump, upstream, client, conn, tg.cancel_scope)
                if conn.reset:
                    await _reset(upstream)
        finally:
            self._open.discard(conn)
        if conn.reset or (isinstance(mode, CloseAfter) and mode.reset):
            await _reset(client)

    async def _pump(
        self,
        src: anyio.abc.SocketStream,
        dst: anyio.abc.SocketStream,
        conn: _Conn,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await src.receive(65536)
                live = self._mode
                if isinstance(live, Blackhole):
                    continue
                if isinstance(live, Reset) or conn.doomed:
                    conn.reset = True
                    return
                if isinstance(live, Forward) and live.per_chunk:
                    await anyio.sleep(live.delay())
                if conn.budget is not None:
                    data = data[: conn.budget]
                    conn.budget -= len(data)
                    if data:
                        await dst.send(data)
                    if conn.budget <= 0:
                        return
                    continue
                await dst.send(data)
        except STREAM_ERRORS:
            pass
        finally:
            # One direction ending ends the connection (PostgreSQL has no half-close).
            scope.cancel()


class StartingStandby:
    """A real server that answers 57P03 "the database system is starting up" until released.

    A standby whose WAL must stream through a `FaultProxy` that refuses: it
    cannot read its checkpoint, so it stays in the startup state. `release`
    (or `release_after`) lets the WAL through; the standby is consistent and
    accepts (read-only) connections a fraction of a second later.
    """

    def __init__(self, cluster: PgCluster, replication: FaultProxy) -> None:
        self.cluster = cluster
        self.replication = replication

    @classmethod
    def start(cls, primary: PgCluster, *, hot_standby: bool = True) -> StartingStandby:
        """Make one from a running ``primary`` (a pg_basebackup, a few hundred ms)."""
        replication = FaultProxy((primary.host, primary.port), Refuse())
        replication.start()
        try:
            cluster = primary.start_standby(
                hot_standby=hot_standby, replication_port=replication.port
            )
        except BaseException:
            replication.close()
            raise
        return cls(cluster, replication)

    def dsn(
        self, user: str | None = None, password: str | None = None, database: str | None = None
    ) -> str:
        """A DSN on the standby (the app role by default)."""
        return self.cluster.dsn(user, password, database)

    def release(self) -> None:
        """Let the WAL through now."""
        self.replication.set_mode(Forward())

    def release_after(self, seconds: float) -> None:
        """Let the WAL through ``seconds`` from now (timed on the proxy's loop)."""
        self.replication.set_mode_after(seconds, Forward())

    def close(self) -> None:
        """Remove the standby and stop its replication proxy."""
        try:
            self.cluster.destroy()
        finally:
            self.replication.close()
