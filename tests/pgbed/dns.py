"""A tiny fake DNS server (UDP) that answers every query with one chosen rcode.

It exists so that "unknown host name" and "DNS temporarily failing" can be
tested without a single packet to the machine's real resolver: a process run
in a private mount namespace with a bind-mounted ``resolv.conf`` naming this
server asks only it. ``NXDOMAIN`` (rcode 3) makes glibc's ``getaddrinfo``
fail with ``EAI_NONAME``; ``SERVFAIL`` (rcode 2) with ``EAI_AGAIN``.

Port 53 is fixed by ``resolv.conf`` (it cannot name a port), so the server
binds ``(address, 53)`` on a loopback address of the caller's choice
(anything in 127.0.0.0/8 reaches ``lo`` on Linux); that needs root.
:func:`random_loopback` picks an address unlikely to be in use by another
test run on the same machine.

::

    with FakeDns(rcode=NXDOMAIN) as dns:
        resolv_conf.write_text(dns.resolv_conf())
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["NXDOMAIN", "SERVFAIL", "DnsUnavailable", "FakeDns", "random_loopback", "unshare_prefix"]

NXDOMAIN = 3
SERVFAIL = 2

_HEADER = struct.Struct("!HHHHHH")


class DnsUnavailable(RuntimeError):
    """The fake server cannot run here (not root, port 53 taken, no ``unshare``)."""


def random_loopback(rng: random.Random | None = None) -> str:
    """A random address in 127.53.0.0/16 (away from 127.0.0.1 and systemd's 127.0.0.53)."""
    r = rng or random.Random()
    return f"127.53.{r.randrange(1, 255)}.{r.randrange(1, 255)}"


def _question_end(packet: bytes) -> int:
    """Offset just past the first question (QNAME labels + QTYPE + QCLASS)."""
    i = _HEADER.size
    while i < len(packet):
        length = packet[i]
        if length == 0:
            return min(i + 1 + 4, len(packet))
        if length & 0xC0:  # a compression pointer ends the name
            return min(i + 2 + 4, len(packet))
        i += 1 + length
    return len(packet)


def reply(query: bytes, rcode: int) -> bytes | None:
    """The answer to ``query``: same id and question, no records, ``rcode``.

    ``None`` for a packet too short to be a DNS query (it is ignored).
    """
    if len(query) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(query)
    opcode = flags & 0x7800
    rd = flags & 0x0100
    # QR=1 (response), same opcode and RD, RA=1, the chosen rcode.
    out_flags = 0x8000 | opcode | rd | 0x0080 | (rcode & 0xF)
    question = query[_HEADER.size : _question_end(query)] if qdcount else b""
    return _HEADER.pack(ident, out_flags, 1 if question else 0, 0, 0, 0) + question


class FakeDns:
    """Answers every UDP query on ``(address, 53)`` with ``rcode``, on a daemon thread."""

    def __init__(self, rcode: int = NXDOMAIN, address: str | None = None) -> None:
        self.rcode = rcode
        self.address = address or random_loopback()
        self.queries = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind and serve; raise :class:`DnsUnavailable` if port 53 cannot be bound."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, 53))
        except OSError as exc:
            sock.close()
            raise DnsUnavailable(
                f"cannot bind a fake DNS server on {self.address}:53 ({exc}); "
                "it needs root and a free port 53 on that loopback address"
            ) from None
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                query, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = reply(query, self.rcode)
            if answer is not None:
                self.queries += 1
                # The client may have given up already; nothing to do then.
                with contextlib.suppress(OSError):
                    self._sock.sendto(answer, peer)

    def resolv_conf(self) -> str:
        """A ``resolv.conf`` that sends every lookup here, once, with no search domains."""
        return f"nameserver {self.address}\noptions timeout:1 attempts:1\n"

    def write_resolv_conf(self, path: Path) -> Path:
        """Write :meth:`resolv_conf` to ``path`` and return it."""
        path.write_text(self.resolv_conf(), encoding="utf-8")
        return path

    def close(self) -> None:
        """Stop serving and release the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> FakeDns:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def unshare_prefix(resolv_conf: Path) -> list[str]:
    """argv prefix that runs a command with ``resolv_conf`` as its ``/etc/resolv.conf``.

    A private mount namespace (``unshare -m``, private propagation) makes the
    bind mount invisible to the rest of the machine and gone when the
    command exits. Append the command's own argv.
    """
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        str(resolv_conf),
    ]
