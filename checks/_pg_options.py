"""How to reach one PostgreSQL service: a DSN or its parts, libpq's variables, TLS, session.

Nothing here imports asyncpg: options are parsed and validated with the
standard library so that ``import smd.checks`` stays cheap and a bad DSN is
reported before any socket is opened.

Every value is taken, as libpq takes it, from the first of: the explicit
field, the DSN, the libpq environment variable (``PGHOST``, ``PGPORT``,
``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``, ``PGCONNECT_TIMEOUT``,
``PGSSLMODE``, ``PGTARGETSESSIONATTRS``, ``PGAPPNAME``, ``PGOPTIONS``), the
default (``localhost``, 5432, the OS user, a database named like the user).
The password falls back to ``~/.pgpass`` (``PGPASSFILE``), read by asyncpg.
"""

from __future__ import annotations

import math
import os
import re
import ssl as ssl_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from smd.checks._pg_dsn import (
    ASYNCPG_PARAMS,
    LIBPQ_PARAMS,
    Dsn,
    PostgresConfigError,
    Resolved,
    candidate_secrets,
    format_hosts,
    os_user,
    parse_dsn,
    port_number,
    unbracket,
)
from smd.secrets import redact

__all__ = [
    "LIBPQ_VARIABLES",
    "SSL_MODES",
    "TARGET_SESSION_ATTRS",
    "PostgresConfigError",
    "PostgresOptions",
    "Resolved",
    "scrub",
]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
#: The TLS files asyncpg loads: each parameter and the libpq variable it falls back to.
_TLS_FILES = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
}
#: The libpq variables that say where the database is (any one set is a configuration).
LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
_UTF8 = frozenset({"utf8", "utf-8", "unicode", "auto"})
_Env = Callable[[str], str | None]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (raw and URL-encoded forms) masked: smd's one rule.

    Defensive: asyncpg's and the server's messages should not contain the
    password, but a DSN echoed back by a parser would.
    """
    return redact(text, secrets)


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise PostgresConfigError(f"expected a string or SecretStr, got {type(value).__name__}")


def _env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if environ is None else environ).get(name) or None


def _file(named: tuple[str, str]) -> str:
    """``sslcert file '/path'`` (the parameter or variable that named it, then the path)."""
    return f"{named[0]} file {named[1]!r}"


def _readable(source: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise PostgresConfigError(
            f"{_file((source, path))} cannot be read: {exc.strerror or exc}", source
        ) from None


def _loads(
    named: tuple[str, str], what: str, load: Callable[[ssl_module.SSLContext, str], None]
) -> None:
    try:
        load(ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT), named[1])
    except ssl_module.SSLError as exc:
        raise PostgresConfigError(
            f"{_file(named)} holds no PEM {what} ({exc.reason or exc})", named[0]
        ) from None


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """Where and how to connect.

    Give a ``dsn`` (``postgresql://user:secret@host:5432/db?sslmode=require``,
    as ``str`` or :class:`~pydantic.SecretStr`), the parts, or nothing (libpq's
    ``PG*`` variables); explicit parts override the DSN's, which override the
    variables. ``ssl`` is an sslmode name, an :class:`ssl.SSLContext`,
    ``True`` (require) / ``False`` (disable) or ``None`` (the DSN's, else
    ``PGSSLMODE``, else asyncpg's default, ``prefer``). ``connect_timeout``
    (seconds; DSN ``connect_timeout=``, ``PGCONNECT_TIMEOUT``) bounds the
    connection to each host. ``readiness_query`` is extra SQL whose first
    value must be truthy (e.g. ``SELECT version = 42 FROM alembic_version``).
    ``connect_kwargs`` go to :func:`asyncpg.connect` unchanged.
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
    connect_timeout: float | None = None
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

    @classmethod
    def from_environment(cls, **parts: Any) -> PostgresOptions:
        """Options from libpq's variables alone (``PGHOST``, ``PGPORT``, ``PGUSER``...)."""
        return cls(**parts)

    @staticmethod
    def environment_configured() -> bool:
        """Whether any libpq variable naming the database (:data:`LIBPQ_VARIABLES`) is set."""
        return any(_env(name) for name in LIBPQ_VARIABLES)

    # -- secrets -------------------------------------------------------------

    def _raw_dsn(self) -> str | None:
        return self.dsn.get_secret_value() if isinstance(self.dsn, SecretStr) else self.dsn

    def _raw_password(self) -> str | None:
        if isinstance(self.password, SecretStr):
            return self.password.get_secret_value()
        return self.password

    def secrets(self) -> tuple[str, ...]:
        """Every form of every secret that could show up in text (for scrubbing)."""
        out: list[str] = []
        password = self._raw_password()
        if password is not None:
            out.append(password)
        raw = self._raw_dsn()
        if raw is not None:
            out += candidate_secrets(raw)
            # A DSN is a secret as a whole: never echo it.
            out += [raw, raw.strip()]
        env_password = _env("PGPASSWORD")
        if env_password:
            out.append(env_password)
        return tuple(dict.fromkeys(s for s in out if s))

    def scrub(self, text: str) -> str:
        """``text`` without this configuration's password (nor the raw DSN)."""
        return scrub(text, self.secrets())

    # -- resolving -----------------------------------------------------------

    def _dsn(self) -> Dsn:
        raw = self._raw_dsn()
        return parse_dsn(raw) if raw is not None else Dsn()

    def resolve(self, environ: Mapping[str, str] | None = None) -> Resolved:
        """Every value in effect (see the module docstring); raises on bad options.

        ``environ`` stands for ``os.environ`` (``{}``: the options alone).
        """
        dsn = self._dsn()
        params = dict(dsn.params)

        def env(name: str) -> str | None:
            return _env(name, environ)

        hosts = self._hosts(dsn, env)
        user = self.user or dsn.user or env("PGUSER") or os_user()
        database = self.database or dsn.dbname or env("PGDATABASE") or user
        password = self._raw_password() or dsn.password or env("PGPASSWORD")
        sslmode = self.ssl if isinstance(self.ssl, str) else None
        sslmode = sslmode or params.get("sslmode") or env("PGSSLMODE")
        if sslmode is not None and sslmode not in SSL_MODES:
            raise PostgresConfigError(
                f"invalid sslmode{self._shown(sslmode)}; accepted: {', '.join(SSL_MODES)}",
                "sslmode",
            )
        tsa = (
            self.target_session_attrs
            or params.get("target_session_attrs")
            or env("PGTARGETSESSIONATTRS")
            or "any"
        )
        if tsa not in TARGET_SESSION_ATTRS:
            raise PostgresConfigError(
                f"invalid target_session_attrs{self._shown(tsa)}; accepted: "
                f"{', '.join(TARGET_SESSION_ATTRS)}",
                "target_session_attrs",
            )
        return Resolved(
            hosts=hosts,
            user=user,
            password=password,
            database=database,
            sslmode=sslmode,
            target_session_attrs=tsa,
            connect_timeout=self._connect_timeout(params, env),
            server_settings=self._server_settings(params, env),
            passfile=params.get("passfile"),
            asyncpg_params={k: v for k, v in params.items() if k in ASYNCPG_PARAMS},
        )

    def _shown(self, value: str) -> str:
        """`` 'value'`` for an error message, unless the DSN's query holds a secret.

        (A query value next to an unencoded password may be a piece of it.)
        """
        raw = self._raw_dsn()
        if raw is not None and "?" in raw and re.search(r"passw|secret", raw, re.I):
            return ""
        return f" {value!r}"

    def _hosts(self, dsn: Dsn, env: _Env) -> tuple[tuple[str, int], ...]:
        if self.host is not None:
            hosts, where = [h.strip() for h in self.host.split(",")], "host"
        elif dsn.hosts is not None:
            hosts, where = list(dsn.hosts), "the DSN"
        else:
            hosts, where = (env("PGHOST") or "").split(","), "PGHOST"
        if self.port is not None:
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise PostgresConfigError(
                    f"invalid port {self.port!r}: expected an integer", "port"
                )
            ports, source = [str(self.port)], "port"
        elif dsn.ports is not None:
            ports, source = list(dsn.ports), "the DSN"
        else:
            ports, source = (env("PGPORT") or "").split(","), "PGPORT"
        if len(ports) == 1:
            ports *= len(hosts)
        elif len(ports) != len(hosts):
            raise PostgresConfigError(
                f"{len(ports)} ports ({source}) for {len(hosts)} hosts ({where}): give one port "
                "for all hosts or one per host",
                "port",
            )
        return tuple(
            (unbracket(h) or "localhost", port_number(p, source) if p else 5432)
            for h, p in zip(hosts, ports, strict=True)
        )

    def _connect_timeout(self, params: Mapping[str, str], env: _Env) -> float | None:
        if self.connect_timeout is not None:
            value = self.connect_timeout
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PostgresConfigError(
                    f"invalid connect_timeout {value!r}: expected seconds", "connect_timeout"
                )
            return float(value) if math.isfinite(value) and value > 0 else None
        text, source = params.get("connect_timeout"), "connect_timeout in the DSN"
        if text is None:
            text, source = env("PGCONNECT_TIMEOUT"), "PGCONNECT_TIMEOUT"
        if text is None:
            return None
        try:
            seconds = int(text.strip())
        except ValueError:
            raise PostgresConfigError(
                f"invalid {source}: expected a whole number of seconds (as libpq)",
                "connect_timeout",
            ) from None
        # libpq: zero or negative waits forever; the shortest bound is 2 s.
        return float(max(seconds, 2)) if seconds > 0 else None

    def _server_settings(self, params: Mapping[str, str], env: _Env) -> dict[str, str]:
        # Parameters libpq does not know are server settings, as asyncpg sends them.
        out = {k: v for k, v in params.items() if k not in LIBPQ_PARAMS}
        app = params.get("application_name") or params.get("fallback_application_name")
        app = app or env("PGAPPNAME")
        if app:
            out["application_name"] = app
        options = params.get("options") or env("PGOPTIONS")
        if options:
            out["options"] = options
        encoding = params.get("client_encoding")
        if encoding is not None and encoding.lower() not in _UTF8:
            raise PostgresConfigError(
                "unsupported client_encoding: asyncpg speaks UTF8 only; remove it from the DSN",
                "parameter",
            )
        out.update(self.server_settings or {})
        return out

    def validate(self, environ: Mapping[str, str] | None = None) -> None:
        """Raise :class:`PostgresConfigError` if the options cannot work (see :meth:`resolve`)."""
        self.resolve(environ)
        if self.readiness_query is not None and not self.readiness_query.strip():
            raise PostgresConfigError("readiness_query is empty", "readiness_query")

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The ``(host, port)`` pairs to try, in order (raises on bad options)."""
        return self.resolve().hosts

    def sslmode(self) -> str | None:
        """The sslmode in effect when given by name (``None``: a context or the default)."""
        if self.ssl is True:
            return "require"
        if self.ssl is False:
            return "disable"
        if isinstance(self.ssl, ssl_module.SSLContext):
            return None
        try:
            return self.resolve().sslmode
        except PostgresConfigError:
            return None

    # -- naming (never a secret) ----------------------------------------------

    def target_key(self) -> str:
        """``postgres://host:port[,host:port...]/dbname``: the history key (no user, no password).

        Falls back to ``postgres://invalid`` when the options do not parse, so
        a broken DSN still has a stable, secret-free name.
        """
        try:
            r = self.resolve()
        except PostgresConfigError:
            return "postgres://invalid"
        return f"postgres://{format_hosts(r.hosts)}/{r.database}"

    def host_key(self, host: str, port: int) -> str:
        """``postgres://host:port/dbname`` for one host of the list."""
        try:
            database = self.resolve().database
        except PostgresConfigError:
            return "postgres://invalid"
        return f"postgres://{format_hosts(((host, port),))}/{database}"

    def redacted(self) -> str:
        """A printable DSN: user, hosts, database and sslmode; never the password."""
        try:
            r = self.resolve()
        except PostgresConfigError:
            return "postgres://invalid"
        tail = f"?sslmode={r.sslmode}" if r.sslmode else ""
        user = quote(r.user, safe="")
        return f"postgres://{user}@{format_hosts(r.hosts)}/{r.database}{tail}"

    # -- asyncpg ---------------------------------------------------------------

    def connect_arguments(self) -> dict[str, Any]:
        """Keyword arguments for :func:`asyncpg.connect` / ``create_pool`` (holds the password).

        Every host of the list (asyncpg tries them in order), no ``timeout``:
        the caller bounds the connect (see :attr:`Resolved.connect_timeout`).
        """
        r = self.ready_to_connect()
        kwargs = self._common(r)
        kwargs["host"] = [h for h, _ in r.hosts]
        kwargs["port"] = [p for _, p in r.hosts]
        kwargs["target_session_attrs"] = r.target_session_attrs
        kwargs.update(self.connect_kwargs)
        return kwargs

    def ready_to_connect(self) -> Resolved:
        """The values in effect, once the options are valid and every TLS file they
        name loads; raises :class:`PostgresConfigError` otherwise (before any socket)."""
        self.validate()
        r = self.resolve()
        self.check_tls_files(r)
        return r

    def host_arguments(self, resolved: Resolved, host: str, port: int) -> dict[str, Any]:
        """Keyword arguments for one :func:`asyncpg.connect` to one host of the list.

        No ``target_session_attrs``: the caller checks the session itself.
        """
        kwargs = self._common(resolved)
        kwargs.update(host=host, port=port, target_session_attrs="any")
        kwargs.update(self.connect_kwargs)
        return kwargs

    def check_tls_files(self, r: Resolved) -> None:
        """Raise :class:`PostgresConfigError` naming a TLS file asyncpg would fail to load.

        asyncpg names the file only when the default ``~/.postgresql/root.crt``
        is missing (a ``ClientConfigurationError``); a missing ``sslcert``,
        ``sslkey``, ``sslrootcert`` or ``sslcrl`` it raises as a bare
        ``[Errno 2] No such file or directory`` (which reads as a missing Unix
        socket) and a file it cannot parse as a bare ``SSLError``. Here each
        file is loaded as asyncpg will load it (only the files it reads: the
        sslmode in effect, from the DSN or the ``PGSSL*`` variables), before any
        socket, so that the failure is configuration and names the file. The
        sslpassword is used, never shown.
        """
        given = self.connect_kwargs.get("ssl", self.ssl)  # connect_kwargs go to asyncpg last
        ssl = given if given is not None and not isinstance(given, str) else r.sslmode
        if ssl is None and any(not h.startswith("/") for h, _ in r.hosts):
            ssl = "prefer"  # asyncpg's default over TCP
        if not isinstance(ssl, str) or ssl == "disable":
            return  # no SSLContext of asyncpg's making: it loads no file
        params = r.asyncpg_params
        files: dict[str, tuple[str, str]] = {}
        for name, variable in _TLS_FILES.items():
            path = params[name] if name in params else _env(variable)
            if path:
                files[name] = (name if name in params else variable, path)
        if SSL_MODES.index(ssl) < SSL_MODES.index("require"):
            files.pop("sslrootcert", None)  # asyncpg verifies nothing below require
            files.pop("sslcrl", None)
        if "sslcert" not in files:
            # asyncpg tries ~/.postgresql/postgresql.crt (with sslkey) and goes on without it.
            files.pop("sslkey", None)
        for name in ("sslrootcert", "sslcrl", "sslcert", "sslkey"):
            if name in files:
                _readable(*files[name])
        for name, what in (("sslrootcert", "certificate"), ("sslcrl", "certificate or CRL")):
            if name in files:
                _loads(files[name], what, lambda c, path: c.load_verify_locations(cafile=path))
        if "sslcert" not in files:
            return
        cert = files["sslcert"]
        _loads(cert, "certificate", lambda c, path: c.load_verify_locations(cafile=path))
        key = files.get("sslkey")
        if key is None:
            try:  # as asyncpg: no home (or none we may read) means no default key
                default = Path.home() / ".postgresql" / "postgresql.key"
                key = ("the default sslkey", str(default)) if default.exists() else None
            except (RuntimeError, KeyError, OSError):
                key = None
        password = params.get("sslpassword") or ""
        try:
            ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_CLIENT).load_cert_chain(
                cert[1], keyfile=key[1] if key else None, password=lambda: password
            )
        except ssl_module.SSLError as exc:
            if key is None:
                problem = f"{_file(cert)} holds no usable private key (give sslkey)"
            elif exc.reason == "KEY_VALUES_MISMATCH":
                problem = f"{_file(key)} is not the key of the certificate in {_file(cert)}"
            else:
                problem = (
                    f"{_file(key)} is not a usable private key: not PEM, or encrypted and "
                    "sslpassword is missing or wrong"
                )
            raise PostgresConfigError(problem, key[0] if key else cert[0]) from None

    def _common(self, r: Resolved) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"user": r.user, "database": r.database}
        if r.password is not None:
            kwargs["password"] = r.password
        if r.passfile is not None:
            kwargs["passfile"] = r.passfile
        given = self.connect_kwargs.get("ssl", self.ssl)  # connect_kwargs go to asyncpg last
        ssl = given if given is not None and not isinstance(given, str) else r.sslmode
        if ssl is not None:
            kwargs["ssl"] = ssl
        if r.server_settings:
            kwargs["server_settings"] = dict(r.server_settings)
        if r.asyncpg_params:
            # TLS files and Kerberos settings: asyncpg reads them from a DSN's query.
            query = "&".join(f"{k}={quote(v, safe='')}" for k, v in r.asyncpg_params.items())
            kwargs["dsn"] = f"postgresql://?{query}"
        return kwargs

    def __repr__(self) -> str:
        return f"PostgresOptions({self.redacted()!r})"
