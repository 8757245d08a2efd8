"""The settings the PostgreSQL phase owns, and its infrastructure profiles.

``SMD_DATABASE_URL`` belongs here, not to the engine: the engine merges this
model into :class:`smd.Settings` through the ``smd.plugins`` entry point, so
it is read from the same sources and validated at load like every setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr, field_validator

from smd.checks._pg_options import PostgresConfigError, PostgresOptions
from smd.plugins import Plugin
from smd.secrets import register_secret
from smd.settings import SettingsBase
from smd.timeouts import InfrastructureProfile

__all__ = ["PROFILES", "DatabaseSettings", "plugin"]

# (No user:password@ in the example: a password there would be masked like any other.)
_URL_FORM = (
    "accepted: a URL like postgresql://user@host:5432/dbname (a password goes after 'user:')"
)


def _url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a database URL, never quoting it (it holds a password).

    The phase's own parser decides (the one every DSN goes through), so a URL
    that settings accept is one the phase can use; the message names the
    problem without the value.
    """
    scheme, sep, _ = url.strip().partition("://")
    if not sep or not scheme or not scheme[0].isalpha():
        return "not a URL"
    try:
        PostgresOptions.from_dsn(url).validate(environ={})
    except PostgresConfigError as exc:
        if exc.part == "port":
            return "a port is not a number from 1 to 65535"
        return str(exc).removeprefix("invalid DSN: ")
    return None


class DatabaseSettings(SettingsBase):
    """``SMD_DATABASE_URL``: the DSN :class:`~smd.phases.DatabasePhase` uses when given none.

    Unset, the phase uses libpq's variables (``PGHOST``, ``PGPORT``, ``PGUSER``,
    ``PGPASSWORD``, ``PGDATABASE``, ``PGCONNECT_TIMEOUT``...) as libpq does;
    set, they still fill what the URL leaves out (see :meth:`options`).
    """

    database_url: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr | None) -> SecretStr | None:
        # Caught here, a malformed URL stops before anything runs or is
        # recorded, like any other invalid setting.
        if v is None:
            return v
        # Known from now on: masked in every output, tracebacks included.
        for secret in PostgresOptions.from_dsn(v).secrets():
            register_secret(secret)
        problem = _url_problem(v.get_secret_value())
        if problem is not None:
            raise ValueError(f"{problem}; {_URL_FORM}")
        return v

    @classmethod
    def of(cls, settings: object) -> DatabaseSettings:
        """These settings out of loaded :class:`smd.Settings` (read afresh if they lack them)."""
        return settings if isinstance(settings, DatabaseSettings) else cls()

    def options(self, **parts: Any) -> PostgresOptions | None:
        """The options the database phase uses when given no DSN of its own.

        ``SMD_DATABASE_URL`` when set (libpq's variables fill its gaps); else
        libpq's variables alone when any of ``PGHOST``, ``PGPORT``, ``PGUSER``,
        ``PGPASSWORD``, ``PGDATABASE`` is set; else ``None`` (nothing says
        where the database is). ``parts`` are explicit overrides.
        """
        if self.database_url is not None:
            return PostgresOptions.from_dsn(self.database_url, **parts)
        if PostgresOptions.environment_configured():
            return PostgresOptions.from_environment(**parts)
        return None


#: Cold-start allowances for the paths between a service and its PostgreSQL,
#: selected with ``SMD_TIMEOUTS__PROFILE`` (an explicit input: never guessed).
#: Allowances chosen to cover the documented behaviour, not measurements.
PROFILES: tuple[InfrastructureProfile, ...] = (
    InfrastructureProfile(
        "cloudsql-connector",
        5.0,
        3.0,
        "Cloud SQL Auth Proxy or a language connector: the first connection fetches "
        "instance metadata and an ephemeral client certificate from the SQL Admin API "
        "(a few API round trips, slower when the API throttles).",
    ),
    InfrastructureProfile(
        "cloudsql-vpc-connector",
        10.0,
        5.0,
        "Cloud SQL reached from Cloud Run / Cloud Functions through a Serverless VPC "
        "Access connector: the connector's certificate fetch plus the first egress "
        "through a connector that may have scaled in.",
    ),
    InfrastructureProfile(
        "serverless-postgres",
        5.0,
        5.0,
        "A scale-to-zero PostgreSQL compute (e.g. Neon): the first connection wakes the "
        "compute, typically within a few seconds.",
    ),
    InfrastructureProfile(
        "aurora-serverless",
        30.0,
        30.0,
        "Aurora Serverless with auto-pause: a paused cluster resumes on the first "
        "connection, which is held open for tens of seconds meanwhile.",
    ),
    InfrastructureProfile(
        "proxy-sidecar",
        5.0,
        0.0,
        "A database proxy sidecar (cloud-sql-proxy, pgbouncer) starting in the same pod: "
        "connections are refused until it listens.",
    ),
)


#: What the database phase contributes to smd (entry point ``smd.plugins``:
#: ``database``): the ``SMD_DATABASE_URL`` setting and the cloud profiles. Here,
#: not in :mod:`smd.phases.database`: every command loads the plugins, and this
#: module does not import the PostgreSQL check.
plugin = Plugin("database", settings=(DatabaseSettings,), profiles=PROFILES)
