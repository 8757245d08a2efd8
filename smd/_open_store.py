"""Which history store a run uses: the shared one ``SMD_HISTORY_URL`` names, or SQLite.

:func:`open_store` is the one place that decides. A shared store comes from
the plugin registered for the URL's scheme (PostgreSQL: ``smd.checks``), and
is wrapped in :class:`FallbackStore`: when it cannot be reached or used,
startup goes on with the embedded SQLite store and one warning.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from smd._logging import get_logger
from smd._samples import Sample, TimingHistory
from smd._sqlite_file import describe, not_a_regular_file, private_dir
from smd._sqlite_guard import _NOT_OPENED
from smd._sqlite_store import SQLiteHistoryStore
from smd._store import HistoryStore, MemoryHistoryStore, StoreConveniences, TargetInfo
from smd.plugins import store_factory, store_scheme

if TYPE_CHECKING:
    from pathlib import Path

    from smd._settings import Settings
    from smd.clock import Clock

__all__ = ["FallbackStore", "embedded_problem", "open_store"]


class FallbackStore(StoreConveniences):
    """A shared store that falls back to the embedded one when it fails.

    Every call goes to ``primary`` first; if it raises (``StoreUnavailable``
    or anything else: a store must never stop startup), the same call goes
    to ``fallback`` and one ``smd.history.shared_unavailable`` warning says
    which store failed and why (never its URL's password). The primary bounds
    its own calls in time, so a dead shared store cannot delay startup.
    """

    def __init__(self, primary: HistoryStore, fallback: HistoryStore, *, log: Any = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self._log = log
        self._warned = False
        self._lock = threading.Lock()
        self.problem: str | None = None

    def _failed(self, what: str, exc: Exception) -> None:
        from smd._redact import redact

        with self._lock:
            self.problem = redact(f"{type(exc).__name__}: {exc}")
            if self._warned:
                return
            self._warned = True
        log = self._log if self._log is not None else get_logger("smd.history")
        with contextlib.suppress(Exception):
            log.warning(
                "smd.history.shared_unavailable",
                store=type(self.primary).__name__,
                operation=what,
                error=self.problem,
                action="using the embedded history store for this process",
            )

    def load_many(
        self, targets: Iterable[str], *, clock: Clock | None = None
    ) -> dict[str, TimingHistory]:
        names = list(targets)
        try:
            return self.primary.load_many(names, clock=clock)
        except Exception as exc:
            self._failed("read", exc)
            return self.fallback.load_many(names, clock=clock)

    def append_many(
        self,
        batches: Mapping[str, Sequence[Sample]],
        info: Mapping[str, TargetInfo] | None = None,
    ) -> None:
        try:
            self.primary.append_many(batches, info)
        except Exception as exc:
            self._failed("write", exc)
            self.fallback.append_many(batches, info)

    def targets(self) -> dict[str, TargetInfo]:
        try:
            return self.primary.targets()
        except Exception as exc:
            self._failed("list", exc)
            return self.fallback.targets()


def open_store(
    settings: Settings, *, readonly: bool = False, shared: bool = True, log: Any = None
) -> HistoryStore:
    """The history store the settings ask for (never raises).

    ``SMD_HISTORY_URL`` set (and ``shared``): the shared store its scheme's
    plugin opens, falling back to the embedded one (see :class:`FallbackStore`);
    else the embedded SQLite store (see :func:`_embedded`). ``smd plan``
    passes ``shared=False``: a dry run does no network I/O.
    """
    local = _embedded(settings, readonly=readonly, log=log)
    url = settings.history_url.get_secret_value() if settings.history_url else None
    if not url or not settings.history_enabled or not shared:
        return local
    # The scheme names the plugin's store (a "+driver" suffix names no other
    # store; the plugin's settings decide whether it accepts one).
    factory = store_factory(store_scheme(url))
    if factory is None:  # validated at load; a plugin may have gone since
        return local
    try:
        remote: HistoryStore = factory(url, settings)
    except Exception as exc:
        fallback = FallbackStore(MemoryHistoryStore(), local, log=log)
        fallback._failed("open", exc)
        return local
    return FallbackStore(remote, local, log=log)


def embedded_problem(path: Path, *, readonly: bool) -> str | None:
    """Why the embedded store cannot use ``path`` (``"a directory"``, ...), else ``None``.

    Unless ``readonly``, this creates the directory (0700) when it is missing.
    """
    problem = not_a_regular_file(path)
    if problem is None and not readonly:
        try:
            private_dir(path.parent)
        except OSError as err:
            problem = f"its directory cannot be created ({describe(err)})"
    return problem


def _embedded(settings: Settings, *, readonly: bool, log: Any) -> HistoryStore:
    """The embedded store: SQLite at ``settings.history_file()`` (never raises).

    ``history_enabled=False`` gives a :class:`~smd.history.MemoryHistoryStore`
    (nothing persists). Otherwise an :class:`SQLiteHistoryStore` at
    ``settings.history_file()``, creating its directory (0700). A path that
    exists but is not a regular file (a device, a directory, a FIFO), or a
    directory that cannot be created, gives one ``smd.history.unwritable``
    warning and a memory store; nothing is created next to it.
    ``readonly=True`` (``smd plan``, ``smd history``) never creates or writes.
    """
    if not settings.history_enabled:
        return MemoryHistoryStore()
    path = settings.history_file()
    logger = log if log is not None else get_logger("smd.history")
    problem = embedded_problem(path, readonly=readonly)
    if problem is not None:
        with contextlib.suppress(Exception):
            logger.warning(
                "smd.history.unwritable",
                path=str(path),
                error=f"the history path is {problem}",
                action=_NOT_OPENED,
            )
        return MemoryHistoryStore()
    return SQLiteHistoryStore(path, readonly=readonly, log=log)
