"""History stores: where learned timings persist across restarts.

The embedded default is SQLite (:class:`SQLiteHistoryStore`, from the
settings with :func:`open_store`); :class:`MemoryHistoryStore` keeps nothing
beyond the process; anything implementing :class:`HistoryStore` can serve a
fleet. :func:`summarize` is what ``smd history`` shows. A store of your own
shares the built-in stores' rules: :func:`storable_batches` (what may be
written, in a fixed key order), :func:`sample_from_row` (a stored row back to
a sample, skipping what this version cannot read) and :func:`with_memory`
(stored samples plus those kept while the store was unavailable).

Carrying history over (``smd history export`` / ``import``):
:func:`export_document` is the versioned JSON document of a store,
:func:`read_export` reads one back (refusing a malformed file with one
line), :func:`import_records` merges it by target. Replaying it
(``smd history replay``): :func:`replay_store` runs each target's recorded
starts through the current policy and the :data:`BASELINES`, one of which
is :class:`Rfc6298Timeout`.
"""

from __future__ import annotations

from smd._history_file import (
    FORMAT,
    VERSION,
    TargetRecord,
    export_document,
    read_export,
    write_export,
)
from smd._history_transfer import ImportResult, TargetImport, import_records
from smd._history_view import SeriesStats, TargetSummary, render_text, summarize
from smd._open_store import FallbackStore, open_store
from smd._replay import BASELINES, PolicyFigures, TargetReplay, replay_store
from smd._rfc6298 import Rfc6298Timeout
from smd._sqlite_store import SCHEMA_VERSION, SQLiteHistoryStore
from smd._store import (
    HistoryStore,
    MemoryHistoryStore,
    TargetInfo,
    sample_from_row,
    split_target,
    storable_batches,
    target_key,
    with_memory,
)

__all__ = [
    "BASELINES",
    "FORMAT",
    "SCHEMA_VERSION",
    "VERSION",
    "FallbackStore",
    "HistoryStore",
    "ImportResult",
    "MemoryHistoryStore",
    "PolicyFigures",
    "Rfc6298Timeout",
    "SQLiteHistoryStore",
    "SeriesStats",
    "TargetImport",
    "TargetInfo",
    "TargetRecord",
    "TargetReplay",
    "TargetSummary",
    "export_document",
    "import_records",
    "open_store",
    "read_export",
    "render_text",
    "replay_store",
    "sample_from_row",
    "split_target",
    "storable_batches",
    "summarize",
    "target_key",
    "with_memory",
    "write_export",
]
