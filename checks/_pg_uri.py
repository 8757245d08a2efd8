"""Low-level pieces of reading a libpq URI: parameter names, percent-decoding, readings.

See :mod:`smd.checks._pg_dsn` for the rules; this module tries every split of a
URI at one of its ``@`` (a *reading*) and picks the one reading that can be
trusted, or refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from smd.exceptions import SmdError

__all__ = [
    "ASYNCPG_PARAMS",
    "HANDLED_PARAMS",
    "LIBPQ_PARAMS",
    "SECRET_PARAMS",
    "UNSUPPORTED_PARAMS",
    "PostgresConfigError",
    "Reading",
    "choose",
    "decode",
    "query_fields",
    "read_at",
    "simple",
    "valid_port",
]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Parameters smd reads itself (the host list, credentials, bounds, session).
HANDLED_PARAMS = _names(
    "host port dbname database user password connect_timeout sslmode target_session_attrs "
    "application_name fallback_application_name options client_encoding passfile"
)
#: Parameters handed to asyncpg unchanged (it implements them as libpq does).
ASYNCPG_PARAMS = _names(
    "sslcert sslkey sslrootcert sslcrl sslpassword ssl_min_protocol_version "
    "ssl_max_protocol_version sslnegotiation krbsrvname gsslib"
)
#: libpq parameters asyncpg cannot honour: refused with one clear line.
UNSUPPORTED_PARAMS = _names(
    "hostaddr service keepalives keepalives_idle keepalives_interval keepalives_count "
    "tcp_user_timeout replication gssencmode gssdelegation requiressl sslcompression sslcrldir "
    "sslsni sslcertmode requirepeer channel_binding require_auth load_balance_hosts "
    "min_protocol_version max_protocol_version oauth_issuer oauth_client_id "
    "oauth_client_secret oauth_scope scram_client_key scram_server_key"
)
LIBPQ_PARAMS = HANDLED_PARAMS | ASYNCPG_PARAMS | UNSUPPORTED_PARAMS
#: Parameters whose values are secrets (masked in every output).
SECRET_PARAMS = _names("password sslpassword oauth_client_secret scram_client_key scram_server_key")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_HOST_NAME = re.compile(r"[A-Za-z0-9._~%-]*\Z")
_IPV6 = re.compile(r"\[(?P<addr>[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?)\]\Z")


class PostgresConfigError(SmdError, ValueError):
    """The connection options are invalid; the message never contains a secret.

    ``part`` names what is wrong (``"scheme"``, ``"host"``, ``"port"``,
    ``"query"``, ``"ambiguous"``, ``"encoding"``, ``"form"``, ``"parameter"``...).
    """

    def __init__(self, message: str, part: str = "form") -> None:
        super().__init__(message)
        self.part = part


# -- percent-decoding ----------------------------------------------------------------


def decode(text: str) -> str:
    """libpq's percent-decoding, except that a ``%`` not followed by two hex digits stays."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and i + 2 < len(text) and _ishex(text[i + 1 : i + 3]):
            byte = int(text[i + 1 : i + 3], 16)
            if byte == 0:
                raise PostgresConfigError(
                    "invalid DSN: a percent-encoded NUL (%00) is not allowed", "encoding"
                )
            out.append(byte)
            i += 3
            continue
        out += c.encode("utf-8", "surrogatepass")
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise PostgresConfigError(
            "invalid DSN: a percent-encoded value is not UTF-8", "encoding"
        ) from None


def _ishex(pair: str) -> bool:
    return len(pair) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in pair)


# -- the query -----------------------------------------------------------------------


@dataclass(slots=True)
class _Query:
    fields: list[tuple[str, str]]  # raw key, raw value
    secret_spans: list[tuple[int, int]]  # offsets (in the query) of secret values
    problem: str | None = None


def query_fields(text: str) -> _Query:
    """``key=value`` fields separated by ``&``; a secret value runs to the next libpq key."""
    chunks = text.split("&")
    q = _Query([], [])
    offset = 0
    i = 0
    while i < len(chunks):
        chunk, start = chunks[i], offset
        offset += len(chunk) + 1
        i += 1
        if not chunk:
            continue
        key, eq, value = chunk.partition("=")
        if not eq:
            q.problem = "a query field has no '='"
            return q
        name = key if "%" not in key else decode(key)
        if not _KEY.match(name):
            q.problem = "a query parameter name is not a name"
            return q
        if name in SECRET_PARAMS:
            # Absorb what follows until a field that starts a libpq parameter.
            while i < len(chunks):
                head, sep, _ = chunks[i].partition("=")
                if sep and head in LIBPQ_PARAMS:
                    break
                value += "&" + chunks[i]
                offset += len(chunks[i]) + 1
                i += 1
            q.secret_spans.append((start + len(key) + 1, start + len(key) + 1 + len(value)))
        q.fields.append((key, value))
    return q


# -- one reading of a URI --------------------------------------------------------------


@dataclass(slots=True)
class Reading:
    at: int | None  # index of the '@' ending the userinfo (None: no userinfo)
    userinfo: str | None
    hosts: list[str]
    ports: list[str]
    path: str | None
    query: _Query | None
    query_start: int  # index of the query in the text after '://'
    problem: str | None = None
    part: str = "form"

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def has_password(self) -> bool:
        return self.userinfo is not None and ":" in self.userinfo

    def secret_spans(self) -> Iterator[tuple[int, int]]:
        if self.query is not None:
            for a, b in self.query.secret_spans:
                yield self.query_start + a, self.query_start + b


def _host_entry(entry: str) -> tuple[str, str, str | None]:
    """(raw host, raw port, problem) of one ``host[:port]`` entry."""
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or not _IPV6.match(entry[: close + 1]):
            return entry, "", "host"
        host, rest = entry[: close + 1], entry[close + 1 :]
        if rest and not rest.startswith(":"):
            return entry, "", "host"
        port = rest[1:]
    else:
        host, _, port = entry.partition(":")
        if not _HOST_NAME.match(host):
            return host, port, "host"
    if port and not valid_port(port):
        return host, port, "port"
    return host, port, None


def valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def read_at(rest: str, at: int | None) -> Reading:
    userinfo = rest[:at] if at is not None else None
    base = at + 1 if at is not None else 0
    tail = rest[base:]
    end = len(tail)
    for sep in "/?":
        k = tail.find(sep)
        if 0 <= k < end:
            end = k
    hostpart, after = tail[:end], tail[end:]
    r = Reading(at, userinfo, [], [], None, None, len(rest))
    if "@" in hostpart:
        r.problem, r.part = "the host list holds an '@'", "host"
        return r
    for entry in hostpart.split(","):
        host, port, problem = _host_entry(entry)
        if problem is not None:
            r.problem, r.part = f"invalid {problem} in the host list", problem
            r.hosts.append(host)
            r.ports.append(port)
            return r
        r.hosts.append(host)
        r.ports.append(port)
    query_text: str | None = None
    if after.startswith("/"):
        path, qmark, query_text = after[1:].partition("?")
        r.path = path
        if not qmark:
            query_text = None
        r.query_start = base + end + 1 + len(path) + 1
    elif after.startswith("?"):
        query_text = after[1:]
        r.query_start = base + end + 1
    if query_text is not None:
        r.query = query_fields(query_text)
        if r.query.problem is not None:
            r.problem, r.part = r.query.problem, "query"
    return r


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= position < b for a, b in spans)


def _weakness(r: Reading, rest: str, ats: list[int]) -> str | None:
    """Why ``r`` may be hiding a password: a later ``@`` ends a ``user:password``.

    ``"path"`` when every such ``@`` lies in the database name (implausible:
    ``r`` loses), ``"query"`` when one lies in a query value (ambiguous).
    """
    spans = list(r.secret_spans())
    later = [p for p in ats if (r.at is None or p > r.at) and not _inside(p, spans)]
    later = [p for p in later if ":" in rest[:p]]
    if not later:
        return None
    return "query" if any(p >= r.query_start for p in later) else "path"


def choose(rest: str) -> Reading:
    ats = [i for i, c in enumerate(rest) if c == "@"]
    readings = [read_at(rest, None)] + [read_at(rest, i) for i in ats]
    valid = [r for r in readings if r.ok]
    # A split inside another reading's password value is that password's '@'.
    spans = [s for r in valid for s in r.secret_spans()]
    valid = [r for r in valid if r.at is None or not _inside(r.at, spans)]
    weak = {id(r): _weakness(r, rest, ats) for r in valid}
    if any(w == "query" for w in weak.values()):
        raise PostgresConfigError(_AMBIGUOUS, "ambiguous")
    valid = [r for r in valid if weak[id(r)] is None]
    if len(valid) > 1:
        # A user name with '/' or '?' and no password is a host and path misread.
        valid = [
            r
            for r in valid
            if r.userinfo is None or r.has_password or not any(c in r.userinfo for c in "/?")
        ]
    if not valid:
        primary = readings[-1]  # the last '@' (or none): what a password-holding DSN means
        if primary.ok:
            raise PostgresConfigError(_AMBIGUOUS, "ambiguous")
        raise PostgresConfigError(f"invalid DSN: {primary.problem}", primary.part)
    if len(valid) > 1:
        raise PostgresConfigError(_AMBIGUOUS, "ambiguous")
    return valid[0]


_AMBIGUOUS = (
    "ambiguous DSN: an unencoded '@' lets it be read in more than one way; percent-encode "
    "'@' as %40 (and '/' as %2F, '?' as %3F) in the password, the database name and query values"
)


def simple(rest: str) -> bool:
    """True when no value outside the userinfo can be a piece of a password."""
    if "password" in rest.lower() or rest.count("@") > 1:
        return False
    if "@" in rest:
        first = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        return rest.index("@") < first
    return True
