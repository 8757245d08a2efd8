"""Carry learned history over: ``smd history import FILE`` (and the store both commands use).

An import merges by target into the store the settings name (the shared
``SMD_HISTORY_URL`` store, else the embedded SQLite one); the file format is
:mod:`smd._history_file`. A sample's identity is ``(series, at, seconds,
censored, kind)`` at microsecond resolution (what an export keeps), so
importing a file twice, or into the store it came from, adds nothing. Per
``(target, series)`` the store keeps its newest ``bound`` samples: imported
samples older than those are not written (*past the bound*), and newer ones
may push out the store's oldest (*displaced*), as recording them live
would. Metadata from the file is used only for targets the store knows
nothing about. Everything is written in one call of the store, one
transaction in both built-in stores: an import lands whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from smd._encode import DIGITS, encode
from smd._history_file import TargetRecord
from smd._open_store import FallbackStore, embedded_problem, open_store
from smd._samples import DEFAULT_BOUND, Sample, Series, TimingHistory
from smd._sqlite_store import SQLiteHistoryStore
from smd._store import HistoryStore, MemoryHistoryStore, TargetInfo
from smd.exceptions import SettingsError, StoreUnavailable

if TYPE_CHECKING:
    from smd._settings import Settings
    from smd.clock import Clock

__all__ = [
    "ImportResult",
    "TargetImport",
    "describe_store",
    "identity",
    "import_records",
    "open_history",
    "render_import",
]


@dataclass(frozen=True, slots=True)
class TargetImport:
    """What an import did to one target."""

    target: str
    added: int
    present: int
    past_bound: int
    displaced: int
    new_target: bool


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did, per target (in the file's order)."""

    targets: tuple[TargetImport, ...]
    bound: int

    @property
    def added(self) -> int:
        return sum(t.added for t in self.targets)

    @property
    def present(self) -> int:
        return sum(t.present for t in self.targets)

    @property
    def past_bound(self) -> int:
        return sum(t.past_bound for t in self.targets)

    @property
    def displaced(self) -> int:
        return sum(t.displaced for t in self.targets)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = encode(self)
        data.update(
            added=self.added,
            present=self.present,
            past_bound=self.past_bound,
            displaced=self.displaced,
        )
        return data


# -- which store ------------------------------------------------------------------


#: A shared store's time budgets for these commands, unless the settings set
#: them (``SMD_HISTORY_READ_BUDGET`` / ``SMD_HISTORY_WRITE_BUDGET``). The run's
#: budgets (0.5 s / 2 s) keep a slow store off the readiness path; an
#: operator's command is off every startup path, and on a loaded server its
#: first call may create the schema and its write queue behind a fleet's
#: writers. Ten and thirty seconds allow that and still report a blackholed
#: store instead of hanging on it.
TRANSFER_BUDGETS: Final[Mapping[str, float]] = MappingProxyType(
    {"history_read_budget": 10.0, "history_write_budget": 30.0}
)


def _transfer_budgets(settings: Settings) -> Settings:
    fields = type(settings).model_fields  # the store plugin's settings, when installed
    update = {
        k: v
        for k, v in TRANSFER_BUDGETS.items()
        if k in fields and k not in settings.model_fields_set
    }
    return settings.model_copy(update=update) if update else settings


def open_history(settings: Settings, *, readonly: bool) -> HistoryStore:
    """The store every ``smd history`` command uses: the one the settings name, no fallback.

    The view (text, ``--format json``, ``--html``), export, import and replay
    all open it here.

    A shared store gets :data:`TRANSFER_BUDGETS` unless the settings set its budgets.

    A run falls back to the embedded store when the shared one fails (it must
    not stop startup); these commands must not read or write the wrong store, so
    here the shared store's trouble is :class:`~smd.exceptions.StoreUnavailable`.
    """
    if not settings.history_enabled:
        raise SettingsError(
            "history is disabled (SMD_HISTORY_ENABLED=false): there is no history store to use"
        )
    if settings.history_url is None:
        # A run skips an unusable path with a warning (it must not stop
        # startup); a command that was asked to use it stops, in one line.
        path = settings.history_file()
        problem = embedded_problem(path, readonly=readonly)
        if problem is not None:
            raise SettingsError(
                f"the history path {path} is {problem} (SMD_HISTORY_PATH); accepted: the path "
                "of a regular file, in a directory smd can create"
            )
    # Read-only, a damaged file is reported here in one line, not also as the
    # store's warning (which says "history is empty" and goes on, as a run must).
    quiet = _Quiet() if readonly and settings.history_url is None else None
    store = open_store(_transfer_budgets(settings), readonly=readonly, log=quiet)
    if quiet is not None and isinstance(store, SQLiteHistoryStore):
        store.targets()  # one read: a damaged file shows now, before anything is shown
        if store.problem is not None:
            raise SettingsError(
                f"the history file {store.path} cannot be read ({store.problem}); accepted: "
                "an smd history file: move this one aside, or point SMD_HISTORY_PATH elsewhere"
            )
    if isinstance(store, FallbackStore):
        return store.primary
    if settings.history_url is not None:
        raise StoreUnavailable(
            "the history store SMD_HISTORY_URL names could not be opened (see the warning above)"
        )
    # What open_store gives for a path it cannot use: only if the path changed
    # since the check above (a race), so still never an import into memory.
    if type(store) is MemoryHistoryStore:
        raise StoreUnavailable(
            f"the history path {settings.history_file()} cannot be used (see the warning above)"
        )
    return store


class _Quiet:
    """A logger that drops the store's warnings (the caller reports its ``problem``)."""

    def warning(self, event: str, **fields: object) -> None:
        pass


def describe_store(store: HistoryStore) -> str:
    """A name for ``store`` fit for output (never a secret)."""
    where = getattr(store, "where", None)  # the PostgreSQL store names itself, redacted
    if isinstance(where, str):
        return where
    path = getattr(store, "path", None)
    if path is not None:
        return f"SQLite history store {path}"
    return type(store).__name__


# -- merging into a store ---------------------------------------------------------


def identity(sample: Sample) -> tuple[object, ...]:
    """What makes two samples the same one, at the resolution an export keeps."""
    seconds = None if sample.seconds is None else round(sample.seconds, DIGITS)
    kind = sample.kind.value if sample.kind else None
    return (sample.series.value, round(sample.at, DIGITS), seconds, sample.censored, kind)


def _merge_series(
    existing: Sequence[Sample], incoming: Sequence[Sample], bound: int
) -> tuple[list[Sample], int, int]:
    """``(kept incoming, past the bound, displaced existing)`` for one series.

    Newest ``bound`` by ``at``; on a tie the imported sample counts as the
    newer, as the store breaks ties by insertion order.
    """
    ranked = [(s.at, 0, i, s) for i, s in enumerate(existing)]
    ranked += [(s.at, 1, i, s) for i, s in enumerate(incoming)]
    ranked.sort(key=lambda r: r[:3])
    kept = ranked[-bound:]
    new = [r[3] for r in kept if r[1] == 1]
    return new, len(incoming) - len(new), len(existing) - (len(kept) - len(new))


def import_records(
    store: HistoryStore,
    records: Sequence[TargetRecord],
    *,
    bound: int | None = None,
    clock: Clock | None = None,
) -> ImportResult:
    """Merge ``records`` into ``store`` in one write; see the module docstring.

    ``bound`` defaults to the store's own (``store.bound``, else 256).
    Raises :class:`~smd.exceptions.StoreUnavailable` when the store did not
    keep the samples (an embedded store that could not write its file).
    """
    own = getattr(store, "bound", None)
    limit = bound or (own if isinstance(own, int) and own >= 1 else DEFAULT_BOUND)
    names = [r.info.target for r in records]
    # Asked even for an empty file: an import into a store that cannot be
    # reached must say so (exit 75), not report "0 targets" it never wrote.
    known = store.targets()
    histories = store.load_many(names, clock=clock) if names else {}
    batches: dict[str, list[Sample]] = {}
    info: dict[str, TargetInfo] = {}
    results: list[TargetImport] = []
    for record in records:
        name = record.info.target
        history = histories.get(name) or TimingHistory(clock=clock)
        seen = {identity(s) for s in history.all_samples()}
        fresh: list[Sample] = []
        for sample in record.samples:
            key = identity(sample)
            if key not in seen:
                seen.add(key)
                fresh.append(sample)
        added: list[Sample] = []
        past = displaced = 0
        for series in Series:
            kept, p, d = _merge_series(
                history.series(series), [s for s in fresh if s.series is series], limit
            )
            added += kept
            past, displaced = past + p, displaced + d
        if added:
            batches[name] = sorted(added, key=lambda s: s.at)
            if known.get(name, TargetInfo(name)) == TargetInfo(name):
                info[name] = record.info  # nothing recorded here: the file's word is all there is
        results.append(
            TargetImport(
                name,
                len(added),
                len(record.samples) - len(fresh),
                past,
                displaced,
                name not in known,
            )
        )
    if batches:
        store.append_many(batches, info)
        if getattr(store, "degraded", False):
            problem = getattr(store, "problem", None) or "unknown"
            raise StoreUnavailable(
                f"{describe_store(store)} did not keep the imported samples ({problem}); "
                "nothing was imported"
            )
    return ImportResult(tuple(results), limit)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_import(result: ImportResult, source: str, where: str) -> str:
    """What ``smd history import`` prints: the totals, then one line per target."""
    name = "stdin" if source == "-" else source
    n = len(result.targets)
    lines = [
        f"smd: imported {name} into {where}: {n} target{'' if n == 1 else 's'}, "
        f"{_n(result.added, 'sample')} added, {result.present} already present, "
        f"{result.past_bound} past the bound ({result.bound} per target and series)"
        + (f", {_n(result.displaced, 'older sample')} displaced" if result.displaced else "")
    ]
    for t in result.targets:
        new = " (new target)" if t.new_target else ""
        lines.append(
            f"  {t.target}{new}: added {t.added}, already present {t.present}, "
            f"past the bound {t.past_bound}" + (f", displaced {t.displaced}" if t.displaced else "")
        )
    return "\n".join(lines)
