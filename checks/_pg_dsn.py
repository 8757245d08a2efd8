"""Read a libpq connection URI without ever echoing a secret.

libpq ends a URI's userinfo at the first ``@`` before the first ``/``, so an
unencoded ``@`` or ``/`` in a password makes it read a piece of the password
as a host, a port or a database name -- printed wherever a target is named.
This parser reads what libpq reads from what libpq accepts, and also reads
passwords holding any printable character, percent-encoded or not:

- every split of the text at one of its ``@`` (or at none) is a *reading*,
  valid when a host list follows (names, IPv4, ``[IPv6]``, ``:port``, commas),
  then an optional ``/dbname`` and an optional ``?query`` of ``key=value``;
- a ``password=`` value runs to the next ``&`` that starts a libpq parameter,
  so an unencoded ``&`` or ``@`` stays in the password;
- a split inside another reading's password value loses; a reading after
  which an ``@`` still ends a ``user:password`` loses when that ``@`` is in its
  database name, and makes the text *ambiguous* when it is in a query value;
  a user name with ``/`` or ``?`` and no password loses to another reading.
  What remains must be one reading: two is an error, never a guess (a wrong
  guess would print a piece of the password as a host name).

Errors name what is wrong and quote a value only from a *simple* text (at
most one ``@``, before any ``/`` or ``?``; no password in the query), where
no value can be a piece of a password.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from smd.checks._pg_uri import (
    ASYNCPG_PARAMS,
    HANDLED_PARAMS,
    LIBPQ_PARAMS,
    SECRET_PARAMS,
    UNSUPPORTED_PARAMS,
    PostgresConfigError,
    choose,
    decode,
    query_fields,
    read_at,
    simple,
    valid_port,
)

__all__ = [
    "ASYNCPG_PARAMS",
    "HANDLED_PARAMS",
    "LIBPQ_PARAMS",
    "SECRET_PARAMS",
    "UNSUPPORTED_PARAMS",
    "Dsn",
    "PostgresConfigError",
    "Resolved",
    "candidate_secrets",
    "format_hosts",
    "os_user",
    "parse_dsn",
    "port_number",
    "unbracket",
]


_SCHEMES = ("postgresql", "postgres")
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_FORM = (
    "expected a URI like postgresql://user@host:5432/dbname (a password goes after 'user:'); "
    "key=value connection strings are not supported"
)


@dataclass(frozen=True, slots=True)
class Dsn:
    """What a connection string says (values percent-decoded; ``None``: not given).

    ``hosts`` and ``ports`` are libpq's two comma lists (``""`` entries mean
    the default); ``params`` holds every other parameter.
    """

    user: str | None = None
    password: str | None = None
    hosts: tuple[str, ...] | None = None
    ports: tuple[str, ...] | None = None
    dbname: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


# -- reading a URI ---------------------------------------------------------------------


def _parse_uri(text: str) -> Dsn:
    m = _URI.match(text)
    assert m is not None
    scheme = m.group("scheme")
    if scheme.lower() not in _SCHEMES:
        raise PostgresConfigError(
            f"invalid DSN: scheme must be 'postgresql' or 'postgres', got {scheme!r}", "scheme"
        )
    rest = text[m.end() :]
    try:
        r = choose(rest)
    except PostgresConfigError as exc:
        if exc.part in ("port", "host") and simple(rest):
            raise PostgresConfigError(_quoted_problem(rest, exc.part), exc.part) from None
        raise
    user = password = None
    if r.userinfo is not None:
        raw_user, _, raw_password = r.userinfo.partition(":")
        user = decode(raw_user) or None
        password = decode(raw_password) or None  # libpq: an empty password is none
    hosts = tuple(decode(h[1:-1] if h.startswith("[") else h) for h in r.hosts)
    dsn_hosts: tuple[str, ...] | None = hosts if hosts != ("",) else None
    dsn_ports: tuple[str, ...] | None = tuple(r.ports) if any(r.ports) else None
    params: dict[str, str] = {}
    if r.query is not None:
        for key, value in r.query.fields:
            params[decode(key)] = decode(value)
    dbname = decode(r.path) if r.path else None
    dsn = _assemble(user, password, dsn_hosts, dsn_ports, dbname, params)
    for port in dsn.ports or ():
        if port and not valid_port(port):
            if simple(rest):
                raise PostgresConfigError(
                    f"invalid port {port!r}: expected an integer from 1 to 65535", "port"
                )
            raise PostgresConfigError("invalid DSN: invalid port in the host list", "port")
    return dsn


def _quoted_problem(rest: str, part: str) -> str:
    r = read_at(rest, rest.find("@") if "@" in rest else None)
    bad = r.ports[-1] if part == "port" else r.hosts[-1]
    if part == "port":
        return f"invalid port {bad!r}: expected an integer from 1 to 65535"
    return f"invalid DSN: invalid host name {bad!r} in the host list"


def _assemble(
    user: str | None,
    password: str | None,
    hosts: tuple[str, ...] | None,
    ports: tuple[str, ...] | None,
    dbname: str | None,
    params: dict[str, str],
) -> Dsn:
    # Query parameters override the URI's parts, as in libpq.
    if "host" in params:
        hosts = tuple(params.pop("host").split(","))
    if "port" in params:
        ports = tuple(params.pop("port").split(","))
    user = params.pop("user", user)
    password = params.pop("password", password) or None
    if "database" in params and "dbname" not in params:
        params["dbname"] = params.pop("database")
    params.pop("database", None)
    dbname = params.pop("dbname", dbname) or None
    for name in sorted(params):
        if name in UNSUPPORTED_PARAMS:
            raise PostgresConfigError(
                f"unsupported DSN parameter {name!r}: smd connects with asyncpg, which cannot "
                "honour it; remove it from the DSN",
                "parameter",
            )
    return Dsn(user or None, password, hosts, ports, dbname, params)


def parse_dsn(text: str) -> Dsn:
    """Read a connection string; :class:`PostgresConfigError` (never quoting a secret) if it cannot be."""
    text = text.strip()
    if not text:
        raise PostgresConfigError(f"invalid DSN: it is empty; {_FORM}", "form")
    if _URI.match(text):
        return _parse_uri(text)
    raise PostgresConfigError(f"invalid DSN: {_FORM}", "form")


def candidate_secrets(text: str) -> tuple[str, ...]:
    """Every string a reading of ``text`` could take for a secret (raw and decoded).

    Generous on purpose: masking a piece of text that was not a password costs
    nothing, missing a password that a wrong reading would print costs a leak.
    """
    text = text.strip()
    out: list[str] = []

    def add(raw: str) -> None:
        out.append(raw)
        with contextlib.suppress(PostgresConfigError):
            out.append(decode(raw))

    m = _URI.match(text)
    rest = text[m.end() :] if m else text
    for i, c in enumerate(rest):
        if c == "@":
            userinfo = rest[:i]
            if ":" in userinfo:
                add(userinfo.partition(":")[2])
    for key in SECRET_PARAMS:
        for found in re.finditer(rf"(?:^|[?&\s]){key}\s*=\s*", rest):
            tail = rest[found.end() :]
            add(tail)
            add(tail.split("&", 1)[0])
            add(re.split(r"\s", tail, maxsplit=1)[0])
            r = query_fields(f"{key}={tail}")
            if r.fields:
                add(r.fields[0][1])
    for quoted in re.finditer(r"password\s*=\s*'((?:[^'\\]|\\.)*)'?", rest):
        out += [quoted.group(1), re.sub(r"\\(.)", r"\1", quoted.group(1))]
    return tuple(dict.fromkeys(s for s in out if s))


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where and how to connect, every default filled in (holds the password: never print)."""

    hosts: tuple[tuple[str, int], ...]
    user: str
    password: str | None = field(repr=False)
    database: str
    sslmode: str | None
    target_session_attrs: str
    connect_timeout: float | None
    server_settings: Mapping[str, str]
    passfile: str | None
    asyncpg_params: Mapping[str, str] = field(repr=False)


# -- small helpers the options share ---------------------------------------------------


def os_user() -> str:
    """The OS user name (libpq's default user), ``postgres`` when there is none."""
    try:
        import getpass  # only when the DSN names no user

        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "postgres"


def port_number(text: str, source: str = "port") -> int:
    """``text`` as a port; the error quotes it unless it came from the DSN."""
    shown = f" {text!r}" if source != "the DSN" else ""
    try:
        port = int(text)
    except ValueError:
        raise PostgresConfigError(
            f"invalid port{shown} ({source}): expected an integer", "port"
        ) from None
    if not 0 < port < 65536:
        raise PostgresConfigError(f"invalid port{shown} ({source}): expected 1..65535", "port")
    return port


def unbracket(host: str) -> str:
    """``::1`` for ``[::1]`` (a query's ``host=`` may carry the brackets)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def format_hosts(hosts: Iterable[tuple[str, int]]) -> str:
    """``h1:5432,[::1]:5433,/tmp:5432``: a host list as targets name it."""
    return ",".join(
        f"[{h}]:{port}" if ":" in h and not h.startswith("/") else f"{h}:{port}"
        for h, port in hosts
    )
