"""The fleet's settings, apart from its SQL: what every ``smd`` command loads.

The ``fleet`` plugin merges :class:`FleetSettings` into :class:`smd.Settings`
for every command (``smd plan`` included), so this module holds only the
settings and the checks of their values; the schema, the locks and the
store live in :mod:`smd.checks._pg_fleet` and its neighbours, imported only
by a command that talks to the fleet's database.
"""

from __future__ import annotations

import math
import re
from typing import Final

from pydantic import SecretStr, ValidationInfo, field_validator

from smd.checks._pg_options import PostgresConfigError, PostgresOptions
from smd.plugins import store_scheme
from smd.secrets import register_secret
from smd.settings import SettingsBase

__all__ = ["STORE_SCHEMES", "FleetSettings", "register_secret_parts", "valid_schema"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: The ``SMD_HISTORY_URL`` schemes the fleet's store serves (the ``stores`` the
#: fleet plugin registers, :mod:`smd.checks._plugins`); another scheme is
#: another plugin's store.
STORE_SCHEMES: Final = ("postgresql", "postgres")


def valid_schema(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier; ``ValueError`` otherwise."""
    # fullmatch: with match and "$", "smd\n" would pass ("$" also matches before a final newline).
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ValueError(
            f"invalid schema name {name!r}; accepted: lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name


class FleetSettings(SettingsBase):
    """The fleet's settings (merged into :class:`smd.Settings` by the ``fleet`` plugin).

    ``SMD_FLEET_URL``: the PostgreSQL that coordinates once-per-fleet phases
    (default: ``SMD_DATABASE_URL``). It must be a direct connection or a
    session-mode pool: session advisory locks do not work through a
    transaction-pooling proxy (pgbouncer ``pool_mode = transaction``).
    ``SMD_HISTORY_URL`` (a field of :class:`smd.Settings`), when it names this
    plugin's store (``postgresql://`` / ``postgres://``), is checked here as
    ``SMD_FLEET_URL`` is: a malformed DSN stops at settings load (exit 78)
    instead of leaving every run on the embedded store with a warning.
    ``SMD_HISTORY_SCHEMA``: the schema of the shared history and of the
    completion records (default ``smd``). ``SMD_HISTORY_READ_BUDGET`` and
    ``SMD_HISTORY_WRITE_BUDGET``: seconds one read (before the phases) or one
    write (after them) of the PostgreSQL history store may take, connecting
    included, before it gives up and the embedded store is used.
    """

    fleet_url: SecretStr | None = None
    history_schema: str = "smd"
    history_read_budget: float = 0.5
    history_write_budget: float = 2.0

    # history_url is the engine's field (the merged Settings holds it), so its
    # absence here is not an error; Settings itself refuses a scheme no plugin serves.
    @field_validator("fleet_url", "history_url", check_fields=False)
    @classmethod
    def _postgres_url(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is None:
            return v
        if info.field_name == "history_url" and (
            store_scheme(v.get_secret_value()) not in STORE_SCHEMES
        ):
            return v  # another plugin's store checks its own URL
        try:
            PostgresOptions.from_dsn(v).validate()
        except PostgresConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("history_schema")
    @classmethod
    def _schema(cls, v: str) -> str:
        return valid_schema(v)

    @field_validator("history_read_budget", "history_write_budget")
    @classmethod
    def _budget(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError("accepted: a positive finite number of seconds")
        return v

    @classmethod
    def of(cls, settings: object) -> FleetSettings:
        """These settings out of loaded :class:`smd.Settings` (read afresh if they lack them)."""
        return settings if isinstance(settings, FleetSettings) else cls()


def register_secret_parts(dsn: str) -> None:
    """Register every form of the password a DSN holds (so no output can show it)."""
    for secret in PostgresOptions.from_dsn(dsn).secrets():
        register_secret(secret)
