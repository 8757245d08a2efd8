"""The file under the SQLite history store: damage, locks, permissions, connections.

Kept apart from the store's SQL so that each part reads on its own:

- :func:`is_corrupt` tells content damage (move the file aside) from every
  other SQLite error (degrade, keep the file);
- :func:`move_aside` renames a damaged or outdated file (and its ``-wal`` /
  ``-shm``) under a portable lock on the directory, so processes that find the
  same damage at once move it exactly once;
- :func:`private_file` / :func:`private_dir` create what the store needs with
  owner-only permissions whatever the umask (history names hosts, ports and
  databases);
- :func:`connect` opens a read-write or read-only connection with the
  pragmas every call needs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

__all__ = [
    "connect",
    "describe",
    "dir_lock",
    "is_corrupt",
    "move_aside",
    "not_a_regular_file",
    "private_dir",
    "private_file",
    "set_wal",
]

# SQLite primary result codes that mean "the file's content is damaged":
# moving the file aside is the cure. Everything else (I/O error, full disk,
# read-only, cannot open, busy) says nothing about the content.
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26
_SQLITE_BUSY: Final = 5


def is_corrupt(err: sqlite3.Error) -> bool:
    """Whether ``err`` says the file's content is damaged."""
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(err)
    return "file is not a database" in text or "malformed" in text


def describe(err: BaseException) -> str:
    """An error as one line (SQLite's error name when it has one)."""
    name = getattr(err, "sqlite_errorname", None)
    text = str(err) or type(err).__name__
    return f"{text} ({name})" if isinstance(name, str) else f"{type(err).__name__}: {text}"


def not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a device, a FIFO...)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # nothing there yet (a file where a parent should be fails later, by name)
    except OSError as err:
        return f"a path that cannot be inspected ({describe(err)})"
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (0700); leave existing ones alone.

    The parents too: a missing ``$XDG_STATE_HOME`` is created 0700 as the XDG
    spec asks, and no directory smd creates lets others list the history.
    """
    missing: list[Path] = []
    for p in (path, *path.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            if p.is_dir():
                continue  # another process created it first: not ours to change
            raise
        # mkdir's mode is filtered by the umask; say exactly what we mean.
        os.chmod(p, 0o700)


def private_file(path: Path) -> None:
    """Create ``path`` empty and owner-only (0600) if missing, so SQLite's own
    ``-wal`` / ``-shm`` files, which copy the database file's mode, are private too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        if hasattr(os, "fchmod"):  # the umask may have narrowed O_CREAT's mode; never widened
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock shared by every process using ``directory``.

    ``fcntl.flock`` on the directory where it exists (POSIX); elsewhere
    (Windows) ``msvcrt.locking`` on a ``.smd-history.lock`` file in it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - exercised by the test that hides fcntl
        yield from _msvcrt_lock(directory)
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _msvcrt_lock(directory: Path) -> Iterator[None]:  # pragma: no cover - not POSIX
    lock_path = directory / ".smd-history.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import msvcrt
        except ImportError:
            yield  # no lock primitive at all: the inode check below still protects
            return
        deadline = time.monotonic() + 10.0
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    finally:
        os.close(fd)


def move_aside(path: Path, label: str, expected_inode: int | None) -> Path | None:
    """Rename a damaged or outdated file (and sidecars) to ``<name>.<label>-<UTC time>``.

    ``None`` if another process already did (the file is gone, it is no
    longer the one found damaged, or it is empty: a late process must not
    move aside the fresh store an earlier one just created).
    """
    with dir_lock(path.parent):
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        if expected_inode is not None and found.st_ino != expected_inode:
            return None
        if label == "corrupt" and found.st_size == 0:
            # An empty file is no damaged store: it is the fresh one another
            # process is creating right now (SQLite reads it as an empty
            # database). Whatever this process saw was the file it replaced.
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        dest = path.with_name(f"{path.name}.{label}-{stamp}")
        n = 1
        while dest.exists() or Path(f"{dest}-wal").exists():
            dest = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
            n += 1
        # Sidecars first: once the main file is gone another process may
        # create a fresh store whose -wal must not be carried away with it.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{path}{suffix}", f"{dest}{suffix}")
        os.rename(path, dest)
        return dest


def set_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch to WAL (retrying "locked" within ``busy_timeout``); the journal mode in effect.

    Switching needs a moment alone with the file; when many processes open a
    brand-new store at once this can report "locked" without consulting the
    busy handler.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as err:
            code = getattr(err, "sqlite_errorcode", 0) & 0xFF
            if code != _SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    # WAL + NORMAL survives any process crash; only a power loss can drop
    # the last few samples, which is acceptable for timing history.
    conn.execute("PRAGMA synchronous = NORMAL")
    return str(mode).lower()


def connect(path: Path, *, write: bool, busy_timeout: float) -> sqlite3.Connection:
    """A connection with the per-connection pragmas every call needs."""
    if write:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    else:
        conn = _connect_readonly(path)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if write:
            # Per connection, not per file: without it every commit fsyncs
            # (FULL), tens of ms on the startup's critical path.
            conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = path.absolute().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as err:
        conn.close()
        if is_corrupt(err):
            raise
        # A WAL file in a read-only directory cannot get its -shm; read the
        # main file as it stands (committed, checkpointed data).
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return conn
