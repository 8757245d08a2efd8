"""Typos are named: unknown keys in settings files stop, unknown ``SMD_*`` variables warn.

pydantic-settings ignores a top-level key it does not know (every source
shares one namespace with the app's own variables), so ``startup_budgett = 7``
in ``smd.toml`` would silently leave the budget at 120 s. :func:`unknown_keys`
walks what the files and the environment hold against the settings model
(the engine's and every plugin's fields, nested models included) and names
each unknown key with the closest valid one.

Variables smd sets itself for the server it execs (``SMD_STARTUP_STATE``,
``SMD_STARTUP_REASONS``, ``SMD_STARTUP_REPORT``) and the test bed's
``SMD_PG_BINDIR`` are not settings and are never reported.
"""

from __future__ import annotations

import copy
import io
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from smd.exceptions import SettingsError

__all__ = [
    "NOT_SETTINGS",
    "SettingsWarning",
    "UnknownKey",
    "read_toml",
    "settings_files",
    "unknown_key_inside",
    "unknown_keys",
]


class SettingsWarning(UserWarning):
    """An ``SMD_*`` environment variable that is no setting (a typo?)."""


#: ``SMD_*`` variables that are not settings (smd sets the first three for CMD).
NOT_SETTINGS = frozenset(
    {"SMD_STARTUP_STATE", "SMD_STARTUP_REASONS", "SMD_STARTUP_REPORT", "SMD_PG_BINDIR"}
)
_PREFIX = "SMD_"
_DELIMITER = "__"


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """A key no setting has: where it was found, as written, and the closest valid one."""

    source: str
    key: str
    closest: str | None
    #: The valid keys at the unknown key's level, as the user would write them.
    accepted: tuple[str, ...] = ()

    def message(self) -> str:
        if self.closest:
            hint = f"; did you mean {self.closest!r}?"
        elif self.accepted and len(self.accepted) <= _LISTED:
            hint = f"; accepted: {', '.join(self.accepted)}"
        else:
            hint = f"; accepted: the keys listed in {_DOCUMENTED}"
        return f"unknown setting {self.key!r} in {self.source}{hint}"


#: Up to this many valid keys are listed; more are pointed to where they are documented.
_LISTED = 8
_DOCUMENTED = "docs/reference/settings.md"


def _model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping))


def _walk(
    model: type[BaseModel], data: Mapping[str, Any], prefix: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """``(path, valid names at that level)`` for every unknown key in ``data``."""
    fields = model.model_fields
    for key, value in data.items():
        name = str(key).lower()
        if name not in fields:
            yield (*prefix, str(key)), sorted(fields)
            continue
        annotation = fields[name].annotation
        sub = _model(annotation)
        if sub is not None and isinstance(value, Mapping) and not _is_mapping(annotation):
            yield from _walk(sub, value, (*prefix, name))


def _closest(word: str, valid: list[str]) -> str | None:
    import difflib  # only for a key that is wrong

    found = difflib.get_close_matches(word.lower(), valid, n=1, cutoff=0.6)
    return found[0] if found else None


# path -> ((inode, size, mtime), parsed): the last parse of each settings file.
_parsed: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def read_toml(path: Path) -> dict[str, Any]:
    """``path`` parsed as TOML, parsed once while the file is unchanged.

    Loading settings reads ``smd.toml`` and ``pyproject.toml`` twice (for the
    unknown keys, then as pydantic-settings sources; a project's
    pyproject.toml is a few hundred lines and pure-Python TOML parsing is
    the costliest part of reading settings): both go through here. Callers
    get their own copy, so nothing one does to it reaches the other.
    """
    with path.open("rb") as fh:
        stat = os.fstat(fh.fileno())
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        key = os.path.abspath(path)
        cached = _parsed.get(key)
        if cached is None or cached[0] != stamp:
            cached = _parsed[key] = (stamp, tomllib.load(fh))
    return copy.deepcopy(cached[1])


def settings_files() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, table)`` for smd.toml and ``[tool.smd]``, highest priority first.

    ``where`` names the file as every message does (``/abs/smd.toml``,
    ``[tool.smd] of /abs/pyproject.toml``).
    """
    toml = Path("smd.toml")
    if toml.is_file():
        yield str(toml.absolute()), read_toml(toml)
    pyproject = Path("pyproject.toml")
    if pyproject.is_file():
        table = read_toml(pyproject).get("tool", {}).get("smd")
        if isinstance(table, Mapping):
            yield f"[tool.smd] of {pyproject.absolute()}", table


def _dotenv() -> dict[str, str]:
    """The ``SMD_*`` names ``.env`` sets, read by the parser pydantic-settings reads it with.

    (A line of a quoted multi-line value is part of that value, not a name.) A
    line that parser cannot read is a :class:`~smd.exceptions.SettingsError`
    naming its number, never its text (it may hold a secret): the parser would
    skip it with a warning of its own, and the setting on it would be lost.
    """
    path = Path(".env")
    if not path.is_file():
        return {}
    from dotenv.parser import parse_stream

    names: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(path.read_text(encoding="utf-8"))):
        if binding.error:
            raise SettingsError(
                f"cannot parse settings file {path.absolute()} at line {binding.original.line}; "
                "accepted: KEY=VALUE lines (a quoted value closes its quote), blank lines "
                "and # comments"
            )
        if binding.key is not None and binding.key.upper().startswith(_PREFIX):
            names[binding.key] = ""
    return names


def _nested(path: Sequence[str]) -> dict[str, Any]:
    """A key's path as the data :func:`_walk` reads: ``("a", "b")`` is ``{"a": {"b": ""}}``."""
    nested: dict[str, Any] = {}
    level = nested
    for part in path[:-1]:
        level = level.setdefault(part, {})
    level[path[-1]] = ""
    return nested


def _variables(model: type[BaseModel], names: Mapping[str, Any], source: str) -> list[UnknownKey]:
    """Unknown ``SMD_*`` names: ``SMD_A__B`` is the nested key ``a.b``."""
    out: list[UnknownKey] = []
    for name in names:
        upper = name.upper()
        if not upper.startswith(_PREFIX) or upper in NOT_SETTINGS:
            continue
        parts = upper[len(_PREFIX) :].lower().split(_DELIMITER)
        for path, valid in _walk(model, _nested(parts), ()):
            head = _PREFIX + _DELIMITER.join(p.upper() for p in path[:-1])
            head = head + _DELIMITER if len(path) > 1 else head
            close = _closest(path[-1], valid)
            out.append(
                UnknownKey(
                    source,
                    name,
                    None if close is None else head + close.upper(),
                    tuple(head + v.upper() for v in valid),
                )
            )
    return out


def unknown_key_inside(
    model: type[BaseModel], loc: Sequence[str], variable: str, depth: int
) -> UnknownKey | None:
    """The unknown key ``loc`` ends on, inside the JSON value of ``variable``.

    ``loc`` is the key's path in ``model`` (a validation error's), the first
    ``depth`` parts of it naming ``variable`` (``SMD_TIMEOUTS`` is one,
    ``SMD_TIMEOUTS__PRODUCTION`` two): the key, the closest valid one and the
    accepted ones are written as inside that value (``production.floor``).
    ``None`` when ``loc`` ends on a key that exists.
    """
    for path, valid in _walk(model, _nested(loc), ()):
        if len(path) != len(loc) or len(path) <= depth:
            continue
        inner = path[depth:-1]
        close = _closest(path[-1], valid)
        return UnknownKey(
            variable,
            ".".join((*inner, path[-1])),
            None if close is None else ".".join((*inner, close)),
            tuple(".".join((*inner, v)) for v in valid),
        )
    return None


def unknown_keys(
    model: type[BaseModel], *, environ: Mapping[str, str] | None = None
) -> tuple[list[UnknownKey], list[UnknownKey]]:
    """``(in files, in the environment)``: unknown keys of settings files and
    ``.env`` (errors), and unknown ``SMD_*`` environment variables (warnings)."""
    errors: list[UnknownKey] = []
    for source, data in settings_files():
        for path, valid in _walk(model, data, ()):
            close = _closest(path[-1], valid)
            errors.append(
                UnknownKey(
                    source,
                    ".".join(path),
                    None if close is None else ".".join((*path[:-1], close)),
                    tuple(".".join((*path[:-1], v)) for v in valid),
                )
            )
    errors += _variables(model, _dotenv(), f"{Path('.env').absolute()}")
    env = os.environ if environ is None else environ
    return errors, _variables(model, env, "the environment")
