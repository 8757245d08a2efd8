"""What TARGET looks like for each check: one text for its help and its errors.

In words, never an example with a password: a URL with one in it would be
masked in every message. Each text must come out of ``smd._redact.redact``
unchanged (tests/test_bad_input.py runs every check's error through the CLI).
"""

from __future__ import annotations

__all__ = ["HTTP_ACCEPTED", "POSTGRES_ACCEPTED", "REDIS_ACCEPTED", "TCP_ACCEPTED"]

TCP_ACCEPTED = "host:port, [ipv6]:port or tcp://host:port"
HTTP_ACCEPTED = "an http:// or https:// URL, e.g. http://127.0.0.1:8000/readyz"
# Every message passes smd's redaction, which masks whatever sits between a
# URL's ':' and its last '@' (``redis://[USER[:PASSWORD]@]HOST`` would come out
# as ``redis://[USER[:***@]HOST``): the user info is named in the URL and
# spelled out after it, in a part that has no '@'.
REDIS_ACCEPTED = (
    "redis://[USERINFO@]HOST[:PORT][/DB] (rediss:// for TLS), where USERINFO is "
    "USER:PASSWORD (an ACL user) or :PASSWORD (the default user) for AUTH"
)
POSTGRES_ACCEPTED = (
    "a DSN like postgresql://user@host:5432/dbname (libpq's PG* variables fill gaps)"
)
