"""How the SQLite history store turns trouble into one warning and carries on.

:class:`GuardedFile` is the store's error policy, kept apart from its SQL: a
damaged (or outdated) file is moved aside and the call retried once on a
fresh file; an unwritable one degrades the store to memory for the life of
the instance (reads still use the file); every problem is one warning
(``smd.history.corrupt``, ``smd.history.replaced``,
``smd.history.unwritable``, ``smd.history.unsupported_schema``) naming the
file and what was done. A corrupt file goes to ``<name>.corrupt-<UTC time>``
(with any ``-wal``/``-shm``), kept for inspection.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from smd._logging import get_logger
from smd._sqlite_file import describe, is_corrupt, move_aside

__all__ = ["GuardedFile"]

_T = TypeVar("_T")


class _Damaged(Exception):
    """The file must be moved aside (internal signal): ``label`` says why."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label


class _Unsupported(Exception):
    """The file was written by a newer schema (internal signal)."""


class _NotRegular(Exception):
    """The path is a device, a directory, a FIFO... (internal signal): never opened."""


class GuardedFile:
    """The error policy of a store kept in one file (attributes set by the store)."""

    path: Path
    readonly: bool
    problem: str | None
    moved_aside: Path | None
    _log: Any
    _warned: set[str]
    _ready: bool
    _checked_inode: int | None

    @property
    def degraded(self) -> bool:
        """True once the file can no longer be written for this instance."""
        return self.problem is not None

    def _guard(self, op: Callable[[], _T], *, default: _T, read: bool = False) -> _T:
        """Run ``op``; turn every failure into (at most) one warning and ``default``.

        A damaged (or outdated) file is moved aside and ``op`` retried once on
        a fresh file. A read that finds the file unwritable is retried once in
        degraded (read-only) mode, so what the file holds is still used.
        """
        for attempt in (1, 2):
            was_degraded = self.degraded
            try:
                return op()
            except _Damaged as err:
                if attempt == 1 and self._replace(err.label, str(err)):
                    continue
                return default
            except _Unsupported as err:
                self._degrade("smd.history.unsupported_schema", str(err), "left the file untouched")
                return default
            except _NotRegular as err:
                self._degrade("smd.history.unwritable", str(err), _NOT_OPENED)
                return default
            except sqlite3.Error as err:
                if is_corrupt(err):
                    if attempt == 1 and self._replace("corrupt", describe(err)):
                        continue
                    return default
                self._degrade("smd.history.unwritable", describe(err), _FALLBACK)
            except OSError as err:
                self._degrade("smd.history.unwritable", describe(err), _FALLBACK)
            except Exception as err:  # the store must never break startup
                self._degrade("smd.history.error", describe(err), _FALLBACK)
            if not (read and attempt == 1 and not was_degraded):
                return default
        return default

    def _warn(self, event: str, **fields: object) -> None:
        if event in self._warned:
            return
        self._warned.add(event)
        # Looked up at call time so a logging configuration made after this
        # store was created (or a test capturing logs) still applies.
        log = self._log if self._log is not None else get_logger("smd.history")
        with contextlib.suppress(Exception):
            log.warning(event, path=str(self.path), **fields)

    def _degrade(self, event: str, error: str, action: str) -> None:
        if self.problem is None:
            self.problem = f"{event.rsplit('.', 1)[-1]}: {error}"
            self._warn(event, error=error, action=action)

    def _replace(self, label: str, error: str) -> bool:
        """Move a damaged or outdated file aside (one warning). True if a fresh store can be used."""
        event = "smd.history.corrupt" if label == "corrupt" else "smd.history.replaced"
        if self.readonly:
            self._degrade(event, error, "left the file in place (read-only); history is empty")
            return False
        try:
            moved = move_aside(self.path, label, self._checked_inode)
        except OSError as err:
            self._degrade(
                event,
                error,
                f"could not move the file aside ({describe(err)}); "
                "new samples are kept in memory only for this process",
            )
            return False
        self._ready = False
        self._checked_inode = None
        if moved is None:
            self._warn(event, error=error, action="another process already moved it aside")
            return True
        self.moved_aside = moved
        self._warn(
            event,
            error=error,
            moved_to=str(moved),
            action=f"moved the file aside to {moved.name} and started a fresh history",
        )
        return True


_NOT_OPENED: Final = (
    "history is not read or written; samples are kept in memory only for this process"
)

_FALLBACK: Final = (
    "history is read from the file where possible; new samples are kept "
    "in memory only for this process"
)
