"""How to reach one PostgreSQL server: a DSN or its parts, TLS, session settings.

Nothing here imports asyncpg: options are parsed and validated with the
standard library so that ``import checks`` stays cheap and a bad DSN is
reported before any socket is opened.
"""

from __future__ import annotations

import getpass
import os
import re
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

__all__ = [
    "SSL_MODES",
    "TARGET_SESSION_ATTRS",
    "PostgresConfigError",
    "PostgresOptions",
    "scrub",
]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
_SCHEMES = ("postgres", "postgresql")
_MASK = "***"
_SHORT = 3  # secrets shorter than this are masked as whole words only


class PostgresConfigError(ValueError):
    """The connection options are invalid; the message never contains the password."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (raw and URL-encoded forms) masked.

    Defensive: asyncpg's and the server's messages should not contain the
    password, but a DSN echoed back by a parser would.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= _SHORT:
            text = text.replace(secret, _MASK)
        else:
            # A one- or two-character password replaced everywhere would turn
            # "postgres" into "***ostgres": mask it only where it stands alone.
            alone = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
            text = re.sub(alone, _MASK, text)
    return text


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise PostgresConfigError(f"expected a string or SecretStr, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What the DSN and the explicit parts resolve to (password kept apart)."""

    hosts: tuple[tuple[str, int], ...]
    user: str
    database: str
    sslmode: str | None
    query: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """Where and how to connect.

    Give a ``dsn`` (``postgresql://user:secret@host:5432/db?sslmode=require``,
    as ``str`` or :class:`~pydantic.SecretStr`) or the parts; explicit parts
    override the DSN's. ``ssl`` is an sslmode name, an :class:`ssl.SSLContext`,
    ``True`` (require) / ``False`` (disable) or ``None`` (the DSN's or
    asyncpg's default, ``prefer``). ``readiness_query`` is extra SQL whose
    first value must be truthy (e.g. ``SELECT version = 42 FROM
    alembic_version``). ``connect_kwargs`` go to :func:`asyncpg.connect`
    unchanged.
    """

    dsn: SecretStr | str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: SecretStr | str | None = None
    database: str | None = None
    ssl: str | bool | ssl_module.SSLContext | None = None
    server_settings: Mapping[str, str] | None = None
    readiness_query: str | None = None
    target_session_attrs: str | None = None
    connect_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dsn", _secret(self.dsn))
        object.__setattr__(self, "password", _secret(self.password))
        if self.server_settings is not None:
            object.__setattr__(self, "server_settings", dict(self.server_settings))
        object.__setattr__(self, "connect_kwargs", dict(self.connect_kwargs))

    @classmethod
    def from_dsn(cls, dsn: str | SecretStr, **parts: Any) -> PostgresOptions:
        """Options from a DSN plus optional overrides (same names as the fields)."""
        return cls(dsn=_secret(dsn), **parts)

    # -- secrets -------------------------------------------------------------

    def _raw_dsn(self) -> str | None:
        return self.dsn.get_secret_value() if isinstance(self.dsn, SecretStr) else self.dsn

    def _raw_password(self) -> str | None:
        if isinstance(self.password, SecretStr):
            return self.password.get_secret_value()
        return self.password

    def secrets(self) -> tuple[str, ...]:
        """Every form of the password that could show up in text (for scrubbing)."""
        out: list[str] = []
        password = self._raw_password()
        if password is not None:
            out.append(password)
        raw = self._raw_dsn()
        if raw is not None:
            try:
                parts = urlsplit(raw)
                if parts.password:
                    out += [parts.password, unquote(parts.password)]
                for value in parse_qs(parts.query).get("password", []):
                    out += [value, unquote(value)]
            except ValueError:
                pass
            # An unparseable DSN is a secret as a whole: never echo it.
            out.append(raw)
        return tuple(s for s in out if s)

    def scrub(self, text: str) -> str:
        """``text`` without this configuration's password (nor the raw DSN)."""
        return scrub(text, self.secrets())

    # -- parsing -------------------------------------------------------------

    def _parse(self) -> _Parsed:
        hosts: list[tuple[str | None, int | None]] = []
        user = database = sslmode = None
        query: dict[str, str] = {}
        if self._raw_dsn() is not None:
            raw = (self._raw_dsn() or "").strip()
            if "://" not in raw:
                raise PostgresConfigError(
                    "invalid DSN: expected a URI like postgresql://user:password@host:5432/dbname "
                    "(key=value connection strings are not supported)"
                )
            try:
                parts = urlsplit(raw)
            except ValueError as exc:
                raise PostgresConfigError(
                    f"invalid DSN: {scrub(str(exc), self.secrets())}"
                ) from None
            if parts.scheme.lower() not in _SCHEMES:
                raise PostgresConfigError(
                    f"invalid DSN: scheme must be 'postgresql' or 'postgres', got {parts.scheme!r}"
                )
            netloc = parts.netloc.rpartition("@")[2]
            if "@" in parts.netloc:
                userinfo = parts.netloc.rpartition("@")[0]
                user = unquote(userinfo.partition(":")[0]) or None
            for chunk in filter(None, netloc.split(",")):
                hosts.append(_split_host(chunk))
            database = unquote(parts.path.lstrip("/")) or None
            for key, values in parse_qs(parts.query, keep_blank_values=True).items():
                query[key] = values[-1]
            if "host" in query:
                hosts = [(h, None) for h in query["host"].split(",") if h] or hosts
            if "port" in query:
                port = _port(query["port"].split(",")[0])
                hosts = [(h, port) for h, _ in hosts] or [(None, port)]
            user = query.get("user", user)
            database = query.get("dbname", query.get("database", database))
            sslmode = query.get("sslmode")
        if self.host is not None:
            hosts = [(h.strip(), None) for h in self.host.split(",") if h.strip()]
        if self.port is not None:
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise PostgresConfigError(f"invalid port {self.port!r}: expected an integer")
            _port(str(self.port))
            hosts = [(h, self.port) for h, _ in hosts] or [(None, self.port)]
        user = self.user or user or os.environ.get("PGUSER") or _os_user()
        database = self.database or database or os.environ.get("PGDATABASE") or user
        if isinstance(self.ssl, str):
            sslmode = self.ssl
        if sslmode is not None and sslmode not in SSL_MODES:
            raise PostgresConfigError(
                f"invalid sslmode {sslmode!r}; accepted: {', '.join(SSL_MODES)}"
            )
        tsa = self.target_session_attrs or query.get("target_session_attrs")
        if tsa is not None and tsa not in TARGET_SESSION_ATTRS:
            raise PostgresConfigError(
                f"invalid target_session_attrs {tsa!r}; accepted: {', '.join(TARGET_SESSION_ATTRS)}"
            )
        default_host = os.environ.get("PGHOST") or "localhost"
        default_port = _port(os.environ.get("PGPORT") or "5432")
        resolved = tuple((h or default_host, p or default_port) for h, p in hosts) or (
            (default_host, default_port),
        )
        return _Parsed(resolved, user, database, sslmode, query)

    def validate(self) -> None:
        """Raise :class:`PostgresConfigError` if the options cannot work."""
        self._parse()
        if self.readiness_query is not None and not self.readiness_query.strip():
            raise PostgresConfigError("readiness_query is empty")

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The ``(host, port)`` pairs to try, defaults filled in (raises on bad options)."""
        return self._parse().hosts

    def sslmode(self) -> str | None:
        """The sslmode in effect when given by name (``None``: a context or the default)."""
        if self.ssl is True:
            return "require"
        if self.ssl is False:
            return "disable"
        if isinstance(self.ssl, ssl_module.SSLContext):
            return None
        try:
            return self._parse().sslmode
        except PostgresConfigError:
            return None

    def target_key(self) -> str:
        """``postgres://host:port/dbname``: the history key (no user, no password).

        Falls back to ``postgres://invalid`` when the options do not parse, so
        a broken DSN still has a stable, secret-free name.
        """
        try:
            p = self._parse()
        except PostgresConfigError:
            return "postgres://invalid"
        hosts = ",".join(f"{_fmt_host(h)}:{port}" for h, port in p.hosts)
        return f"postgres://{hosts}/{p.database}"

    def redacted(self) -> str:
        """A printable DSN: user, hosts, database and sslmode; never the password."""
        try:
            p = self._parse()
        except PostgresConfigError:
            return "postgres://invalid"
        hosts = ",".join(f"{_fmt_host(h)}:{port}" for h, port in p.hosts)
        tail = f"?sslmode={p.sslmode}" if p.sslmode else ""
        return f"postgres://{p.user}@{hosts}/{p.database}{tail}"

    def connect_arguments(self) -> dict[str, Any]:
        """Keyword arguments for :func:`asyncpg.connect` (contains the password)."""
        self.validate()
        kwargs: dict[str, Any] = {}
        dsn = self._raw_dsn()
        if dsn is not None:
            kwargs["dsn"] = dsn.strip()
        for name in ("host", "port", "user", "database"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        password = self._raw_password()
        if password is not None:
            kwargs["password"] = password
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        if self.server_settings:
            kwargs["server_settings"] = dict(self.server_settings)
        if self.target_session_attrs is not None:
            kwargs["target_session_attrs"] = self.target_session_attrs
        kwargs.update(self.connect_kwargs)
        return kwargs

    def __repr__(self) -> str:
        return f"PostgresOptions({self.redacted()!r})"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "postgres"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise PostgresConfigError(f"invalid port {text!r}: expected an integer") from None
    if not 0 < port < 65536:
        raise PostgresConfigError(f"invalid port {port}: expected 1..65535")
    return port


def _split_host(chunk: str) -> tuple[str | None, int | None]:
    chunk = unquote(chunk)
    if chunk.startswith("["):  # [::1]:5432
        host, _, rest = chunk[1:].partition("]")
        port = rest.lstrip(":")
        return host or None, _port(port) if port else None
    if chunk.count(":") == 1:
        host, _, port = chunk.partition(":")
        return host or None, _port(port) if port else None
    return chunk or None, None


def _fmt_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("/") else host
