"""Carry learned history over: ``smd history export FILE`` and ``smd history import FILE``.

An export is one JSON document (``"format": "smd-history"``, ``"version": 1``)
holding every target of a store -- its history key, what is known about it
(startup, dependency, environment, phase, timeout policy) -- and its samples
as :meth:`smd.timeouts.Sample.to_dict` writes them. It passes the one
encoder (:func:`smd._encode.encode`), so every string in it is redacted and
every float rounded to microseconds; history keys hold no user or password
to begin with (``api/postgres://db:5432/app@production``).

An import merges by target into the store the settings name (the shared
``SMD_HISTORY_URL`` store, else the embedded SQLite one). A sample's
identity is ``(series, at, seconds, censored, kind)`` at microsecond
resolution, so importing a file twice, or into the store it came from, adds
nothing. Per ``(target, series)`` the store keeps its newest ``bound``
samples: imported samples older than those are not written (*past the
bound*), and newer ones may push out the store's oldest (*displaced*), as
recording them live would. Metadata from the file is used only for targets
the store knows nothing about. Everything is written in one call of the
store, one transaction in both built-in stores: an import lands whole or
not at all.

A file that cannot be read, is not JSON, is of another format or version,
or holds a malformed entry is refused before anything is written, with one
line naming the file and the place (``targets[2].samples[5].seconds``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smd._encode import DIGITS, encode, iso
from smd._failures import FailureKind
from smd._open_store import FallbackStore, open_store
from smd._samples import DEFAULT_BOUND, Sample, Series, TimingHistory
from smd._store import HistoryStore, MemoryHistoryStore, TargetInfo
from smd.clock import Clock, SystemClock
from smd.exceptions import SettingsError, StoreUnavailable, UsageError

if TYPE_CHECKING:
    from smd._settings import Settings

__all__ = [
    "FORMAT",
    "VERSION",
    "ImportResult",
    "TargetImport",
    "TargetRecord",
    "describe_store",
    "export_document",
    "import_records",
    "open_history",
    "parse_document",
    "read_export",
    "render_import",
    "write_export",
]

FORMAT: Final = "smd-history"
#: Bumped when a reader of the previous version would misread a file.
VERSION: Final = 1
_META: Final = ("startup", "dependency", "environment", "phase")
_SAMPLE_KEYS: Final = frozenset({"series", "at", "seconds", "censored", "kind"})
_TIMED: Final = frozenset({Series.READY, Series.ATTEMPT})  # samples that must have seconds


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target of an export: what is known about it, and its samples (oldest first)."""

    info: TargetInfo
    samples: tuple[Sample, ...]


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


def open_history(settings: Settings, *, readonly: bool) -> HistoryStore:
    """The store export, import and replay use: the one the settings name, no fallback.

    A run falls back to the embedded store when the shared one fails (it must
    not stop startup); a transfer must not read or write the wrong store, so
    here the shared store's trouble is :class:`~smd.exceptions.StoreUnavailable`.
    """
    if not settings.history_enabled:
        raise SettingsError(
            "history is disabled (SMD_HISTORY_ENABLED=false): there is no history store to use"
        )
    store = open_store(settings, readonly=readonly)
    if isinstance(store, FallbackStore):
        return store.primary
    if settings.history_url is not None:
        raise StoreUnavailable(
            "the history store SMD_HISTORY_URL names could not be opened (see the warning above)"
        )
    if type(store) is MemoryHistoryStore:  # what open_store gives for a path it cannot use
        raise StoreUnavailable(
            f"the history path {settings.history_file()} cannot be used (see the warning above)"
        )
    return store


def describe_store(store: HistoryStore) -> str:
    """A name for ``store`` fit for output (never a secret)."""
    where = getattr(store, "where", None)  # the PostgreSQL store names itself, redacted
    if isinstance(where, str):
        return where
    path = getattr(store, "path", None)
    if path is not None:
        return f"SQLite history store {path}"
    return type(store).__name__


# -- export -----------------------------------------------------------------------


def export_document(store: HistoryStore, *, clock: Clock | None = None) -> dict[str, Any]:
    """Every target of ``store`` and its samples, as the versioned export document."""
    import smd

    clock = clock or SystemClock()
    known = store.targets()
    histories = store.load_many(list(known), clock=clock)
    targets = []
    for name, info in known.items():
        history = histories.get(name) or TimingHistory(clock=clock)
        entry: dict[str, Any] = {"target": name}
        entry.update({k: getattr(info, k) for k in _META})
        entry["policy"] = dict(info.policy)
        entry["samples"] = [s.to_dict() for s in history.all_samples()]
        targets.append(entry)
    doc: dict[str, Any] = encode(
        {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": iso(clock.wall()),
            "smd_version": str(smd.__version__),
            "targets": targets,
        }
    )
    return doc


def write_export(path: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically and owner-only (0600); ``-`` is stdout."""
    from smd._trace import write_private

    text = json.dumps(doc, indent=1) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write_private(temporary, text)
        os.replace(temporary, target)  # readers see the old file or the new one, never half
    finally:
        if temporary.exists():
            temporary.unlink()


# -- reading a file ---------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


def read_export(path: str) -> tuple[TargetRecord, ...]:
    """The targets of the export at ``path`` (``-``: stdin), or a one-line :class:`UsageError`."""
    name = "stdin" if path == "-" else repr(path)
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"history file {name} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"history file {name} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"history file {name} is not UTF-8 text (byte {exc.start}); accepted: "
            "a file written by 'smd history export'"
        ) from None
    except OSError as exc:
        raise UsageError(f"history file {name} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        where = getattr(exc, "lineno", None)
        at = f" at line {where}, column {getattr(exc, 'colno', '?')}" if where else ""
        msg = getattr(exc, "msg", "invalid JSON")
        raise UsageError(
            f"history file {name} is not JSON ({msg}{at}); accepted: a file written by "
            "'smd history export'"
        ) from None
    try:
        return parse_document(data)
    except _Bad as exc:
        place = f" at {exc.where}" if exc.where else ""
        raise UsageError(f"history file {name}{place}: {exc.problem}") from None


def parse_document(data: object) -> tuple[TargetRecord, ...]:
    """The targets of an export document; raises ``_Bad`` naming the place of the first problem."""
    accepted = "a file written by 'smd history export'"
    if not isinstance(data, dict):
        raise _Bad("", f"the document is {_kind(data)}, not an object; accepted: {accepted}")
    if data.get("format") != FORMAT:
        raise _Bad(
            "format", f"is {data.get('format')!r}, expected {FORMAT!r}; accepted: {accepted}"
        )
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise _Bad(
            "version",
            f"version {version!r} is not one this smd reads (it reads version {VERSION}); "
            "import it with the smd that exported it, or a newer one",
        )
    targets = data.get("targets")
    if not isinstance(targets, list):
        raise _Bad("targets", f"is {_kind(targets)}, expected a list of targets")
    records: list[TargetRecord] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(targets):
        record = _target(entry, f"targets[{i}]")
        name = record.info.target
        if name in first:
            raise _Bad(f"targets[{i}].target", f"{name!r} is already at targets[{first[name]}]")
        first[name] = i
        records.append(record)
    return tuple(records)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "unknown")


def _target(entry: object, where: str) -> TargetRecord:
    if not isinstance(entry, dict):
        raise _Bad(where, f"is {_kind(entry)}, expected an object with 'target' and 'samples'")
    name = entry.get("target")
    if not isinstance(name, str) or not name.strip():
        raise _Bad(f"{where}.target", "expected the target's history key, a non-empty string")
    meta: dict[str, str] = {}
    for key in _META:
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise _Bad(f"{where}.{key}", f"is {_kind(value)}, expected a string")
        meta[key] = value
    policy = entry.get("policy", {})
    if not isinstance(policy, dict):
        raise _Bad(f"{where}.policy", f"is {_kind(policy)}, expected an object")
    samples = entry.get("samples")
    if not isinstance(samples, list):
        raise _Bad(f"{where}.samples", f"is {_kind(samples)}, expected a list of samples")
    parsed = tuple(_sample(s, f"{where}.samples[{j}]") for j, s in enumerate(samples))
    info = TargetInfo(name, policy=policy, **meta)
    return TargetRecord(info, tuple(sorted(parsed, key=lambda s: s.at)))


def _sample(data: object, where: str) -> Sample:
    if not isinstance(data, dict):
        raise _Bad(where, f"is {_kind(data)}, expected an object")
    unknown = sorted(set(data) - _SAMPLE_KEYS)
    if unknown:
        raise _Bad(
            f"{where}.{unknown[0]}", f"unknown field; accepted: {', '.join(sorted(_SAMPLE_KEYS))}"
        )
    series = data.get("series")
    if series not in {s.value for s in Series}:
        accepted = ", ".join(s.value for s in Series)
        raise _Bad(f"{where}.series", f"is {series!r}; accepted: {accepted}")
    at = data.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise _Bad(
            f"{where}.at", f"is {at!r}, expected a wall-clock time in seconds since the epoch"
        )
    seconds = data.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise _Bad(f"{where}.seconds", f"is {seconds!r}, expected a number of seconds >= 0 or null")
    if seconds is None and Series(str(series)) in _TIMED:
        raise _Bad(f"{where}.seconds", f"a {series} sample needs its number of seconds")
    censored = data.get("censored", False)
    if not isinstance(censored, bool):
        raise _Bad(f"{where}.censored", f"is {censored!r}, expected true or false")
    kind = data.get("kind")
    if kind is not None and kind not in {k.value for k in FailureKind}:
        accepted = ", ".join(k.value for k in FailureKind)
        raise _Bad(f"{where}.kind", f"is {kind!r}; accepted: {accepted} or null")
    return Sample.from_dict(data)


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
    limit = int(bound or getattr(store, "bound", DEFAULT_BOUND))
    names = [r.info.target for r in records]
    known = store.targets() if names else {}
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


def render_import(result: ImportResult, source: str, where: str) -> str:
    """What ``smd history import`` prints: the totals, then one line per target."""
    name = "stdin" if source == "-" else source
    n = len(result.targets)
    lines = [
        f"smd: imported {name} into {where}: {n} target{'' if n == 1 else 's'}, "
        f"{result.added} samples added, {result.present} already present, "
        f"{result.past_bound} past the bound ({result.bound} per target and series)"
        + (f", {result.displaced} older samples displaced" if result.displaced else "")
    ]
    for t in result.targets:
        new = " (new target)" if t.new_target else ""
        lines.append(
            f"  {t.target}{new}: added {t.added}, already present {t.present}, "
            f"past the bound {t.past_bound}" + (f", displaced {t.displaced}" if t.displaced else "")
        )
    return "\n".join(lines)
