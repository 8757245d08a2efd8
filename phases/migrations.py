"""Alembic migrations at boot: wait until the schema is at head, or bring it there once per fleet.

``MigrationsPhase`` needs Alembic (``pip install 'smd-startup[alembic]'``),
imported only when the phase runs::

    startup.add(DatabasePhase())
    startup.add(MigrationsPhase("migrations/", mode="upgrade", requires=["database"], timeout=300))

- ``mode="wait"`` (the default) waits until the set of revisions in the
  database's ``alembic_version.version_num`` equals the heads of the image's
  script directory. Behind (or no table yet) is an **infrastructure** failure
  while it lasts: another replica or a migration job is migrating, so waiting
  helps. A revision the image does not know is a **configuration** failure at
  once: the image is older than the database, and no wait will fix that.
- ``mode="upgrade"`` skips everything when the database is already at head
  (no lock taken); otherwise it runs ``alembic upgrade head`` in exactly one
  replica of the fleet at a time, under the fleet coordinator's session
  advisory lock (:class:`smd.checks.postgres_fleet.AdvisoryLockCoordinator`
  on ``SMD_FLEET_URL``, by default the database being migrated), then
  verifies that the database is at head.

The phase is not declared ``once=True``, on purpose: a ``once=True`` phase
is skipped by every replica that finds its completion record, so nothing
would check the database. Here every replica reads ``alembic_version``
first -- at head, no lock at all; at a revision the image does not know, a
configuration failure at once, even when this image's upgrade is recorded
done (a rollback onto a database a newer release migrated) -- and every
replica publishes a :class:`MigrationState` to the phases that require it.
Only the upgrade itself runs through the coordinator, with the same
completion records (``<SMD_HISTORY_SCHEMA>.once_done``) as ``once=True``
phases; the module that does the Alembic work is :mod:`smd.phases._alembic`.
Each set of heads has its own record, and one lock per database and
version table serves them all: two releases never migrate one database at
the same time. The database stays the truth: a record of these heads it
contradicts (recorded done, the database behind again: downgraded, or
restored from a backup, since) is forgotten (``smd.migrations.stale_record``
is logged) and the upgrade runs again, once per fleet; and the upgrade runs
only from a revision behind the image's heads, never from one it does not
know (a newer release migrated the database while this replica waited: a
configuration failure).

Alembic's API is synchronous: it runs in a worker thread, through the sync
driver the environment's ``env.py`` uses (``postgresql+psycopg`` or
``postgresql+psycopg2`` is chosen for a plain ``postgresql://`` URL,
whichever is installed; ``driver=`` picks one). An upgrade is never
abandoned half-way: past the phase's deadline the phase waits for Alembic to
finish (still holding the lock, so no other replica starts the same DDL) and
then fails as a timeout. Reading ``alembic_version`` uses asyncpg.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
from pydantic import SecretStr

from smd import Phase, PhaseContext, PhaseError
from smd.bypass import BypassPolicy
from smd.checks.postgres import PostgresOptions, classify
from smd.checks.postgres_fleet import AdvisoryLockCoordinator, FleetSettings
from smd.phases._alembic import (
    Versions,
    config_error,
    plain_dsn,
    script_info,
    sqlalchemy_url,
    table_name,
    upgrade_head,
)
from smd.phases._settings import DatabaseSettings
from smd.phases._waiting import wait_budget
from smd.plugins import Coordinator, OnceOutcome
from smd.retry import Backoff, wait_ready
from smd.secrets import register_secret
from smd.timeouts import TimeoutPolicy

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["MigrationState", "MigrationsPhase"]

Mode = Literal["wait", "upgrade"]
_MODES = ("wait", "upgrade")


@dataclass(frozen=True, slots=True)
class MigrationState:
    """What the migrations phase found and did (the value it publishes).

    ``heads``: the image's heads; ``current``: the database's revisions when
    the phase ended; ``upgraded``: this replica ran ``upgrade head``;
    ``done_by`` / ``done_at``: the replica that did, when another one did.
    """

    heads: tuple[str, ...]
    current: tuple[str, ...]
    upgraded: bool = False
    done_by: str | None = None
    done_at: float | None = None


class MigrationsPhase:
    """A ready-made phase for Alembic migrations; see the module docstring.

    ``config_or_script_location``: an ``alembic.ini`` path, a script
    directory, or an :class:`alembic.config.Config`. ``url``: the database
    (default ``SMD_DATABASE_URL``, else the config's ``sqlalchemy.url``).
    ``coordinator``: who decides which replica upgrades (default: the fleet
    coordinator on ``SMD_FLEET_URL``, else on ``url``). ``once_key`` names the
    work's completion record (default: the database and the heads, so each
    new set of revisions is applied once); the lock is one per database and
    version table whatever the key, so that two releases never migrate one
    database at once. The phase is
    ``essential`` by default: a service must not run on the wrong schema.
    """

    def __init__(
        self,
        config_or_script_location: str | Path | Config,
        *,
        mode: Mode = "wait",
        url: str | SecretStr | None = None,
        name: str = "migrations",
        requires: Iterable[str] = (),
        timeout: TimeoutPolicy | float | None = None,
        bypass: BypassPolicy | None = None,
        essential: bool = True,
        once_key: str | None = None,
        coordinator: Coordinator | None = None,
        version_table: str = "alembic_version",
        version_table_schema: str | None = None,
        driver: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(_MODES)}")
        self.source = config_or_script_location
        self.mode: Mode = mode
        self.url = SecretStr(url) if isinstance(url, str) else url
        self.name = name
        self.requires = tuple(requires)
        self.timeout = timeout
        self.bypass = bypass
        self.essential = essential
        self.once_key = once_key
        self.coordinator = coordinator
        self.table = table_name(version_table, version_table_schema)
        self.driver = driver
        self.backoff = backoff

    def to_phase(self) -> Phase:
        """The :class:`smd.Phase` to add to a startup (``startup.add(self)`` calls it)."""
        what = (
            "bring the schema to head once per fleet"
            if self.mode == "upgrade"
            else "wait until the schema is at head"
        )
        return Phase(
            name=self.name,
            run=self.run,
            requires=self.requires,
            timeout=self.timeout,
            essential=self.essential,
            bypass=self.bypass,
            description=f"Alembic migrations: {what}",
        )

    # -- running --------------------------------------------------------------------

    async def run(self, ctx: PhaseContext) -> MigrationState:
        """Wait for (or apply) the migrations inside the phase's deadline."""
        # Importing Alembic (and SQLAlchemy) takes a good half second: not on the event loop.
        config = await anyio.to_thread.run_sync(self._config)
        url = self._url(ctx, config)
        options = PostgresOptions.from_dsn(plain_dsn(url))
        for secret in options.secrets():
            register_secret(secret)
        heads, known = await anyio.to_thread.run_sync(script_info, config)
        versions = Versions(options, self.table, heads, known)
        if self.mode == "upgrade":
            return await self._upgrade(ctx, config, url, versions)
        return await self._wait(ctx, versions, upgraded=False)

    async def _wait(
        self,
        ctx: PhaseContext,
        versions: Versions,
        *,
        upgraded: bool,
        done_by: str | None = None,
        done_at: float | None = None,
    ) -> MigrationState:
        result = await wait_ready(
            versions,
            deadline_seconds=wait_budget(ctx),
            attempt_seconds=min(5.0, max(0.5, wait_budget(ctx) / 4)),
            on_attempt=ctx.record_attempt,
            history=ctx.history,
            backoff=self.backoff or Backoff(initial=0.1, multiplier=2.0, cap=1.0),
        )
        if not result.ok:
            assert result.failure is not None
            raise PhaseError(result.failure)
        ctx.log.info(
            "smd.migrations.at_head",
            heads=sorted(versions.heads),
            upgraded=upgraded,
            done_by=done_by,
        )
        return MigrationState(
            tuple(sorted(versions.heads)),
            versions.current or (),
            upgraded=upgraded,
            done_by=done_by,
            done_at=done_at,
        )

    async def _upgrade(
        self, ctx: PhaseContext, config: Config, url: SecretStr, versions: Versions
    ) -> MigrationState:
        # The fast path: a database at head needs no lock (and no connection of the fleet's).
        first = await wait_ready(
            versions,
            deadline_seconds=wait_budget(ctx),
            attempt_seconds=min(5.0, max(0.5, wait_budget(ctx) / 4)),
            on_attempt=ctx.record_attempt,
            retry=lambda f: f.kind.may_heal and f.code != "behind",
        )
        if first.ok:
            return await self._wait(ctx, versions, upgraded=False)
        assert first.failure is not None
        if first.failure.code != "behind":
            raise PhaseError(first.failure)
        coordinator = self.coordinator or _fleet(ctx, SecretStr(plain_dsn(url)))
        # The record per set of heads (each release's upgrade is its own
        # work), the lock per database and version table: two releases
        # starting together (a canary, a quick redeploy) must never run DDL on
        # one database at the same time.
        where = f"alembic:{versions.options.target_key()}/{self.table}"
        key = self.once_key or f"{where}@{'+'.join(sorted(versions.heads))}"
        sa_url = sqlalchemy_url(url.get_secret_value(), self.driver)
        ran = {"upgraded": False}

        async def work() -> None:
            # Under the lock: the replica before us may have migrated already.
            try:
                current = await versions.read(max(0.5, wait_budget(ctx)))
            except Exception as exc:
                opts = versions.options
                failure = classify(exc, target=opts.target_key(), secrets=opts.secrets())
                raise PhaseError(failure) from None
            verdict = versions.verdict(current)
            if verdict is None:
                return
            if verdict.code != "behind":
                # Migrated past this image while we waited (a newer release):
                # upgrading would fail in Alembic; say what it is.
                raise PhaseError(verdict)
            ctx.log.info("smd.migrations.upgrading", heads=sorted(versions.heads))
            await anyio.to_thread.run_sync(upgrade_head, config, sa_url)
            ran["upgraded"] = True

        def left() -> float:
            return max(0.001, ctx.remaining())

        async def upgrade_once() -> OnceOutcome:
            return await coordinator.run_once(key, work, deadline_seconds=left(), lock_key=where)

        outcome = await upgrade_once()
        if not outcome.ran and await self._still_behind(ctx, versions):
            # The fleet's record says done, the database says behind: it was
            # downgraded or restored since. The database is the truth; the
            # work checks it again under the lock, so forgetting a record
            # another replica just wrote costs only that check.
            ctx.log.warning(
                "smd.migrations.stale_record",
                key=key,
                done_by=outcome.done_by,
                done_at=outcome.done_at,
            )
            await coordinator.forget(key, deadline_seconds=left())
            outcome = await upgrade_once()
        if not outcome.ran:
            ctx.log.info(
                "smd.migrations.done_elsewhere", done_by=outcome.done_by, done_at=outcome.done_at
            )
        return await self._wait(
            ctx,
            versions,
            upgraded=ran["upgraded"],
            done_by=outcome.done_by,
            done_at=outcome.done_at,
        )

    async def _still_behind(self, ctx: PhaseContext, versions: Versions) -> bool:
        """Whether the database is behind this image's heads now (one read; unreadable: no)."""
        try:
            current = await versions.read(max(0.5, min(5.0, wait_budget(ctx))))
        except Exception:
            return False  # the wait after this says what is wrong, classified
        verdict = versions.verdict(current)
        return verdict is not None and verdict.code == "behind"

    # -- configuration ----------------------------------------------------------------

    def _config(self) -> Config:
        try:
            from alembic.config import Config
        except ImportError:
            raise config_error(
                f"phase {self.name!r} needs Alembic: pip install 'smd-startup[alembic]'"
            ) from None
        if isinstance(self.source, Config):
            return self.source
        path = Path(self.source)
        if path.is_file():
            return Config(str(path))
        if path.is_dir():
            config = Config()
            config.set_main_option("script_location", str(path))
            return config
        raise config_error(
            f"phase {self.name!r}: {str(path)!r} is neither an alembic.ini file nor a "
            "migration script directory"
        )

    def _url(self, ctx: PhaseContext, config: Config) -> SecretStr:
        if self.url is not None:
            return self.url
        from_settings = DatabaseSettings.of(ctx.settings).database_url
        if from_settings is not None:
            return from_settings
        from_config = config.get_main_option("sqlalchemy.url")
        if from_config:
            return SecretStr(from_config)
        raise config_error(
            f"phase {self.name!r} has no database URL: pass url=, set SMD_DATABASE_URL, "
            "or set sqlalchemy.url in the Alembic configuration"
        )

    def __repr__(self) -> str:
        return f"MigrationsPhase({str(self.source)!r}, mode={self.mode!r})"


def _fleet(ctx: PhaseContext, url: SecretStr) -> Coordinator:
    fleet = FleetSettings.of(ctx.settings)
    return AdvisoryLockCoordinator(fleet.fleet_url or url, schema=fleet.history_schema)
