"""The export file of ``smd history export``: one versioned JSON document.

``{"format": "smd-history", "version": 1, "exported_at": ..., "smd_version": ...,
"targets": [...]}``: each target is its history key, what is known about it
(startup, dependency, environment, phase, timeout policy) and its samples
as :meth:`smd.timeouts.Sample.to_dict` writes them (``series``, ``at``,
``seconds``, ``censored``, ``kind``), oldest first. The document passes the
one encoder (:func:`smd._encode.encode`): every string is redacted, every
float rounded to microseconds. Keys are masked as the engine masks a
dependency (:func:`safe_key`), on the way out and on the way in.

:func:`read_export` refuses a file that cannot be read, is not JSON, is of
another format or version, or holds a malformed entry, with one line naming
the file and the place (``targets[2].samples[5].seconds``) and what is
accepted, before anything is written anywhere. A target's key must be a
history key as the engine builds it (:func:`~smd.history.target_key`) for an
environment smd knows, must hold no secret (a key masked as the export masks
it is fine), and the entry's ``startup``, ``dependency``, ``environment`` and
``phase`` must agree with it (empty: unknown).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from smd._deadline import BUILT_IN_POLICIES, policy_from_spec
from smd._encode import encode, iso
from smd._failures import FailureKind
from smd._redact import redact
from smd._samples import Sample, Series, TimingHistory
from smd._settings import Environment
from smd._store import HistoryStore, TargetInfo, split_target, target_key
from smd.clock import Clock, SystemClock
from smd.exceptions import UsageError

__all__ = [
    "FORMAT",
    "VERSION",
    "TargetRecord",
    "export_document",
    "parse_document",
    "read_export",
    "render_export",
    "safe_key",
    "write_export",
]

FORMAT: Final = "smd-history"
#: Bumped when a reader of the previous version would misread a file.
VERSION: Final = 1
_META: Final = ("startup", "dependency", "environment", "phase")
_SAMPLE_KEYS: Final = frozenset({"series", "at", "seconds", "censored", "kind"})
_TIMED: Final = frozenset({Series.READY, Series.ATTEMPT})  # samples that must have seconds
#: The wall-clock times a sample's ``at`` may hold: from the epoch to the last
#: second of 9999-12-31 UTC. ``at`` is when a run recorded the sample, so it is
#: never before 1970 (and a negative ``fromtimestamp`` fails on some platforms);
#: year 9999 is the last one :class:`datetime.datetime` can represent, and every
#: view turns ``at`` into ISO text through it. A time outside this range is a
#: broken or hand-made entry, not a measurement.
LATEST_AT: Final = 253_402_300_799.0  # datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
#: What a target's key may be, for the messages that refuse one.
_KEY_ACCEPTED: Final = (
    "accepted: a history key '<startup>/<dependency>@<environment>' as 'smd history export' "
    "writes it, e.g. 'shop/postgres://db:5432/app@production', any password masked as "
    "'postgres://app:***@db:5432/app'"
)


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One target of an export: what is known about it, and its samples (oldest first)."""

    info: TargetInfo
    samples: tuple[Sample, ...]


# -- export -----------------------------------------------------------------------


def safe_key(key: str) -> str:
    """``key`` with any secret its dependency part holds masked.

    The engine redacts a dependency before it builds a key, but a store
    written through its API (or a hand-edited file) may hold a key such as
    ``api/postgresql://app:secret@db/app@production``, and the one redaction
    rule leaves ``startup/scheme://...`` alone on purpose (it reads as a
    history key). So the key is split as :func:`~smd.history.target_key`
    builds it and the dependency passes :func:`~smd._redact.redact` alone,
    as the engine does.
    """
    parts = _split_key(key)
    if parts is None:
        return redact(key)
    startup, dependency, env = parts
    return f"{redact(startup)}/{redact(dependency)}" + ("" if env is None else f"@{env}")


def _split_key(key: str) -> tuple[str, str, str | None] | None:
    """``(startup, dependency, environment)`` of a key as :func:`~smd.history.target_key`
    builds it (``None``: no ``/``; environment ``None``: no ``@<environment>`` suffix).

    A startup's name may hold a ``/`` itself: the split is at the first one,
    so what the entry's ``startup`` says wins where it is given (:func:`_check_meta`).
    """
    rest, env = split_target(key)
    startup, sep, dependency = rest.partition("/")
    return (startup, dependency, env) if sep else None


def export_document(store: HistoryStore, *, clock: Clock | None = None) -> dict[str, Any]:
    """Every target of ``store`` and its samples, as the versioned export document."""
    import smd

    clock = clock or SystemClock()
    known = store.targets()
    histories = store.load_many(list(known), clock=clock)
    targets: dict[str, dict[str, Any]] = {}
    for name, info in known.items():
        history = histories.get(name) or TimingHistory(clock=clock)
        key = safe_key(name)
        entry: dict[str, Any] = targets.setdefault(key, {"target": key, "samples": []})
        entry.update({k: getattr(info, k) for k in _META})
        entry["policy"] = dict(info.policy)
        # Keys that differ only by a masked secret are one target once masked.
        entry["samples"] = sorted([*entry["samples"], *history.all_samples()], key=lambda s: s.at)
    for entry in targets.values():
        entry["samples"] = [s.to_dict() for s in entry["samples"]]
    doc: dict[str, Any] = encode(
        {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": iso(clock.wall()),
            "smd_version": str(smd.__version__),
            "targets": [targets[k] for k in sorted(targets)],
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
    write_private(path, text)  # atomic: readers see the old file or the new one, never half


def render_export(doc: Mapping[str, Any], path: str, where: str) -> str:
    """What ``smd history export`` prints once the file is written."""
    n = len(doc["targets"])
    k = sum(len(t["samples"]) for t in doc["targets"])
    to = "" if path == "-" else f" to {path}"
    return (
        f"smd: exported {n} target{'' if n == 1 else 's'} "
        f"({k} sample{'' if k == 1 else 's'}) from {where}{to}"
    )


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
        meta[key] = redact(value)
    parts = _check_key(name, f"{where}.target", meta.get("startup", ""))
    _check_meta(name, parts, meta, where)
    policy = entry.get("policy", {})
    if not isinstance(policy, dict):
        raise _Bad(f"{where}.policy", f"is {_kind(policy)}, expected an object")
    _check_policy(policy, f"{where}.policy")
    samples = entry.get("samples")
    if not isinstance(samples, list):
        raise _Bad(f"{where}.samples", f"is {_kind(samples)}, expected a list of samples")
    parsed = tuple(_sample(s, f"{where}.samples[{j}]") for j, s in enumerate(samples))
    info = TargetInfo(name, policy=policy, **meta)
    return TargetRecord(info, tuple(sorted(parsed, key=lambda s: s.at)))


def _check_key(name: str, where: str, startup: str = "") -> tuple[str, str, str]:
    """``(startup, dependency, environment)`` of the history key ``name``, or ``_Bad``
    saying why it is not one.

    ``startup`` is the entry's own (empty: unknown): a startup's name may
    hold a ``/``, even begin with one, so the key is split after it when the
    key begins with it. A key holding a secret is refused without showing any
    of it: the secret would reach the store, and the message names only the place.
    """
    parts = _split_key(name)
    if startup and name.startswith(f"{startup}/") and parts is not None:
        rest, env = split_target(name)
        parts = (startup, rest[len(startup) + 1 :], env)
    if safe_key(name) != name or ((parts is None or parts[2] is None) and redact(name) != name):
        raise _Bad(
            where,
            "holds a secret (a URL's password or a password parameter), not shown here; "
            + _KEY_ACCEPTED,
        )
    # "postgres://db/app@production" splits at the "//" of its scheme: no startup either.
    if parts is None or not parts[0] or (parts[0].endswith(":") and parts[1].startswith("/")):
        raise _Bad(
            where, "is not a history key: it names no startup before a '/'; " + _KEY_ACCEPTED
        )
    startup, dependency, env = parts
    if env is None:
        raise _Bad(where, "is not a history key: it ends in no '@<environment>'; " + _KEY_ACCEPTED)
    if not dependency:
        raise _Bad(where, "is not a history key: its dependency is empty; " + _KEY_ACCEPTED)
    known = ", ".join(e.value for e in Environment)
    try:
        environment = Environment.parse(env)
    except ValueError:
        raise _Bad(
            where, f"the key's environment {_shown(env)} is not one smd knows; accepted: {known}"
        ) from None
    if environment.value != env:
        raise _Bad(
            where,
            f"the key's environment {_shown(env)} is written {environment.value!r} "
            f"in a history key; accepted: {known}",
        )
    return startup, dependency, env


def _check_meta(
    name: str, parts: tuple[str, str, str], meta: Mapping[str, str], where: str
) -> None:
    """Refuse metadata that contradicts the key ``name`` (an empty field is unknown: fine)."""
    environment = parts[2]
    rest = name[: -len(environment) - 1]
    accepted = "accepted: what the key says, or empty when unknown"
    startup, dependency = meta["startup"], meta["dependency"]
    if meta["environment"] and meta["environment"] != environment:
        raise _Bad(
            f"{where}.environment",
            f"is {_shown(meta['environment'])}, but the key is for {environment!r}; {accepted}",
        )
    if startup and not (rest.startswith(f"{startup}/") and len(rest) > len(startup) + 1):
        raise _Bad(
            f"{where}.startup",
            f"is {_shown(startup)}, but the key is of startup {_shown(parts[0], 80)}; {accepted}",
        )
    named = rest[len(startup) + 1 :] if startup else parts[1]  # the dependency the key names
    if dependency and not (
        target_key(startup, dependency, environment) == name
        if startup
        else rest.endswith(f"/{dependency}") and len(rest) > len(dependency) + 1
    ):
        raise _Bad(
            f"{where}.dependency",
            f"is {_shown(dependency, 80)}, but the key is of dependency {_shown(named, 80)}; "
            f"{accepted}",
        )
    # The phase is not checked: a phase may keep another's history (its
    # ``target="phase:legacy"``), so the key's dependency need not name it.


def _check_policy(policy: Mapping[str, Any], where: str) -> None:
    """Refuse a built-in timeout policy's spec that ``smd history`` could not rebuild."""
    if not policy:
        return  # nothing recorded: the views use the settings' default
    kind = policy.get("type")
    if kind not in BUILT_IN_POLICIES:
        return  # a custom policy's spec: the views say so, they never rebuild it
    rebuilt = policy_from_spec(policy)
    if isinstance(rebuilt, str):
        raise _Bad(
            where,
            f"{rebuilt}; accepted: a timeout policy as 'smd history export' writes it, "
            'e.g. {"type": "fixed", "seconds": 5} with seconds > 0',
        )


def _finite(x: float) -> bool:
    """Whether ``x`` is a finite float; an integer too large for one is not."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _shown(value: object, limit: int = 40) -> str:
    """``repr(value)``, shortened: a 400-digit number in a file is not worth a 400-digit line."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-8:]} ({len(text)} characters)"


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
    if (
        isinstance(at, bool)
        or not isinstance(at, int | float)
        or not _finite(at)
        or not 0 <= at <= LATEST_AT
    ):
        raise _Bad(
            f"{where}.at",
            f"is {_shown(at)}, expected a wall-clock time in seconds since the epoch, "
            f"from 0 (1970-01-01T00:00:00Z) to {LATEST_AT:.0f} (9999-12-31T23:59:59Z)",
        )
    seconds = data.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not _finite(seconds)
        or seconds < 0
    ):
        raise _Bad(
            f"{where}.seconds", f"is {_shown(seconds)}, expected a number of seconds >= 0 or null"
        )
    if seconds is None and Series(str(series)) in _TIMED:
        article = "an" if str(series)[0] in "aeiou" else "a"
        raise _Bad(f"{where}.seconds", f"{article} {series} sample needs its number of seconds")
    censored = data.get("censored", False)
    if not isinstance(censored, bool):
        raise _Bad(f"{where}.censored", f"is {censored!r}, expected true or false")
    kind = data.get("kind")
    if kind is not None and kind not in {k.value for k in FailureKind}:
        accepted = ", ".join(k.value for k in FailureKind)
        raise _Bad(f"{where}.kind", f"is {kind!r}; accepted: {accepted} or null")
    return Sample.from_dict(data)
