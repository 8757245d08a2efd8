"""systemd notify over a real datagram socket: READY=1, STATUS=, STOPPING=1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from smd import Failure, FailureKind, PhaseContext, PhaseError, Startup, lifecycle, load_settings
from smd._systemd import SystemdNotifier
from smd.history import MemoryHistoryStore


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[list[str]]:
    out: list[list[str]] = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out


def startup_with(*, fail: bool) -> Startup:
    s = Startup("svc")

    @s.phase(timeout=5)
    async def slow(ctx: PhaseContext) -> None:
        await anyio.sleep(0.3)

    @s.phase(requires=["slow"], timeout=5)
    async def cache(ctx: PhaseContext) -> None:
        if fail:
            raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "cache down"))

    return s


async def test_ready_status_and_stopping_are_sent(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier(path)
    # progress_interval 0.1: `slow` waits long enough for one STATUS line.
    settings = load_settings(environment="development", progress_interval=0.1)
    async with lifecycle(
        startup_with(fail=True), settings=settings, store=MemoryHistoryStore(), observers=[notifier]
    ) as run:
        assert run.report is not None
        assert run.report.state.value == "degraded"
        messages = received(sock)
        notifier.stopping()
    messages += received(sock)
    waiting = [m for m in messages if m[0].startswith("STATUS=svc: waiting for slow")]
    assert waiting, messages
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1
    assert any(line.startswith("STATUS=svc: degraded (cache:") for line in ready[0])
    assert messages[-1] == ["STOPPING=1", "STATUS=stopping"]
    # READY=1 comes after every waiting line and before STOPPING.
    assert messages.index(ready[0]) > messages.index(waiting[-1])


async def test_no_ready_when_startup_fails(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier(path)
    settings = load_settings(environment="production")
    with pytest.raises(Exception, match="cache down"):
        async with lifecycle(
            startup_with(fail=True),
            settings=settings,
            store=MemoryHistoryStore(),
            observers=[notifier],
        ):
            pass
    messages = received(sock)
    assert not any("READY=1" in m for m in messages)
    assert ["STATUS=svc: startup failed"] in messages


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_an_unreachable_socket_never_raises(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    assert notifier.send("READY=1") is False
