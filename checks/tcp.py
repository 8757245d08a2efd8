"""The TCP check: a port accepts a connection.

The least a dependency can do: the kernel on the other side completed the
handshake, so something listens. A refused or reset connection is
infrastructure (nothing listens yet; may heal), a silent one a timeout (a
firewall dropping packets, a full accept queue), an unknown host name
configuration. The failure's ``code`` is the errno name (``ECONNREFUSED``)
or the resolver's (``EAI_NONAME``). The module's :data:`plugin`
contributes ``smd check tcp HOST:PORT``::

    from smd.checks.tcp import TcpCheck
    from smd.retry import wait_ready

    result = await wait_ready(TcpCheck("queue.internal", 5672), deadline_seconds=10)
"""

from __future__ import annotations

from smd.checks._accepted import TCP_ACCEPTED as _ACCEPTED
from smd.checks._net import Answer, Progress, attempt, connect, format_host, split_host_port
from smd.retry import ProbeResult

__all__ = ["TcpCheck"]


class TcpCheck:
    """Ready when ``host:port`` accepts a TCP connection (a :class:`smd.retry.Check`)."""

    def __init__(self, host: str, port: int) -> None:
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host, self.port = split_host_port(
            f"{format_host(host)}:{port}", default_port=None, accepted=_ACCEPTED
        )

    @classmethod
    def from_target(cls, target: str) -> TcpCheck:
        """The check ``smd check tcp TARGET`` runs; ``ValueError`` names what is wrong."""
        text = target.strip()
        scheme, sep, rest = text.partition("://")
        if sep:
            if scheme.lower() != "tcp":
                raise ValueError(f"unsupported scheme {scheme!r}; accepted: {_ACCEPTED}")
            text = rest.rstrip("/")
        host, port = split_host_port(text, default_port=None, accepted=_ACCEPTED)
        return cls(host, port)

    @property
    def target(self) -> str:
        """``tcp://host:port``."""
        return f"tcp://{format_host(self.host)}:{self.port}"

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One connect, bounded by ``attempt_seconds``, then a polite close."""

        async def talk(progress: Progress) -> Answer:
            stream = await connect(self.host, self.port, None, progress)
            await stream.aclose()
            return Answer(summary="connection accepted")

        return await attempt(self.target, attempt_seconds, talk)

    def __repr__(self) -> str:
        return f"TcpCheck({self.target!r})"
