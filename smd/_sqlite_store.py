"""The embedded history store: SQLite from the standard library.

One file (by default ``$XDG_STATE_HOME/smd/history.sqlite3``) holds every
sample of every target, in one table::

    samples(id, target, series, at, seconds, censored, kind)

indexed on ``(target, series, at)``. The schema is versioned with
``PRAGMA user_version``.

Guarantees, and how they are kept:

- **Bounded.** Each ``(target, series)`` keeps its newest ``bound`` samples
  (by ``at``). The trim runs in the same ``BEGIN IMMEDIATE`` transaction as
  the insert, so no reader ever sees more than the bound and no concurrent
  writer can trim a sample another writer is still counting.
- **Safe under concurrent processes.** WAL mode (readers never block the
  writer), a busy timeout (writers queue instead of failing), and write
  transactions that take the write lock up front (``BEGIN IMMEDIATE``), so a
  read-then-write upgrade can never fail with ``SQLITE_BUSY``. Several
  processes appending at once lose no sample within the bound.
- **Never able to crash startup.** ``load``, ``append`` and ``targets`` never
  raise. A corrupt or truncated file is moved aside to
  ``<name>.corrupt-<UTC timestamp>`` (with any ``-wal``/``-shm`` still there), kept for
  inspection, and a fresh store is started. An unwritable location, a full
  disk, or a schema written by a newer smd degrades the store for the life
  of the instance: samples recorded from then on are kept in memory only,
  and what can still be read from the file is still read. Each problem is
  reported by exactly one warning (``smd.history.corrupt``,
  ``smd.history.unwritable``, ``smd.history.unsupported_schema``) naming the
  file and what was done.

``readonly=True`` (``smd plan``, ``smd history``) never creates, writes or
moves the database file; a missing file reads as empty. (SQLite itself may
leave its empty ``-wal``/``-shm`` sidecars next to an existing file: a
read-only reader needs them to read safely while another process writes.)

The store is synchronous by design (so is SQLite). Async callers run it in a
worker thread: ``await anyio.to_thread.run_sync(store.load, target)``. Every
call opens its own short-lived connection, so one instance can be used from
several threads, and a file moved aside by another process is noticed on the
next call.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog

from smd._failures import FailureKind
from smd._samples import DEFAULT_BOUND, Sample, Series, TimingHistory
from smd._store import HistoryStore, MemoryHistoryStore

if TYPE_CHECKING:
    from smd._clock import Clock
    from smd._settings import Settings

__all__ = ["SCHEMA_VERSION", "SQLiteHistoryStore", "open_store"]

SCHEMA_VERSION: Final = 1

_T = TypeVar("_T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS samples (
        id       INTEGER PRIMARY KEY,
        target   TEXT    NOT NULL,
        series   TEXT    NOT NULL,
        at       REAL    NOT NULL,
        seconds  REAL,
        censored INTEGER NOT NULL DEFAULT 0,
        kind     TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS samples_by_target ON samples (target, series, at)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# Keep the newest `bound` rows of one (target, series); ties on `at` are
# broken by insertion order, matching TimingHistory's stable sort.
_TRIM: Final = """
DELETE FROM samples
WHERE target = :target AND series = :series AND id NOT IN (
    SELECT id FROM samples
    WHERE target = :target AND series = :series
    ORDER BY at DESC, id DESC
    LIMIT :bound
)
"""

# SQLite primary result codes that mean "the file's content is damaged":
# moving the file aside is the cure. Everything else (I/O error, full disk,
# read-only, cannot open, busy) says nothing about the content.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26


class _Corrupt(Exception):
    """The file's content is damaged (internal signal)."""


class _Unsupported(Exception):
    """The file was written by a newer schema (internal signal)."""


def _is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(err)
    return "file is not a database" in text or "malformed" in text


def _describe(err: BaseException) -> str:
    name = getattr(err, "sqlite_errorname", None)
    text = str(err) or type(err).__name__
    return f"{text} ({name})" if isinstance(name, str) else f"{type(err).__name__}: {text}"


def _row_to_sample(row: tuple[Any, ...]) -> Sample | None:
    """A stored row as a Sample, or None for a row this version cannot read."""
    series, at, seconds, censored, kind = row
    try:
        at_f = float(at)
        sec = None if seconds is None else float(seconds)
        if not math.isfinite(at_f) or (sec is not None and (not math.isfinite(sec) or sec < 0)):
            return None
        return Sample(
            series=Series(str(series)),
            at=at_f,
            seconds=sec,
            censored=bool(censored),
            kind=FailureKind(str(kind)) if kind else None,
        )
    except (TypeError, ValueError):
        # A series or kind added by a newer smd: skip the row, keep the rest.
        return None


def _storable(sample: Sample) -> bool:
    if not math.isfinite(sample.at):
        return False
    return sample.seconds is None or (math.isfinite(sample.seconds) and sample.seconds >= 0)


class SQLiteHistoryStore:
    """A :class:`~smd.HistoryStore` in one SQLite file, safe for concurrent processes.

    ``bound`` is the number of samples kept per target and series;
    ``busy_timeout`` is how long a call waits for another process's write
    lock before giving up (seconds). With ``readonly=True`` the file is never
    created, written, or moved (``smd plan`` and ``smd history`` use this): a
    missing file reads as empty, and appended samples live in memory only.

    Never raises from :meth:`load`, :meth:`append` or :meth:`targets`; see
    the module docstring for what happens instead. :attr:`degraded` and
    :attr:`problem` say whether, and why, the store stopped writing.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        bound: int = DEFAULT_BOUND,
        busy_timeout: float = 5.0,
        readonly: bool = False,
        log: Any = None,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        if not math.isfinite(busy_timeout) or busy_timeout < 0:
            raise ValueError("busy_timeout must be a finite number of seconds >= 0")
        self.path = Path(path)
        self.bound = bound
        self.busy_timeout = float(busy_timeout)
        self.readonly = readonly
        self._log = log
        self._lock = threading.RLock()
        self._ready = False
        self._checked_inode: int | None = None
        self._warned: set[str] = set()
        self.problem: str | None = None
        self.moved_aside: Path | None = None
        # Samples appended while degraded (or read-only): never lost for
        # the life of this instance, even though they cannot be persisted.
        self._memory = MemoryHistoryStore(bound)

    def __repr__(self) -> str:
        state = f"degraded: {self.problem}" if self.problem else "ok"
        mode = ", readonly" if self.readonly else ""
        return f"SQLiteHistoryStore({str(self.path)!r}, bound={self.bound}{mode}, {state})"

    @property
    def degraded(self) -> bool:
        """True once the file can no longer be written for this instance."""
        return self.problem is not None

    # -- public API (never raises) ------------------------------------------

    def load(self, target: str, *, clock: Clock | None = None) -> TimingHistory:
        """The target's history: what the file holds plus anything kept in memory."""
        with self._lock:
            none: list[Sample] = []
            samples = self._guard(lambda: self._read(target), default=none, read=True)
            samples += self._memory.load(target).all_samples()
        return TimingHistory(samples, bound=self.bound, clock=clock)

    def append(self, target: str, samples: Sequence[Sample]) -> None:
        """Persist samples; each (target, series) keeps its newest ``bound``."""
        self.append_many({target: samples})

    def append_many(self, batches: Mapping[str, Sequence[Sample]]) -> None:
        """Persist samples of several targets in one transaction (one startup's worth)."""
        rows = {t: [s for s in samples if _storable(s)] for t, samples in batches.items()}
        rows = {t: r for t, r in rows.items() if r}
        if not rows:
            return
        with self._lock:
            if self.readonly or self.degraded:
                for target, samples in rows.items():
                    self._memory.append(target, samples)
                return
            ok = self._guard(lambda: self._write(rows), default=False)
            if not ok:
                for target, samples in rows.items():
                    self._memory.append(target, samples)

    def targets(self) -> list[str]:
        """Every target with at least one sample, sorted."""
        with self._lock:
            nothing: list[str] = []
            names = set(self._guard(self._read_targets, default=nothing, read=True))
            names.update(self._memory.targets())
        return sorted(names)

    # -- error handling -------------------------------------------------------

    def _guard(self, op: Callable[[], _T], *, default: _T, read: bool = False) -> _T:
        """Run ``op``; turn every failure into (at most) one warning and ``default``.

        A corrupt file is moved aside and ``op`` retried once on a fresh file.
        A read that finds the file unwritable is retried once in degraded
        (read-only) mode, so what the file holds is still used.
        """
        for attempt in (1, 2):
            was_degraded = self.degraded
            try:
                return op()
            except _Corrupt as err:
                if attempt == 1 and self._recover_corrupt(str(err)):
                    continue
                return default
            except _Unsupported as err:
                self._degrade("smd.history.unsupported_schema", str(err), "left the file untouched")
                return default
            except sqlite3.Error as err:
                if _is_corrupt(err):
                    if attempt == 1 and self._recover_corrupt(_describe(err)):
                        continue
                    return default
                self._degrade("smd.history.unwritable", _describe(err), self._fallback_text())
            except OSError as err:
                self._degrade("smd.history.unwritable", _describe(err), self._fallback_text())
            except Exception as err:  # the store must never break startup
                self._degrade("smd.history.error", _describe(err), self._fallback_text())
            if not (read and attempt == 1 and not was_degraded):
                return default
        return default

    def _fallback_text(self) -> str:
        return (
            "history is read from the file where possible; new samples are kept "
            "in memory only for this process"
        )

    def _warn(self, event: str, **fields: object) -> None:
        if event in self._warned:
            return
        self._warned.add(event)
        # Looked up at call time so a logging configuration made after this
        # store was created (or a test capturing logs) still applies.
        log = self._log if self._log is not None else structlog.get_logger("smd.history")
        with contextlib.suppress(Exception):
            log.warning(event, path=str(self.path), **fields)

    def _degrade(self, event: str, error: str, action: str) -> None:
        if self.problem is None:
            self.problem = f"{event.rsplit('.', 1)[-1]}: {error}"
            self._warn(event, error=error, action=action)

    def _recover_corrupt(self, error: str) -> bool:
        """Move a damaged file aside (one warning). True if a fresh store can be used."""
        if self.readonly:
            self._degrade(
                "smd.history.corrupt",
                error,
                "left the file in place (read-only); history is empty for this command",
            )
            return False
        try:
            moved = self._move_aside()
        except OSError as err:
            self._degrade(
                "smd.history.corrupt",
                error,
                f"could not move the file aside ({_describe(err)}); "
                "new samples are kept in memory only for this process",
            )
            return False
        self._ready = False
        self._checked_inode = None
        if moved is None:
            self._warn(
                "smd.history.corrupt",
                error=error,
                action="another process already moved the damaged file aside; "
                "using the fresh history",
            )
            return True
        self.moved_aside = moved
        self._warn(
            "smd.history.corrupt",
            error=error,
            moved_to=str(moved),
            action=f"moved the damaged file aside to {moved.name} and started a fresh history",
        )
        return True

    def _move_aside(self) -> Path | None:
        """Rename the damaged file (and sidecars) aside; None if someone else did.

        Processes that find the same damaged file at once take turns under
        an advisory lock on the directory, and each re-checks under the lock
        that the file is still the one it found damaged: otherwise a late
        process would move aside the fresh store an earlier one just created.
        """
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                return None
            if self._checked_inode is not None and current != self._checked_inode:
                return None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            n = 1
            while dest.exists() or Path(f"{dest}-wal").exists():
                dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
                n += 1
            # Sidecars first: once the main file is gone another process may
            # create a fresh store whose -wal must not be carried away with it.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}{suffix}", f"{dest}{suffix}")
            os.rename(self.path, dest)
            return dest
        finally:
            os.close(dir_fd)  # also releases the lock

    # -- SQLite ---------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        # Before connecting: if the file is swapped between the two, the
        # inode we remember is the older one, and a damaged file found
        # through this connection is then never confused with a fresh one.
        try:
            self._checked_inode = os.stat(self.path).st_ino
        except OSError:
            self._checked_inode = None
        if write:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        else:
            conn = self._connect_readonly()
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if write:
                # Per connection, not per file: without it every commit
                # fsyncs (FULL), tens of ms on the startup's critical path.
                conn.execute("PRAGMA synchronous = NORMAL")
            yield conn
        finally:
            conn.close()

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = self.path.absolute().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as err:
            conn.close()
            if _is_corrupt(err):
                raise
            # A WAL file in a read-only directory cannot get its -shm; read
            # the main file as it stands (committed, checkpointed data).
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
        conn.execute("PRAGMA query_only = 1")
        return conn

    def _init(self, conn: sqlite3.Connection) -> None:
        """WAL, integrity and schema once per instance (and again if the file was replaced)."""
        if self._ready:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            # Another process moved a damaged file aside since we last
            # looked: this is a new file, set it up like the first one.
            self._ready = False
        self._set_wal(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _Unsupported(f"schema version {version} is newer than supported {SCHEMA_VERSION}")
        self._quick_check(conn)
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have won.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    # One statement at a time: executescript would commit
                    # the BEGIN IMMEDIATE that makes this race-free.
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        self._ready = True

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment alone with the file; when many
        # processes open a brand-new store at once this can report "locked"
        # without consulting the busy handler, so retry within busy_timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as err:
                if (getattr(err, "sqlite_errorcode", 0) & 0xFF) != 5 or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            # Not fatal: the rollback journal is just as safe, only slower.
            self._warn("smd.history.no_wal", journal_mode=str(mode))
        # WAL + NORMAL survives any process crash; only a power loss can
        # drop the last few samples, which is acceptable for timing history.
        conn.execute("PRAGMA synchronous = NORMAL")

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        # Cheap at this size (bounded history) and catches a truncated file
        # whose damage a narrow query might not touch.
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
        if not rows or rows[0][0] != "ok":
            raise _Corrupt(f"integrity check failed: {rows[0][0] if rows else 'no result'}")

    def _read_checked(self, conn: sqlite3.Connection) -> bool:
        """For read-only access: verify the file once; False if it has no schema yet."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _Unsupported(f"schema version {version} is newer than supported {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            return False
        if not self._ready:
            self._quick_check(conn)
            self._ready = True
        return True

    def _reader(self) -> contextlib.AbstractContextManager[sqlite3.Connection] | None:
        """A connection for reading, or None when there is nothing to read."""
        if self.readonly or self.degraded:
            if not self.path.exists():
                return None
            return self._connect(write=False)
        # A writable store creates its file on the first call, even a read,
        # so an unwritable location is reported at startup, not after it.
        return self._connect(write=True)

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read; a missing (read-only) or unreadable file gives none."""
        reader = self._reader()
        if reader is None:
            return []
        with reader as conn:
            if self.readonly or self.degraded:
                if not self._read_checked(conn):
                    return []
            else:
                self._init(conn)
            rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
        return rows

    def _read(self, target: str) -> list[Sample]:
        rows = self._query(
            "SELECT series, at, seconds, censored, kind FROM samples "
            "WHERE target = ? ORDER BY at, id",
            (target,),
        )
        return [s for s in map(_row_to_sample, rows) if s is not None]

    def _read_targets(self) -> list[str]:
        rows = self._query("SELECT DISTINCT target FROM samples ORDER BY target")
        return [str(r[0]) for r in rows]

    def _write(self, batches: Mapping[str, Sequence[Sample]]) -> bool:
        with self._connect(write=True) as conn:
            self._init(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for target, samples in batches.items():
                    conn.executemany(
                        "INSERT INTO samples (target, series, at, seconds, censored, kind) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (
                                target,
                                s.series.value,
                                s.at,
                                s.seconds,
                                int(s.censored),
                                s.kind.value if s.kind else None,
                            )
                            for s in samples
                        ],
                    )
                    for series in sorted({s.series.value for s in samples}):
                        conn.execute(
                            _TRIM, {"target": target, "series": series, "bound": self.bound}
                        )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return True


def open_store(settings: Settings, *, readonly: bool = False, log: Any = None) -> HistoryStore:
    """The history store the settings ask for.

    ``history_enabled=False`` gives a :class:`~smd.MemoryHistoryStore`
    (nothing persists). Otherwise an :class:`SQLiteHistoryStore` at
    ``settings.history_file()``, creating its directory; if the directory
    cannot be created, one ``smd.history.unwritable`` warning and a memory
    store. ``readonly=True`` (``smd plan``, ``smd history``) never creates
    or writes anything.
    """
    if not settings.history_enabled:
        return MemoryHistoryStore()
    path = settings.history_file()
    if not readonly:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            logger = log if log is not None else structlog.get_logger("smd.history")
            with contextlib.suppress(Exception):
                logger.warning(
                    "smd.history.unwritable",
                    path=str(path),
                    error=_describe(err),
                    action="could not create the history directory; "
                    "samples are kept in memory only for this process",
                )
            return MemoryHistoryStore()
    return SQLiteHistoryStore(path, readonly=readonly, log=log)
