"""The one serialisation boundary: frozen values to JSON-ready data.

Every report, plan document, history view, trace and health body passes
:func:`encode`, which

- turns dataclasses into mappings field by field (a field whose metadata has
  ``encode=False`` is left out; one with ``timestamp=True`` is a wall-clock
  time and becomes :func:`iso` text);
- rounds floats to microseconds (6 digits: the finest any clock here
  resolves, and short enough to read);
- turns enums into their values, mappings into dicts, sequences into lists;
- redacts every string, so no secret leaves through any serialised output.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from smd._redact import redact

__all__ = ["DIGITS", "SKIP", "TIMESTAMP", "encode", "iso"]

DIGITS = 6
#: Field metadata marking a wall-clock timestamp (seconds since the epoch).
TIMESTAMP: Mapping[str, object] = {"timestamp": True}
#: Field metadata keeping a field out of every serialised form.
SKIP: Mapping[str, object] = {"encode": False}


def iso(at: float | None) -> str | None:
    """A wall-clock time as ISO-8601 UTC with milliseconds: ``2026-11-28T20:32:15.123Z``.

    A time :class:`~datetime.datetime` cannot represent (a sample written by an
    older smd or by hand, e.g. ``at = 1e30``) is the raw number of seconds
    instead, ``1e+30 s since the epoch (out of range)``: a view shows it rather
    than fail for good on it.
    """
    if at is None or not math.isfinite(at):
        return None
    try:
        text = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):  # out of time_t's or datetime's range
        return f"{float(at):g} s since the epoch (out of range)"
    return text.replace("+00:00", "Z")


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data, rounded and redacted (see the module docstring)."""
    if value is None or (isinstance(value, bool | int) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if isinstance(value, float):
        return round(value, DIGITS) if math.isfinite(value) else None
    if isinstance(value, str):
        return redact(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if f.name.startswith("_") or f.metadata.get("encode") is False:
                continue
            item = getattr(value, f.name)
            out[f.name] = iso(item) if f.metadata.get("timestamp") else encode(item)
        return out
    if isinstance(value, Mapping):
        return {str(encode(k)): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    if isinstance(value, BaseException):
        text = str(value)
        return redact(f"{type(value).__name__}: {text}" if text else type(value).__name__)
    return redact(str(value))
