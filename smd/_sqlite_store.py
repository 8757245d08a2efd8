"""The embedded history store: SQLite from the standard library.

One file (by default ``$XDG_STATE_HOME/smd/history.sqlite3``) holds every
sample of every target, and what is known about each target::

    samples(id, target, series, at, seconds, censored, kind)   -- (target, series, at)
    targets(target, startup, dependency, environment, phase, policy)

versioned with ``PRAGMA user_version``.

Guarantees, and how they are kept:

- **Bounded.** Each ``(target, series)`` keeps its newest ``bound`` samples
  (by ``at``). The trim runs in the same ``BEGIN IMMEDIATE`` transaction as
  the insert, so no reader ever sees more than the bound and no concurrent
  writer can trim a sample another writer is still counting.
- **Safe under concurrent processes.** WAL mode (readers never block the
  writer), a busy timeout (writers queue instead of failing), and write
  transactions that take the write lock up front (``BEGIN IMMEDIATE``).
- **One read per startup.** ``load_many`` reads every target in one query.
- **Never able to crash startup.** No public method raises: damage, an
  outdated schema (keys without the startup's name: moved aside to
  ``<name>.v1-<time>``), an unwritable place, a full disk, a path that is not
  a regular file (never opened, so nothing is created next to it) each give
  exactly one warning and a fallback; see :mod:`smd._sqlite_guard`.
- **Private.** Directory 0700, file 0600 whatever the umask (``-wal``/``-shm`` copy it).

``readonly=True`` (``smd plan``, ``smd history``) never creates, writes or
moves the database file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smd._samples import DEFAULT_BOUND, Sample, TimingHistory
from smd._sqlite_file import (
    connect,
    not_a_regular_file,
    private_file,
    set_wal,
)
from smd._sqlite_guard import GuardedFile, _Damaged, _NotRegular, _Unsupported
from smd._store import (
    MemoryHistoryStore,
    StoreConveniences,
    TargetInfo,
    sample_from_row,
    storable_batches,
    with_memory,
)

if TYPE_CHECKING:
    from smd.clock import Clock

__all__ = ["SCHEMA_VERSION", "SQLiteHistoryStore"]

SCHEMA_VERSION: Final = 2

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
    """CREATE TABLE IF NOT EXISTS targets (
        target      TEXT PRIMARY KEY,
        startup     TEXT NOT NULL DEFAULT '',
        dependency  TEXT NOT NULL DEFAULT '',
        environment TEXT NOT NULL DEFAULT '',
        phase       TEXT NOT NULL DEFAULT '',
        policy      TEXT NOT NULL DEFAULT '{}'
    )""",
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

_UPSERT_TARGET: Final = """
INSERT INTO targets (target, startup, dependency, environment, phase, policy)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (target) DO UPDATE SET startup = excluded.startup,
    dependency = excluded.dependency, environment = excluded.environment,
    phase = excluded.phase, policy = excluded.policy
"""


def _policy(text: object) -> dict[str, object]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class SQLiteHistoryStore(StoreConveniences, GuardedFile):
    """A :class:`~smd.history.HistoryStore` in one SQLite file, safe for concurrent processes.

    ``bound`` is the number of samples kept per target and series;
    ``busy_timeout`` is how long a call waits for another process's write
    lock before giving up (seconds). With ``readonly=True`` the file is never
    created, written, or moved: a missing file reads as empty, and appended
    samples live in memory only.

    Never raises from its public methods; see the module docstring for what
    happens instead. :attr:`degraded` and :attr:`problem` say whether, and
    why, the store stopped writing.
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
        ro = ", readonly" if self.readonly else ""
        return f"SQLiteHistoryStore({str(self.path)!r}, bound={self.bound}{ro}, {state})"

    # -- the protocol (never raises) --------------------------------------------

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        """The histories of ``targets`` in one query, plus anything kept in memory."""
        names = list(dict.fromkeys(targets))
        with self._lock:
            empty: dict[str, list[Sample]] = {}
            found = self._guard(lambda: self._read(names), default=empty, read=True)
            return with_memory(names, found, self._memory, bound=self.bound, clock=clock)

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        """Persist samples of several targets in one transaction (one startup's worth)."""
        rows, meta = storable_batches(batches, info)
        if not rows:
            return
        with self._lock:
            if self.readonly or self.degraded:
                self._memory.append_many(rows, meta)
                return
            if not self._guard(lambda: self._write(rows, meta), default=False):
                self._memory.append_many(rows, meta)

    def targets(self) -> dict[str, TargetInfo]:
        """Every target with at least one sample, sorted, with what is known about it."""
        with self._lock:
            empty: dict[str, TargetInfo] = {}
            found = dict(self._guard(self._read_targets, default=empty, read=True))
            for target, info in self._memory.targets().items():
                # What this process recorded (degraded, read-only) is the newer word.
                if target not in found or info != TargetInfo(target):
                    found[target] = info
        return dict(sorted(found.items()))

    # -- SQLite ---------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        # SQLite would happily open a device or a FIFO and create its
        # journal next to it (``/dev/full-journal``): never open one.
        problem = not_a_regular_file(self.path)
        if problem is not None:
            raise _NotRegular(f"the history path is {problem}")
        # Before connecting: if the file is swapped between the two, the
        # inode we remember is the older one, and a damaged file found
        # through this connection is then never confused with a fresh one.
        if write:
            private_file(self.path)
        try:
            self._checked_inode = os.stat(self.path).st_ino
        except OSError:
            self._checked_inode = None
        conn = connect(self.path, write=write, busy_timeout=self.busy_timeout)
        try:
            yield conn
        finally:
            conn.close()

    def _version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise _Unsupported(f"schema version {version} is newer than supported {SCHEMA_VERSION}")
        if 0 < version < SCHEMA_VERSION:
            raise _Damaged(
                f"v{version}",
                f"schema version {version}: history keys did not name the startup, so "
                "they cannot be attributed",
            )
        return version

    def _init(self, conn: sqlite3.Connection) -> None:
        """WAL, integrity and schema once per instance (and again if the file was replaced)."""
        if self._ready and self._version(conn) == SCHEMA_VERSION:
            return
        self._ready = False
        # The version first: a file that is moved aside (outdated) or left
        # untouched (newer) must not be switched to WAL on the way.
        self._version(conn)
        if set_wal(conn, self.busy_timeout) != "wal":
            self._warn("smd.history.no_wal")  # not fatal: the rollback journal is just slower
        if self._version(conn) == 0:
            self._check(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have won.
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
                    # One statement at a time: executescript would commit
                    # the BEGIN IMMEDIATE that makes this race-free.
                    for statement in _SCHEMA:
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        else:
            self._check(conn)
        self._ready = True

    def _check(self, conn: sqlite3.Connection) -> None:
        # Cheap at this size (bounded history) and catches a truncated file
        # whose damage a narrow query might not touch.
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
        if not rows or rows[0][0] != "ok":
            raise _Damaged("corrupt", f"integrity check failed: {rows[0][0] if rows else '?'}")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read; a missing (read-only) or unreadable file gives none."""
        if self.readonly or self.degraded:
            if not self.path.exists():
                return []
            with self._connect(write=False) as conn:
                if self._version(conn) < SCHEMA_VERSION:
                    return []
                if not self._ready:
                    self._check(conn)
                    self._ready = True
                return conn.execute(sql, tuple(params)).fetchall()
        # A writable store creates its file on the first call, even a read,
        # so an unwritable location is reported at startup, not after it.
        with self._connect(write=True) as conn:
            self._init(conn)
            return conn.execute(sql, tuple(params)).fetchall()

    def _read(self, targets: Sequence[str]) -> dict[str, list[Sample]]:
        if not targets:
            return {}
        marks = ",".join("?" * len(targets))
        rows = self._query(
            "SELECT target, series, at, seconds, censored, kind FROM samples "
            f"WHERE target IN ({marks}) ORDER BY at, id",
            targets,
        )
        out: dict[str, list[Sample]] = {}
        for row in rows:
            sample = sample_from_row(*row[1:])
            if sample is not None:
                out.setdefault(str(row[0]), []).append(sample)
        return out

    def _read_targets(self) -> dict[str, TargetInfo]:
        rows = self._query(
            "SELECT s.target, t.startup, t.dependency, t.environment, t.phase, t.policy "
            "FROM (SELECT DISTINCT target FROM samples) AS s "
            "LEFT JOIN targets AS t ON t.target = s.target ORDER BY s.target"
        )
        return {
            str(r[0]): TargetInfo(
                str(r[0]), r[1] or "", r[2] or "", r[3] or "", r[4] or "", _policy(r[5] or "{}")
            )
            for r in rows
        }

    def _write(
        self, batches: Mapping[str, Sequence[Sample]], info: Mapping[str, TargetInfo]
    ) -> bool:
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
                conn.executemany(
                    _UPSERT_TARGET,
                    [
                        (
                            t,
                            i.startup,
                            i.dependency,
                            i.environment,
                            i.phase,
                            json.dumps(dict(i.policy)),
                        )
                        for t, i in info.items()
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return True
