"""History stores: where learned timings persist across restarts.

The embedded default is SQLite (:class:`SQLiteHistoryStore`, from the
settings with :func:`open_store`); :class:`MemoryHistoryStore` keeps nothing
beyond the process; anything implementing :class:`HistoryStore` can serve a
fleet. :func:`summarize` is what ``smd history`` shows.
"""

from __future__ import annotations

from smd._history_view import SeriesStats, TargetSummary, render_text, summarize
from smd._open_store import FallbackStore, open_store
from smd._sqlite_store import SCHEMA_VERSION, SQLiteHistoryStore
from smd._store import HistoryStore, MemoryHistoryStore, TargetInfo, split_target, target_key

__all__ = [
    "SCHEMA_VERSION",
    "FallbackStore",
    "HistoryStore",
    "MemoryHistoryStore",
    "SQLiteHistoryStore",
    "SeriesStats",
    "TargetInfo",
    "TargetSummary",
    "open_store",
    "render_text",
    "split_target",
    "summarize",
    "target_key",
]
