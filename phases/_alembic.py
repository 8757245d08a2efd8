"""Alembic for :class:`smd.phases.migrations.MigrationsPhase`: the revisions and the upgrade.

- :class:`Versions` reads the database's ``alembic_version.version_num``
  set with asyncpg and judges it against the image's script directory: at
  head, behind (infrastructure: someone is migrating), or at a revision the
  image does not know (configuration: the image is older than the database).
  It is a :class:`smd.retry.Check`, so waiting for head is the public retry
  helper's loop.
- :func:`script_info` and :func:`upgrade_head` call Alembic's synchronous
  API (run them in a worker thread); :func:`sqlalchemy_url` picks the sync
  driver Alembic's ``env.py`` connects with.

Alembic is imported only inside the functions that need it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Final

import anyio
from pydantic import SecretStr

from smd import Failure, FailureKind, PhaseError
from smd.checks.postgres import PostgresOptions, classify
from smd.retry import ProbeResult

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "Versions",
    "config_error",
    "plain_dsn",
    "script_info",
    "sqlalchemy_url",
    "table_name",
    "upgrade_head",
]

_DRIVERS: Final = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"))


def config_error(message: str) -> PhaseError:
    """A configuration failure (the phase cannot work as configured)."""
    return PhaseError(Failure(FailureKind.CONFIGURATION, message))


class Versions:
    """The database's Alembic revisions, judged against the image's (a :class:`smd.retry.Check`)."""

    def __init__(
        self, options: PostgresOptions, table: str, heads: frozenset[str], known: frozenset[str]
    ):
        self.options = options
        self.table = table
        self.heads = heads
        self.known = known
        self.current: tuple[str, ...] | None = None
        self.target = f"alembic:{options.target_key()}"

    async def read(self, attempt_seconds: float) -> tuple[str, ...] | None:
        """The revisions (``None``: no version table yet); raises what asyncpg raises."""
        import asyncpg
        from asyncpg.exceptions import InvalidSchemaNameError, UndefinedTableError

        with anyio.fail_after(attempt_seconds):
            conn = await asyncpg.connect(
                **self.options.connect_arguments(), timeout=attempt_seconds
            )
            try:
                try:
                    rows = await conn.fetch(f"SELECT version_num FROM {self.table}")
                except (UndefinedTableError, InvalidSchemaNameError):
                    return None
                return tuple(sorted(str(r[0]) for r in rows))
            finally:
                await conn.close()

    def verdict(self, current: tuple[str, ...] | None) -> Failure | None:
        """``None`` at head; else why not (behind: infrastructure; unknown: configuration)."""
        where = self.options.target_key()
        revisions = set(current or ())
        unknown = sorted(revisions - self.known)
        if unknown:
            return Failure(
                FailureKind.CONFIGURATION,
                f"the database ({where}) is at revision {', '.join(unknown)}, which this "
                "image's migrations do not know: the image is older than the database; deploy "
                "the image that has that revision (or downgrade the database)",
                code="unknown-revision",
            )
        if revisions == self.heads:
            return None
        at = ", ".join(sorted(revisions)) if revisions else "no revision"
        return Failure(
            FailureKind.INFRASTRUCTURE,
            f"the database ({where}) is behind this image's migrations: it is at {at}, the "
            f"image expects {', '.join(sorted(self.heads))}; another replica or a migration "
            "job is migrating it (if none is: MigrationsPhase(mode='upgrade') or a job running "
            "'alembic upgrade head')",
            code="behind",
        )

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        start = anyio.current_time()
        try:
            current = await self.read(attempt_seconds)
        except TimeoutError:
            end = anyio.current_time()
            failure = Failure(FailureKind.TIMEOUT, f"no answer from {self.options.target_key()}")
            return ProbeResult(False, failure, start=start, end=end, latency=end - start)
        except Exception as exc:
            end = anyio.current_time()
            failure = classify(
                exc, target=self.options.target_key(), secrets=self.options.secrets()
            )
            return ProbeResult(False, failure, start=start, end=end, latency=end - start)
        end = anyio.current_time()
        self.current = current
        problem = self.verdict(current)
        return ProbeResult(
            problem is None,
            problem,
            latency=end - start,
            answered=True,
            summary="at head",
            start=start,
            end=end,
        )


def table_name(table: str, schema: str | None) -> str:
    """The version table as a quoted SQL name (``ValueError`` for a name that is not plain)."""
    for part in (table, schema):
        if part is not None and not part.replace("_", "").isalnum():
            raise ValueError(f"invalid version table name {part!r}")
    return f'"{schema}"."{table}"' if schema else f'"{table}"'


def plain_dsn(url: SecretStr) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as a plain DSN asyncpg reads."""
    raw = url.get_secret_value().strip()
    scheme, sep, rest = raw.partition("://")
    return f"{scheme.partition('+')[0]}{sep}{rest}" if sep else raw


def sqlalchemy_url(url: str, driver: str | None) -> str:
    """The URL with a sync driver for Alembic (``postgresql+psycopg://``)."""
    scheme, _, rest = url.strip().partition("://")
    base, _, given = scheme.partition("+")
    chosen = driver or given
    if not chosen:
        chosen = next((name for mod, name in _DRIVERS if importlib.util.find_spec(mod)), "")
    if not chosen:
        raise config_error(
            "Alembic needs a synchronous PostgreSQL driver: pip install 'psycopg[binary]' "
            "(or psycopg2), or pass MigrationsPhase(driver=...)"
        )
    if base.lower() in ("postgres", "postgresql"):
        base = "postgresql"
    return f"{base}+{chosen}://{rest}"


def script_info(config: Config) -> tuple[frozenset[str], frozenset[str]]:
    """The script directory's heads and every revision it knows (file reads: a worker thread)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        script = ScriptDirectory.from_config(config)
        heads = frozenset(script.get_heads())
        known = frozenset(rev.revision for rev in script.walk_revisions())
    except CommandError as exc:
        raise config_error(f"the Alembic scripts cannot be read: {exc}") from None
    if not heads:
        raise config_error("the Alembic script directory has no revision")
    return heads, known


def upgrade_head(config: Config, url: str) -> None:
    """``alembic upgrade head`` (synchronous: runs in a worker thread)."""
    from alembic import command

    # configparser interpolation: a literal '%' (an escaped password) is '%%'.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
