"""The database phase: wait until PostgreSQL is ready, then publish a way to use it.

``DatabasePhase`` composes :mod:`smd.checks.postgres` (the probe and its attempt
loop), a timeout policy (adaptive by default: it learns from this target's
history), and a bypass policy (the environment's default unless given). It
records the latency of every answered attempt; the phase runner records the
time to ready (or the censored sample of a wait its deadline ended) and asks
the bypass policy what a failure means.

The learned deadline reaches beyond startup: the :class:`Database` it
publishes bounds its own later connects (``db.connect()``, the pool's new
connections) by the learned per-attempt deadline, and records their
latencies into the same history, so the app's reconnects are bounded by what
this database really needs and teach the next start's deadline.

::

    startup = Startup("api")
    startup.add(DatabasePhase("postgresql://app:secret@db:5432/app", pool=True))

    @startup.phase(requires=["database"])
    async def cache(ctx):
        async with ctx["database"].pool.acquire() as conn: ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import SecretStr

from smd import Failure, FailureKind, InvalidPlan, Phase, PhaseContext, PhaseError
from smd.bypass import BypassPolicy
from smd.checks._pg_options import PostgresConfigError, PostgresOptions
from smd.phases._database_value import Database
from smd.phases._settings import DatabaseSettings
from smd.phases._waiting import WaitLog, wait_budget
from smd.timeouts import (
    AdaptiveTimeout,
    TimeoutDecision,
    TimeoutPolicy,
    attempt_split,
    phase_timeout,
)

if TYPE_CHECKING:
    import asyncpg

    from smd.retry import Backoff, CheckResult

# The connection stack (smd.checks.postgres: the probe, its retry loop, the
# classifier) is imported by run() and recover(), not here: an app module that
# declares a DatabasePhase is imported by `smd plan`, which never connects,
# and importing the stack there cost about 2 % of that command
# (benchmarks/cold_start.py --callgrind).

__all__ = ["Database", "DatabasePhase", "DatabaseSettings"]


# PostgreSQL's "too many connections" (sorry, too many clients already).
_NO_SLOT = "53300"
_BUSY_REASON = (
    "the server answers but has no free connection slot (53300): the learned deadline "
    "predicts a healthy start, not a wait for a slot, so the deadline without history applies"
)


def _busy_server_deadline(ctx: PhaseContext, result: CheckResult) -> float | None:
    """The deadline a learned one gives way to when the server was up but full, or ``None``.

    A learned deadline detects a dead database early; a server that answers
    53300 is alive, and during a connection storm (a fleet starting at once)
    waiting for a slot takes longer than any healthy start it learned from.
    Failing then would restart the replica into the same storm. So when the
    wait ran out of time on 53300, the phase gets the deadline it would have
    had with no history (the environment's default), once: a server that
    stays full that long fails the phase as before.
    """
    failure = result.failure
    if result.ok or failure is None or failure.code != _NO_SLOT or not failure.deadline_reached:
        return None
    if ctx.timeout.source != "adaptive":
        return None  # a fixed or default deadline is what the user asked for
    no_data = ctx.timeout.details.get("no_data")
    if not isinstance(no_data, int | float) or no_data <= ctx.timeout.seconds:
        return None
    return float(no_data)


def _later_attempt_seconds(decision: TimeoutDecision) -> float | None:
    """The per-attempt deadline a decision gives the connects after startup."""
    learned = decision.attempt_seconds
    if learned is not None and math.isfinite(learned) and learned > 0:
        return float(learned)
    seconds = attempt_split(decision.seconds)
    return seconds if math.isfinite(seconds) and seconds > 0 else None


class DatabasePhase:
    """A ready-made phase that waits for PostgreSQL.

    ``options_or_dsn`` is :class:`~smd.checks.postgres.PostgresOptions`, a DSN
    (``str`` or ``SecretStr``), or ``None`` to read ``settings.database_url``
    (``SMD_DATABASE_URL``) at run time. ``timeout`` is seconds, a timeout
    policy, or ``None`` for the adaptive policy. ``bypass=None`` uses the
    environment's bypass matrix. With ``pool=True`` the published
    :class:`Database` carries an asyncpg pool (``pool_kwargs`` go to
    :func:`asyncpg.create_pool`), closed at teardown.

    The per-attempt deadline (``attempt_seconds=``, else the one the timeout
    policy learned, ``ctx.timeout.attempt_seconds``) bounds each probe while
    the phase waits, and afterwards every connect of the published
    :class:`Database`: ``db.connect()``, the pool's connection ``timeout``
    (its first connections and the reconnects it makes while the service
    runs). Those connects' latencies go into the same history as the
    probes' (``attempt`` samples), so a database that got slower gets a
    longer deadline, and a longer pool timeout, at the next start.

    A learned deadline that runs out while PostgreSQL answers 53300 ("too
    many connections": up, but full) gives way, once, to the deadline the
    phase would have had without history (``smd.database.deadline_extended``
    is logged; the report's deadline source says so): a connection storm is
    waited out instead of failing the replica into it. A fixed ``timeout``
    is kept.
    """

    def __init__(
        self,
        options_or_dsn: PostgresOptions | str | SecretStr | None = None,
        *,
        name: str = "database",
        requires: Iterable[str] = (),
        timeout: TimeoutPolicy | float | None = None,
        bypass: BypassPolicy | None = None,
        essential: bool = False,
        pool: bool = False,
        pool_kwargs: Mapping[str, Any] | None = None,
        settings_dsn: bool = True,
        attempt_seconds: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if options_or_dsn is None and not settings_dsn:
            raise ValueError(
                f"DatabasePhase {name!r}: give a DSN or PostgresOptions, or allow settings_dsn "
                "to read SMD_DATABASE_URL"
            )
        try:
            if isinstance(options_or_dsn, PostgresOptions) or options_or_dsn is None:
                self.options = options_or_dsn
            else:
                self.options = PostgresOptions.from_dsn(options_or_dsn)
            if self.options is not None:
                # A DSN written in code is wrong at import, not at the first run.
                self.options.validate()
        except PostgresConfigError as exc:
            raise InvalidPlan(f"phase {name!r}: {exc}") from None
        if attempt_seconds is not None and not (
            math.isfinite(attempt_seconds) and attempt_seconds > 0
        ):
            raise ValueError(
                f"attempt_seconds must be positive and finite, got {attempt_seconds!r}"
            )
        self.name = name
        self.requires = tuple(requires)
        self.timeout: TimeoutPolicy | float | None = (
            AdaptiveTimeout() if timeout is None else timeout
        )
        self.bypass = bypass
        self.essential = essential
        self.pool = pool
        self.pool_kwargs = dict(pool_kwargs or {})
        self.attempt_seconds = attempt_seconds
        self.backoff = backoff

    # -- the Phase -----------------------------------------------------------

    def to_phase(self) -> Phase:
        """The :class:`smd.Phase` to add to a startup (``startup.add(self)`` calls it)."""
        return Phase(
            name=self.name,
            run=self.run,
            requires=self.requires,
            timeout=self.timeout,
            essential=self.essential,
            bypass=self.bypass,
            teardown=self.teardown,
            # A DSN from settings is only known once settings are loaded:
            # the runner asks for the target then.
            target=self.options.target_key() if self.options is not None else self._settings_target,
            recovery=self.recover,
            description="wait until PostgreSQL accepts connections and answers SELECT 1",
        )

    def _settings_target(self, settings: Any) -> str | None:
        try:
            options = DatabaseSettings.of(settings).options()
            return options.target_key() if options is not None else None
        except Exception:  # an invalid DSN fails at run time, with its own message
            return None

    def resolve_options(self, ctx: PhaseContext) -> PostgresOptions:
        """The options to use: the ones given, else ``SMD_DATABASE_URL``, else (as
        libpq does) the ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``/``PGDATABASE``
        variables."""
        if self.options is not None:
            return self.options
        options = DatabaseSettings.of(ctx.settings).options()
        if options is None:
            raise PhaseError(
                Failure(
                    FailureKind.CONFIGURATION,
                    f"phase {self.name!r} has no database URL: pass a DSN to DatabasePhase, "
                    "set SMD_DATABASE_URL, or set PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE",
                )
            )
        return options

    def _attempt_seconds(self, ctx: PhaseContext, budget: float) -> float:
        if self.attempt_seconds is not None:
            return self.attempt_seconds
        learned = ctx.timeout.attempt_seconds
        # smd.timeouts.phase_timeout sets it (learned, or the split of the
        # deadline `smd plan` prints). A decision that lets one attempt use
        # the whole deadline has no opinion: split what is left, so that a
        # silent server that comes back within the deadline is still caught.
        if learned is not None and 0 < learned < ctx.timeout.seconds:
            return float(learned)
        return attempt_split(budget)

    async def run(self, ctx: PhaseContext) -> Database:
        """Wait for the database inside the phase's deadline; raise ``PhaseError`` if not."""
        from smd.checks.postgres import PostgresCheck

        options = self.resolve_options(ctx)
        budget = wait_budget(ctx)
        per_attempt = self._attempt_seconds(ctx, budget)
        wait = WaitLog(ctx, "smd.database")
        wait.waiting(budget, per_attempt, target=options.target_key(), dsn=options.redacted())
        check = PostgresCheck(options)

        async def wait_for(seconds: float) -> CheckResult:
            return await check.wait_ready(
                deadline_seconds=seconds,
                attempt_seconds=per_attempt,
                on_attempt=wait.on_attempt,
                history=ctx.history,
                backoff=self.backoff,
            )

        result = await wait_for(budget)
        unlearned = _busy_server_deadline(ctx, result)
        if unlearned is not None:
            # Up, but out of connection slots: wait for one, as a replica
            # that had learned nothing would have (when the run can move the
            # deadline: a hand-built context has no runner to move it).
            before = ctx.deadline
            ctx.extend_deadline(unlearned, _BUSY_REASON)
            if ctx.deadline > before:
                ctx.log.info(
                    "smd.database.deadline_extended",
                    target=options.target_key(),
                    deadline=round(unlearned, 6),
                    left=round(ctx.remaining(), 3),
                    reason=_BUSY_REASON,
                )
                result = await wait_for(wait_budget(ctx))
        wait.finished(result)
        database = self._database(options, ctx, ctx.timeout, check=result)
        if self.pool:
            database.pool = await self._open_pool(database, ctx)
        return database

    def _database(
        self,
        options: PostgresOptions,
        ctx: PhaseContext,
        decision: TimeoutDecision,
        *,
        check: CheckResult | None = None,
    ) -> Database:
        """The published database: later connects bounded by ``decision``'s
        per-attempt deadline (or this phase's ``attempt_seconds``) and
        recorded into the phase's history."""
        seconds = self.attempt_seconds
        if seconds is None:
            seconds = _later_attempt_seconds(decision)
        return Database(
            options, check=check, attempt_seconds=seconds, history=ctx.history, clock=ctx.clock
        )

    async def _open_pool(self, database: Database, ctx: PhaseContext) -> asyncpg.Pool:
        kwargs: dict[str, Any] = {"min_size": 1, "max_size": 10}
        kwargs.update(self.pool_kwargs)
        pool = database.create_pool(**kwargs)
        try:
            with anyio.fail_after(max(0.001, ctx.remaining())):
                await pool
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def teardown(self, database: Database) -> None:
        """Close what the phase opened (the pool)."""
        if isinstance(database, Database):
            await database.close()

    async def recover(self, ctx: PhaseContext) -> Database:
        """One probe for the background recovery of a bypassed phase.

        Raises ``PhaseError`` while the database is not ready (smd's
        readiness loop spaces the probes out). On success it returns a
        :class:`Database` that later code may use (with its pool when
        ``pool=True``), bounded by the per-attempt deadline the phase's
        policy computes from the history now and recording into it, like the
        one a ready phase publishes; smd publishes it and closes it at shutdown.
        """
        from smd.checks.postgres import probe

        options = self.resolve_options(ctx)
        seconds = min(max(0.001, ctx.remaining()), self._attempt_seconds(ctx, ctx.remaining()))
        result = await probe(options, attempt_seconds=seconds)
        if result.answered:
            ctx.history.record_attempt(result.latency)
        detail: dict[str, Any] = {"latency": round(result.latency, 6), "recovery": True}
        if result.failure is not None:
            detail.update(kind=result.failure.kind.value, code=result.failure.code)
        ctx.record_attempt(result.start, result.end, result.ok, **detail)
        if not result.ok:
            assert result.failure is not None
            raise PhaseError(result.failure)
        # smd publishes what a recovery probe returns and tears it down at
        # shutdown, so a recovered database gets its pool like a ready one,
        # and the per-attempt deadline the phase's policy learned (the
        # recovery context's own deadline is the probe's, not the database's).
        learned = phase_timeout(ctx.phase.timeout_policy(), ctx.history, ctx.settings)
        database = self._database(options, ctx, learned)
        if self.pool:
            database.pool = await self._open_pool(database, ctx)
        return database

    def __repr__(self) -> str:
        where = self.options.redacted() if self.options is not None else "settings.database_url"
        return f"DatabasePhase({self.name!r}, {where!r})"
