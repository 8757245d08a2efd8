"""The operating-system error codes every check classifies the same way.

One table for the network probes (``_net``: TCP, HTTP, Redis) and the
PostgreSQL classifier, so that "refused", "unreachable" and "name unknown"
mean the same thing whichever dependency is being waited for. Kept free of
other imports: the classifier loads it on every probe.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["NAME_TRANSIENT", "NAME_UNKNOWN", "NETWORK_ERRNOS", "UNIX_SOCKET_ERRNOS"]


def _present(module: object, names: tuple[str, ...]) -> frozenset[int]:
    # Not every platform defines every code (EHOSTDOWN, EAI_ADDRFAMILY...).
    return frozenset(getattr(module, n) for n in names if hasattr(module, n))


#: The peer or the path to it is not there (yet): infrastructure, worth waiting for.
NETWORK_ERRNOS = _present(
    errno,
    (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EPIPE",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EHOSTDOWN",
        "EADDRNOTAVAIL",
        "ENOTCONN",
    ),
)
#: A Unix-domain socket that does not exist yet: the server has not created it.
UNIX_SOCKET_ERRNOS = NETWORK_ERRNOS | _present(errno, ("ENOENT",))
#: The resolver says the name does not exist: configuration (a typo will not heal).
NAME_UNKNOWN = _present(socket, ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY", "EAI_SERVICE"))
#: The resolver could not answer now: infrastructure (DNS may come back).
NAME_TRANSIENT = _present(socket, ("EAI_AGAIN", "EAI_FAIL"))
