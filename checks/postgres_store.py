"""A history store in PostgreSQL, shared by every replica of a fleet (``SMD_HISTORY_URL``).

One schema (default ``smd``, ``SMD_HISTORY_SCHEMA``) holds every sample of
every target and what is known about each target::

    samples(id, target, series, at, seconds, censored, kind)     -- (target, series, at, id)
    targets(target, startup, dependency, environment, phase, policy, updated_at)
    schema_version(version, applied_at)
    append_samples(...)                                          -- one write, one round trip

Guarantees, and how they are kept:

- **Created once, versioned.** The first call of the first replica creates
  the schema in one transaction under ``pg_advisory_xact_lock``; the others
  wait for it and find it made. A schema of a newer version is never touched.
- **Bounded, safe under hundreds of concurrent writers.** A write is one
  statement, a call of the schema's ``append_samples`` function, so it is one
  transaction and one round trip: it upserts the ``targets`` rows of its
  targets in sorted order (a row lock each, so writers of one target queue and
  writers of different targets never deadlock), then inserts and trims each
  ``(target, series)`` to its newest ``bound`` samples. Read committed gives
  each statement in the function a fresh snapshot, so the trim sees every
  sample the writers before it committed: the bound holds exactly and no
  sample within it is lost. The locks are held only while the server runs
  the function, never across client round trips: a writer descheduled
  mid-transaction would otherwise stall every writer of its targets.
- **Never noticeably delays startup.** Every call runs under a time budget
  that covers all of it: waiting for the store's connection, connecting
  (retried with jitter while the server is out of slots, 53300), creating the
  schema, the statements. Reads (before the phases) get
  ``read_budget`` = 0.5 s by default: a healthy server answers a connect and
  one indexed ``SELECT`` in milliseconds, even across a region; half a second is
  ten times that and still below every learned deadline's floor, so a store
  that is slow or gone costs a start at most that. Writes (after the phases,
  off the readiness path) get ``write_budget`` = 2 s, enough for a transaction
  that queues behind a few hundred writers of the same target. Past its
  budget, or when the server is unreachable, refuses, or the schema is
  unusable, a call raises :class:`smd.exceptions.StoreUnavailable` (the
  message names the server, never a secret) and smd uses the embedded store.
- **No secret stored.** Keys and target metadata are what the engine gives:
  ``postgres://host:port/db``, never a user or password.

The protocol is synchronous (the engine calls stores from a worker thread):
each store runs asyncpg on a private event loop in a daemon thread, with one
connection that calls share one at a time (:mod:`smd.checks._pg_loop`; the
statements are in :mod:`smd.checks._pg_history_sql`). By default the connection is
closed after each call (``keep_open=0``): a replica reads once before its
phases and writes once after them, and a connection kept between the two
would hold one of the server's ``max_connections`` slots per replica for
the whole start -- 200 replicas, 200 slots, for nothing. ``keep_open=S``
keeps it for ``S`` idle seconds, for a caller that makes many calls in a row
(smd itself never does: ``smd history`` commands also connect per call); a
kept connection that was lost (broken, or its session ended by the server)
is replaced once, transparently. No named prepared
statements are used, so the store also works through a transaction-pooling
proxy (pgbouncer); the fleet coordinator does not (see
:mod:`smd.checks.postgres_fleet`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import SecretStr

from smd.checks._pg_classify import classify
from smd.checks._pg_fleet import (
    SCHEMA_VERSION,
    FleetSettings,
    SchemaError,
    connect,
    ensure_schema,
    register_secret_parts,
    schema_version,
    storm_code,
    valid_schema,
)
from smd.checks._pg_history_sql import (
    read_samples,
    read_targets,
    target_info,
    write_samples,
)
from smd.checks._pg_loop import BudgetExceeded, LoopWorker
from smd.checks._pg_options import PostgresConfigError, PostgresOptions, scrub
from smd.exceptions import StoreUnavailable
from smd.history import (
    MemoryHistoryStore,
    TargetInfo,
    sample_from_row,
    storable_batches,
    with_memory,
)
from smd.timeouts import Sample, TimingHistory

if TYPE_CHECKING:
    import asyncpg

    from smd.clock import Clock

__all__ = ["DEFAULT_READ_BUDGET", "DEFAULT_WRITE_BUDGET", "PostgresHistoryStore", "open_store"]

DEFAULT_READ_BUDGET: Final = 0.5
DEFAULT_WRITE_BUDGET: Final = 2.0
_DEFAULT_BOUND: Final = 256
_RETRY_WRITE: Final = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_MISSING: Final = frozenset({"42P01", "3F000"})  # table, schema dropped under us

_T = TypeVar("_T")
Op = Callable[["asyncpg.Connection"], Awaitable[_T]]


class PostgresHistoryStore:
    """A :class:`~smd.history.HistoryStore` in PostgreSQL; see the module docstring.

    ``url`` is a ``postgresql://`` DSN (``str`` or ``SecretStr``) or
    :class:`~smd.checks.postgres.PostgresOptions`. ``bound`` samples are kept
    per target and series. ``read_budget`` / ``write_budget``: seconds a
    read or a write may take in all. ``readonly=True`` never creates the
    schema or writes (appended samples live in memory for this instance).
    Raises :class:`~smd.exceptions.StoreUnavailable` from the protocol's
    methods when the store cannot serve within its budget. :meth:`close` (or
    ``with``) stops its thread; so does garbage collection.
    """

    def __init__(
        self,
        url: str | SecretStr | PostgresOptions,
        *,
        schema: str = "smd",
        bound: int = _DEFAULT_BOUND,
        read_budget: float = DEFAULT_READ_BUDGET,
        write_budget: float = DEFAULT_WRITE_BUDGET,
        keep_open: float = 0.0,
        readonly: bool = False,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.bound = bound
        # What readonly mode appends: kept for the life of this instance only.
        self._memory = MemoryHistoryStore(bound)
        for name, value in (("read_budget", read_budget), ("write_budget", write_budget)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds")
        if not (math.isfinite(keep_open) and keep_open >= 0):
            raise ValueError("keep_open must be a finite number of seconds >= 0")
        self.options = url if isinstance(url, PostgresOptions) else PostgresOptions.from_dsn(url)
        try:
            self.options.validate()
        except PostgresConfigError as exc:
            raise ValueError(f"PostgreSQL history store: {exc}") from None
        raw = self.options.dsn
        if isinstance(raw, SecretStr):
            register_secret_parts(raw.get_secret_value())
        self.schema = valid_schema(schema)
        self.read_budget = float(read_budget)
        self.write_budget = float(write_budget)
        self.keep_open = float(keep_open)
        self.readonly = readonly
        self.where = f"PostgreSQL history store {self.options.target_key()} (schema {schema})"
        self._worker: LoopWorker | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresHistoryStore({self.options.redacted()!r}, schema={self.schema!r})"

    def __enter__(self) -> PostgresHistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the private thread (a later call starts them again)."""
        with self._start_lock:
            if self._finalizer is not None:
                self._finalizer()
            self._worker = self._finalizer = None

    # -- the protocol ---------------------------------------------------------------

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        """The histories of ``targets`` in one query (within the read budget)."""
        names = list(dict.fromkeys(targets))
        if not names:
            return {}
        rows = self._call(lambda c: self._read(c, names), self.read_budget, "read")
        found: dict[str, list[Sample]] = {}
        for row in rows:
            sample = sample_from_row(
                row["series"], row["at"], row["seconds"], row["censored"], row["kind"]
            )
            if sample is not None:
                found.setdefault(str(row["target"]), []).append(sample)
        return with_memory(names, found, self._memory, bound=self.bound, clock=clock)

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        """Add samples of several targets in one transaction (within the write budget)."""
        rows, meta = storable_batches(batches, info)
        if not rows:
            return
        if self.readonly:
            self._memory.append_many(rows, meta)
            return
        self._call(lambda c: self._write(c, rows, meta), self.write_budget, "write")

    def targets(self) -> dict[str, TargetInfo]:
        """Every target with at least one sample, sorted (within the read budget)."""
        rows = self._call(self._read_targets, self.read_budget, "read")
        found = {str(r["target"]): target_info(r) for r in rows}
        for target, meta in self._memory.targets().items():
            found.setdefault(target, meta)
        return dict(sorted(found.items()))

    def load(self, target: str, *, clock: Clock | None = None) -> TimingHistory:
        """The history of one target."""
        return self.load_many([target], clock=clock)[target]

    def append(self, target: str, samples: Sequence[Sample]) -> None:
        """Add samples to one target."""
        self.append_many({target: samples})

    # -- calls on the private loop ----------------------------------------------------

    def _worker_now(self) -> LoopWorker:
        with self._start_lock:
            # A forked child inherits the object but not the thread: start afresh.
            if self._worker is None or self._pid != os.getpid():
                self._worker = LoopWorker(f"smd-history {self.schema}", self.keep_open)
                self._pid = os.getpid()
                self._finalizer = weakref.finalize(self, self._worker.shutdown)
            return self._worker

    def _call(self, op: Op[_T], budget: float, what: str) -> _T:
        worker = self._worker_now()
        try:
            return worker.call(lambda: self._session(worker, op, budget), budget)
        except BudgetExceeded:
            raise StoreUnavailable(
                f"{self.where}: no answer within the {what} budget of {budget:g}s"
            ) from None
        except SchemaError as exc:
            raise StoreUnavailable(self._text(f"{self.where}: {exc.failure.message}")) from None
        except StoreUnavailable:
            raise
        except Exception as exc:
            failure = classify(exc, target="", secrets=self.options.secrets())
            raise StoreUnavailable(self._text(f"{self.where}: {failure.message}")) from None

    def _text(self, text: str) -> str:
        return scrub(text, self.options.secrets())

    async def _session(self, worker: LoopWorker, op: Op[_T], budget: float) -> _T:
        """``op`` on the worker's connection: connect, make the schema, retry what may heal."""
        from asyncpg.exceptions import InternalClientError, PostgresError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        for attempt in range(1, 4):
            reused = worker.conn is not None and not worker.conn.is_closed()
            if not reused:
                worker.conn = await connect(
                    self.options,
                    deadline=deadline,
                    now=loop.time,
                    sleep=asyncio.sleep,
                    retry_on=storm_code,
                    application_name="smd history",
                    label="",
                    statement_cache_size=0,
                )
            conn = worker.conn
            assert conn is not None
            try:
                if not worker.schema_ok:
                    await self._schema(conn)
                    worker.schema_ok = True
                return await op(conn)
            except PostgresError as exc:
                code = getattr(exc, "sqlstate", None)
                if code in _MISSING and worker.schema_ok and attempt == 1:
                    worker.schema_ok = False  # dropped under us: make it again
                    continue
                if code in _RETRY_WRITE and attempt < 3:
                    continue
                if reused and attempt == 1 and _lost(code):
                    worker.drop()
                    continue
                raise
            except (OSError, ConnectionError, InternalClientError) as exc:
                # InternalClientError: the server ended the idle kept session and
                # asyncpg had read its FATAL but not yet closed the connection
                # ("cannot switch to state ...; another operation is in progress").
                worker.drop()
                if reused and attempt == 1:
                    continue  # the kept connection died while idle: reconnect once
                raise exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _schema(self, conn: asyncpg.Connection) -> None:
        if not self.readonly:
            await ensure_schema(conn, self.schema, where=self.where)
            return
        version = await schema_version(conn, self.schema)
        if version > SCHEMA_VERSION:
            await ensure_schema(conn, self.schema, where=self.where)  # raises: newer

    async def _exists(self, conn: asyncpg.Connection) -> bool:
        return not self.readonly or bool(await schema_version(conn, self.schema))

    async def _read(self, conn: asyncpg.Connection, names: list[str]) -> list[Any]:
        return await read_samples(conn, self.schema, names) if await self._exists(conn) else []

    async def _read_targets(self, conn: asyncpg.Connection) -> list[Any]:
        return await read_targets(conn, self.schema) if await self._exists(conn) else []

    async def _write(
        self,
        conn: asyncpg.Connection,
        rows: Mapping[str, Sequence[Sample]],
        meta: Mapping[str, TargetInfo],
    ) -> None:
        await write_samples(conn, self.schema, rows, meta, self.bound)


def _lost(code: str | None) -> bool:
    """Whether a statement failed because its connection broke: SQLSTATE class 08.

    asyncpg reports a connection closed under a statement as 08003 ("closed
    in the middle of operation"), also when the server ended the session
    while the statement waited (``pg_terminate_backend``). A new connection
    may well work. A write that lost its connection exactly at its COMMIT
    may then be recorded twice: one start weighing twice in the history,
    which is better than losing it.
    """
    return code is not None and code.startswith("08")


def open_store(
    url: str | SecretStr, settings: Any = None, *, readonly: bool = False
) -> PostgresHistoryStore:
    """The store for ``SMD_HISTORY_URL`` (the ``postgresql`` / ``postgres`` store factory).

    Schema and budgets come from ``settings`` (``SMD_HISTORY_SCHEMA``,
    ``SMD_HISTORY_READ_BUDGET``, ``SMD_HISTORY_WRITE_BUDGET``); ``readonly``
    (``smd history``) never creates the schema or writes. Creating it does
    no I/O; an invalid URL raises ``ValueError`` (never echoing it).
    """
    fleet = FleetSettings.of(settings)
    return PostgresHistoryStore(
        url,
        schema=fleet.history_schema,
        read_budget=fleet.history_read_budget,
        write_budget=fleet.history_write_budget,
        readonly=readonly,
    )
