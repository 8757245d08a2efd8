"""systemd's notify protocol: ``READY=1``, ``STATUS=``, ``STOPPING=1``.

With ``Type=notify`` in a unit, systemd sets ``NOTIFY_SOCKET`` and waits for
``READY=1`` before it considers the service started. :class:`SystemdNotifier`
is an observer that sends it once startup is ready or degraded, ``STATUS=``
lines while phases wait (what ``systemctl status`` shows), and, called at
shutdown, ``STOPPING=1``. Without ``NOTIFY_SOCKET`` nothing is sent. A
socket that cannot be reached never breaks startup.
"""

from __future__ import annotations

import contextlib
import os
import socket

from smd.events import Event, PhaseWaiting, ReadinessChanged, StartupFinished

__all__ = ["SystemdNotifier"]


class SystemdNotifier:
    """Observer speaking systemd's notify protocol on ``NOTIFY_SOCKET``."""

    def __init__(self, socket_path: str | None = None) -> None:
        self.path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.ready_sent = False

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to talk to."""
        return bool(self.path)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; ``False`` when it could not be sent."""
        if not self.path:
            return False
        address = self.path
        if address.startswith("@"):  # the abstract namespace (Linux)
            address = "\0" + address[1:]
        message = "\n".join(assignments).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(address)
                sock.sendall(message)
            except OSError:
                return False
        return True

    def __call__(self, event: Event) -> None:
        if isinstance(event, ReadinessChanged):
            snap = event.snapshot
            if snap.serving:
                status = (
                    f"{event.startup}: {snap.state.value}"
                    + (f" ({'; '.join(snap.reasons)})" if snap.reasons else "")
                )[:200]
                if not self.ready_sent:
                    self.ready_sent = self.send("READY=1", f"STATUS={status}")
                else:
                    self.send(f"STATUS={status}")
        elif isinstance(event, PhaseWaiting):
            self.send(
                f"STATUS={event.startup}: waiting for {event.phase} "
                f"({event.waited:.0f}s of {event.deadline:.0f}s, {event.attempts} attempts)"
            )
        elif isinstance(event, StartupFinished) and not event.report.state.serving:
            with contextlib.suppress(Exception):
                self.send(f"STATUS={event.startup}: startup failed")

    def stopping(self) -> None:
        """Tell systemd the service is stopping (the lifespan calls it at shutdown)."""
        self.send("STOPPING=1", "STATUS=stopping")
