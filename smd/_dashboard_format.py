"""The dashboard's formatting: escaped text and elements showing one JSON field each."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from smd._encode import iso


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | int) -> str:
    """A number exactly as the JSON view has it: integral values without ``.0``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _seconds(value: float) -> str:
    return f"{_num(value)} s"


def _percent(value: float) -> str:
    return f"{_num(round(value * 100, 4))}%"


def _field(path: str, value: Any, text: str | None = None, *, tag: str = "span") -> str:
    """An element showing one JSON field: ``data-field`` names it, ``data-value`` holds it."""
    shown = _esc(value) if text is None else text
    data = _esc(json.dumps(value, ensure_ascii=False))
    return f'<{tag} data-field="{_esc(path)}" data-value="{data}">{shown}</{tag}>'


def _get(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _seconds_field(data: Mapping[str, Any], path: str) -> str:
    value = _get(data, path)
    if value is None:
        return _field(path, None, "-")
    return _field(path, value, _seconds(value))


def _int_field(data: Mapping[str, Any], path: str) -> str:
    value = _get(data, path)
    return _field(path, value, _num(value) if isinstance(value, int | float) else "-")


def _percent_field(data: Mapping[str, Any], path: str) -> str:
    value = _get(data, path)
    return _field(path, value, _percent(value) if isinstance(value, int | float) else "-")


def _time_label(at: float, span: float) -> str:
    text = iso(at) or ""
    if span >= 2 * 86400:
        return text[5:16].replace("T", " ")  # MM-DD HH:MM
    if span >= 120:
        return text[11:16]  # HH:MM
    return text[11:19]  # HH:MM:SS
