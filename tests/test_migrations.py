"""MigrationsPhase with a real Alembic environment of three revisions (tests/alembic_env).

Every test gets a database of its own on the session cluster. Each revision
logs its own run in ``migration_runs`` (revision, pid), so "ran exactly
once, in one process" is read from the database itself.

- ``upgrade``: an empty database is brought to head; 8 concurrent
  ``smd run`` processes (a slow revision in the middle) apply each revision
  exactly once, all in one process, and all become ready; a database at head
  takes no lock and writes no completion record; a partly migrated one is
  finished;
- ``wait``: an empty or partly migrated database is an infrastructure
  failure once the deadline comes, naming where it is and what the image
  expects; a waiter becomes ready when another process finishes migrating;
- a revision the image does not know is a configuration failure at once,
  in both modes, also for a rolled-back image whose upgrade is recorded done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from pgbed.cluster import AppCredentials, PgCluster

from smd import (
    FailureKind,
    PhaseContext,
    Report,
    Startup,
    StartupFailed,
    load_settings,
    run_startup,
)
from smd.history import MemoryHistoryStore
from smd.phases.migrations import MigrationsPhase, MigrationState

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / "tests" / "alembic_env"
TARGET = str(ROOT / "tests" / "targets" / "fleet_migrate.py") + ":startup"
HEADS = ("r0003",)
# How long a test waits for another party to get somewhere (not a timing claim).
PATIENCE = 30.0


@pytest.fixture
def db(pg: PgCluster, pg_app: AppCredentials) -> str:
    name = f"mig_{time.time_ns() % 10**12}"
    pg.create_database(name, owner=pg_app.user)
    return name


@pytest.fixture
def dsn(pg: PgCluster, pg_app: AppCredentials, db: str) -> str:
    return pg.dsn(pg_app.user, pg_app.password, db)


def migration_runs(pg: PgCluster, db: str) -> list[tuple[str, str]]:
    out = pg.sql("SELECT revision, pid FROM migration_runs ORDER BY at, revision", database=db)
    return [(rev, pid) for rev, _, pid in (line.partition("|") for line in out.splitlines())]


def version(pg: PgCluster, db: str) -> str:
    if pg.sql("SELECT to_regclass('alembic_version') IS NULL", database=db) == "t":
        return ""
    return pg.sql("SELECT string_agg(version_num, ',') FROM alembic_version", database=db)


async def run(phase: MigrationsPhase, dsn: str) -> Report:
    startup = Startup("migrations_test")
    startup.add(phase)
    settings = load_settings(environment="test", history_enabled=False, database_url=dsn)
    try:
        return await run_startup(startup, settings=settings, store=MemoryHistoryStore())
    except StartupFailed as failed:
        return failed.report


def smd_run(tmp: Path, dsn: str, i: int, **env: str) -> subprocess.Popen[str]:
    full = {
        **os.environ,
        "SMD_DATABASE_URL": dsn,
        "SMD_ENVIRONMENT": "test",
        "SMD_LOG_FORMAT": "json",
        "SMD_HISTORY_PATH": str(tmp / f"history-{i}.sqlite3"),
        **env,
    }
    full.pop("SMD_FLEET_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smd", "run", TARGET],
        env=full,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def upgrade_to(dsn: str, revision: str, *, down: bool = False) -> None:
    """Migrate with Alembic itself (as a migration job, or an operator's downgrade, would)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ENV))
    config.set_main_option("sqlalchemy.url", dsn.replace("postgresql://", "postgresql+psycopg://"))
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_upgrade_brings_an_empty_database_to_head(pg: PgCluster, db: str, dsn: str) -> None:
    report = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert report.state.value == "ready", report.phases[0].failure
    assert version(pg, db) == "r0003"
    assert [rev for rev, _ in migration_runs(pg, db)] == ["r0001", "r0002", "r0003"]
    assert len({pid for _, pid in migration_runs(pg, db)}) == 1


@pytest.mark.slow
def test_eight_concurrent_replicas_apply_each_revision_exactly_once(
    pg: PgCluster, db: str, dsn: str, tmp_path: Path
) -> None:
    procs = [smd_run(tmp_path, dsn, i, SMDTEST_MIGRATION_SLEEP="1") for i in range(8)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[-1500:] for o in outs]
    assert version(pg, db) == "r0003"
    runs = migration_runs(pg, db)
    assert [rev for rev, _ in runs] == ["r0001", "r0002", "r0003"]
    (pid,) = {pid for _, pid in runs}
    assert int(pid) in {p.pid for p in procs}
    upgraded = [o for o in outs if '"smd.migrations.upgrading"' in o]
    assert len(upgraded) == 1
    # The one completion record names the replica that migrated.
    done_by = pg.sql("SELECT done_by FROM smd.once_done", database=db)
    assert done_by.endswith(f":{pid}")


async def test_at_head_upgrade_takes_no_lock_and_records_nothing(
    pg: PgCluster, db: str, dsn: str
) -> None:
    upgrade_to(dsn, "head")
    report = await run(MigrationsPhase(ENV, mode="upgrade", timeout=10), dsn)
    assert report.state.value == "ready"
    # The fleet coordinator was never asked: its schema was not even created.
    assert pg.sql("SELECT to_regnamespace('smd') IS NULL", database=db) == "t"
    assert len(migration_runs(pg, db)) == 3


async def test_upgrade_finishes_a_partly_migrated_database(
    pg: PgCluster, db: str, dsn: str
) -> None:
    upgrade_to(dsn, "r0001")
    report = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert report.state.value == "ready"
    assert [rev for rev, _ in migration_runs(pg, db)] == ["r0001", "r0002", "r0003"]
    assert version(pg, db) == "r0003"


@pytest.mark.parametrize("start", [None, "r0001"])
async def test_wait_on_a_database_behind_is_infrastructure_at_the_deadline(
    pg: PgCluster, db: str, dsn: str, start: str | None
) -> None:
    if start is not None:
        upgrade_to(dsn, start)
    report = await run(MigrationsPhase(ENV, mode="wait", timeout=1.5), dsn)
    failure = report.phases[0].failure
    assert failure is not None
    assert failure.kind is FailureKind.INFRASTRUCTURE
    assert failure.deadline_reached
    assert failure.code == "behind"
    # It waited: read the database again and again, behind every time, until
    # the deadline (the retry loop's own summary, not the runner's cut).
    attempts = report.phases[0].attempts
    assert len(attempts) >= 2
    assert [a.detail.get("code") for a in attempts] == ["behind"] * len(attempts)
    assert failure.attempts == len(attempts)
    assert failure.message.startswith(f"still failing after {len(attempts)} attempts over ")
    assert f"it is at {start or 'no revision'}, the image expects r0003" in failure.message
    assert version(pg, db) == (start or "")  # waiting never migrates


@pytest.mark.slow
def test_a_waiter_becomes_ready_when_another_replica_finishes_migrating(
    pg: PgCluster, db: str, dsn: str, tmp_path: Path
) -> None:
    migrator = smd_run(tmp_path, dsn, 0, SMDTEST_MIGRATION_SLEEP="3")
    waiter = smd_run(tmp_path, dsn, 1, SMDTEST_MIGRATIONS_MODE="wait")
    out_w = waiter.communicate(timeout=120)[0]
    out_m = migrator.communicate(timeout=120)[0]
    assert migrator.returncode == 0, out_m[-1500:]
    assert waiter.returncode == 0, out_w[-1500:]
    assert '"smd.migrations.at_head"' in out_w
    assert '"smd.migrations.upgrading"' not in out_w
    assert len(migration_runs(pg, db)) == 3


@pytest.mark.parametrize("mode", ["wait", "upgrade"])
async def test_a_revision_the_image_does_not_know_is_configuration_after_one_read(
    pg: PgCluster, db: str, dsn: str, mode: str
) -> None:
    upgrade_to(dsn, "head")
    pg.sql("UPDATE alembic_version SET version_num = 'f00dcafe'", database=db)
    phase = MigrationsPhase(ENV, mode="wait" if mode == "wait" else "upgrade", timeout=20)
    report = await run(phase, dsn)
    failure = report.phases[0].failure
    assert failure is not None
    assert failure.kind is FailureKind.CONFIGURATION
    assert failure.code == "unknown-revision"
    # No waiting for what waiting cannot fix: one read, no retry, the deadline not reached.
    assert len(report.phases[0].attempts) == 1
    assert failure.attempts == 1
    assert not failure.deadline_reached
    assert "f00dcafe" in failure.message
    assert "image is older than the database" in failure.message
    assert len(migration_runs(pg, db)) == 3
    assert pg.sql("SELECT to_regnamespace('smd') IS NULL", database=db) == "t"


async def test_a_rolled_back_image_fails_at_once_though_its_upgrade_is_recorded_done(
    pg: PgCluster, db: str, dsn: str
) -> None:
    # Why MigrationsPhase checks the database before the fleet's completion
    # record, in every replica, instead of being a plain once=True phase (whose
    # record would let this replica skip the phase): this image's upgrade ran
    # and was recorded; then a newer release migrated past it; this image
    # comes back (a rollback). Its record says done, the database says "newer
    # than you": that must be a configuration failure, at once.
    first = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert first.state.value == "ready"
    assert pg.sql("SELECT count(*) FROM smd.once_done", database=db) == "1"
    pg.sql("UPDATE alembic_version SET version_num = 'f00dcafe'", database=db)
    again = await run(MigrationsPhase(ENV, mode="upgrade", timeout=20), dsn)
    failure = again.phases[0].failure
    assert failure is not None
    assert (failure.kind, failure.code) == (FailureKind.CONFIGURATION, "unknown-revision")
    assert not failure.deadline_reached  # at once: the first read said so, no wait
    assert len(again.phases[0].attempts) == 1
    assert again.exit_code() == 78


async def test_a_database_downgraded_since_its_upgrade_was_recorded_is_upgraded_again(
    pg: PgCluster, db: str, dsn: str
) -> None:
    # The fleet's record says this image's upgrade is done; an operator then
    # rolled the schema back (or restored a backup). The database is the
    # truth: the record is forgotten and the upgrade runs again, once.
    first = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert first.state.value == "ready"
    assert pg.sql("SELECT count(*) FROM smd.once_done", database=db) == "1"
    upgrade_to(dsn, "r0001", down=True)
    assert version(pg, db) == "r0001"
    again = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert again.state.value == "ready", again.phases[0].failure
    assert version(pg, db) == "r0003"
    state = again.phases[0]
    assert state.outcome.value == "ok"
    # r0002 and r0003 ran a second time, r0001 did not: the upgrade went on from where it was.
    assert [rev for rev, _ in migration_runs(pg, db)] == [
        "r0001",
        "r0002",
        "r0003",
        "r0002",
        "r0003",
    ]
    assert pg.sql("SELECT count(*) FROM smd.once_done", database=db) == "1"  # recorded anew


async def test_a_newer_release_that_migrated_during_the_wait_is_not_upgraded_over(
    pg: PgCluster, db: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The newer release (heads r0003) holds the lock and migrates (r0002 is
    # slow). This older one (heads r0002) finds the database behind and waits
    # for the lock; under it, it reads the database again: now newer than
    # itself. "upgrade head" would fail inside Alembic (an application
    # failure); it is this image being older than the database: a
    # configuration failure, and it attempts no upgrade.
    monkeypatch.setenv("SMDTEST_MIGRATION_SLEEP", "1")
    reports: dict[str, Report] = {}
    held = (
        "SELECT count(*) FROM pg_locks AS l JOIN pg_database AS d ON d.oid = l.database "
        f"WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '{db}' "
        "AND l.objsubid = 1"  # a bigint key: the fleet lock, not the schema's (int, int) one
    )
    async with anyio.create_task_group() as tg:

        async def newer() -> None:
            reports["newer"] = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)

        tg.start_soon(newer)
        for _ in range(int(PATIENCE / 0.02)):  # until the newer release holds the lock
            if pg.sql(held, database=db) != "0":
                break
            await anyio.sleep(0.02)
        else:
            raise AssertionError("the newer release never took the fleet lock")
        older = MigrationsPhase(older_release(tmp_path), mode="upgrade", timeout=30)
        reports["older"] = await run(older, dsn)
    assert reports["newer"].state.value == "ready", reports["newer"].phases[0].failure
    report = reports["older"]
    failure = report.phases[0].failure
    assert failure is not None
    assert (failure.kind, failure.code) == (FailureKind.CONFIGURATION, "unknown-revision")
    assert report.exit_code() == 78
    # Each revision ran once, all in the newer release's upgrade.
    assert [rev for rev, _ in migration_runs(pg, db)] == ["r0001", "r0002", "r0003"]
    assert pg.sql("SELECT count(*) FROM smd.once_done", database=db) == "1"


def older_release(tmp_path: Path) -> Path:
    """The script directory of the release before this one: r0001 and r0002 (heads r0002)."""
    older = tmp_path / "older"
    (older / "versions").mkdir(parents=True)
    (older / "env.py").write_text(
        f"import runpy\nrunpy.run_path({str(ROOT / 'examples' / 'migrations' / 'env.py')!r})\n"
    )
    (older / "script.py.mako").write_text((ENV / "script.py.mako").read_text())
    for revision in ("r0001_items.py", "r0002_price.py"):
        (older / "versions" / revision).write_text((ENV / "versions" / revision).read_text())
    return older


async def test_the_next_release_upgrades_without_taking_the_last_ones_record_for_stale(
    pg: PgCluster, db: str, dsn: str, tmp_path: Path
) -> None:
    # Every release adds revisions: its upgrade is its own work, with its own
    # record. The previous release's record is not "stale" (that warning is
    # for a database rolled back under a record of the same heads).
    import structlog

    first = await run(MigrationsPhase(older_release(tmp_path), mode="upgrade", timeout=30), dsn)
    assert first.state.value == "ready"
    with structlog.testing.capture_logs() as logs:
        second = await run(MigrationsPhase(ENV, mode="upgrade", timeout=30), dsn)
    assert second.state.value == "ready", second.phases[0].failure
    assert [rev for rev, _ in migration_runs(pg, db)] == ["r0001", "r0002", "r0003"]
    events = [e["event"] for e in logs]
    assert "smd.migrations.upgrading" in events
    assert "smd.migrations.stale_record" not in events
    assert pg.sql("SELECT count(*) FROM smd.once_done", database=db) == "2"  # one per release


async def test_two_releases_starting_together_never_migrate_one_database_at_once(
    pg: PgCluster, db: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A canary (or a quick redeploy): replicas of the release before (heads
    # r0002) and of this one (r0003) start together on an empty database.
    # They share one lock per database, so the revisions run one at a time,
    # each exactly once, and the newer release ends at head, whichever got
    # the lock first.
    older = older_release(tmp_path)
    monkeypatch.setenv("SMDTEST_MIGRATION_SLEEP", "1")  # r0002 is slow: the two overlap
    reports: dict[str, Report] = {}
    async with anyio.create_task_group() as tg:
        for name, scripts in (("older", older), ("newer", ENV)):

            async def replica(name: str = name, scripts: Path = scripts) -> None:
                reports[name] = await run(MigrationsPhase(scripts, mode="upgrade", timeout=30), dsn)

            tg.start_soon(replica)
    assert [rev for rev, _ in migration_runs(pg, db)] == ["r0001", "r0002", "r0003"]
    assert version(pg, db) == "r0003"
    assert reports["newer"].state.value == "ready", reports["newer"].phases[0].failure
    # The older release is ready if it migrated first and saw its own head
    # before the newer one went on; else it finds the database newer than
    # itself. Never an Alembic error of two upgrades on one database.
    older_report = reports["older"]
    failure = older_report.phases[0].failure
    if failure is None:
        assert older_report.state.value == "ready"
    else:
        assert (failure.kind, failure.code) == (FailureKind.CONFIGURATION, "unknown-revision")


async def test_the_url_may_come_from_the_alembic_configuration(
    pg: PgCluster, db: str, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMD_DATABASE_URL", raising=False)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ENV))
    config.set_main_option(
        "sqlalchemy.url", dsn.replace("postgresql://", "postgresql+psycopg://").replace("%", "%%")
    )
    startup = Startup("from_config")
    startup.add(MigrationsPhase(config, mode="upgrade", timeout=30))
    settings = load_settings(environment="test", history_enabled=False)
    report = await run_startup(startup, settings=settings, store=MemoryHistoryStore())
    assert report.state.value == "ready"
    assert version(pg, db) == "r0003"


async def test_the_published_state_says_what_happened(pg: PgCluster, db: str, dsn: str) -> None:
    startup = Startup("state")
    startup.add(MigrationsPhase(ENV, mode="upgrade", timeout=30))
    seen: list[MigrationState] = []

    @startup.phase(requires=["migrations"])
    async def app(ctx: PhaseContext) -> None:
        seen.append(ctx.get("migrations", MigrationState))

    settings = load_settings(environment="test", history_enabled=False, database_url=dsn)
    await run_startup(startup, settings=settings, store=MemoryHistoryStore())
    (state,) = seen
    assert state.heads == HEADS
    assert state.current == HEADS
    assert state.upgraded is True
    assert state.done_by is None


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="accepted: wait, upgrade"):
        MigrationsPhase(ENV, mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid version table"):
        MigrationsPhase(ENV, version_table="alembic_version; DROP TABLE x")
