"""What TARGET looks like for each check: one text for its help and its errors.

In words, never an example with a password: a URL with one in it would be
masked in every message.
"""

from __future__ import annotations

__all__ = ["HTTP_ACCEPTED", "POSTGRES_ACCEPTED", "REDIS_ACCEPTED", "TCP_ACCEPTED"]

TCP_ACCEPTED = "host:port, [ipv6]:port or tcp://host:port"
HTTP_ACCEPTED = "an http:// or https:// URL, e.g. http://127.0.0.1:8000/readyz"
REDIS_ACCEPTED = (
    "redis://HOST[:PORT][/DB] (rediss:// for TLS), with USER:PASSWORD@ or :PASSWORD@ "
    "before HOST for AUTH"
)
POSTGRES_ACCEPTED = (
    "a DSN like postgresql://user@host:5432/dbname (libpq's PG* variables fill gaps)"
)
