"""Loading settings: every source, plugins' models merged in, one-line errors.

:func:`load_settings` builds :func:`settings_class` (the engine's
:class:`~smd._settings.Settings` merged with the models plugins contribute)
from arguments, ``SMD_*`` environment variables, ``.env``, ``smd.toml`` and
``[tool.smd]``; an invalid value raises :class:`~smd.exceptions.SettingsError`
with one line naming the variable (or argument) and what it accepts.
"""

from __future__ import annotations

import functools
import tomllib
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError as PydanticSettingsError

from smd._settings import Settings
from smd._settings_keys import SettingsWarning, unknown_keys
from smd.exceptions import SettingsError
from smd.plugins import settings_models

__all__ = ["load_settings", "settings_class"]


def _variable(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if str(p) != "[key]"]
    return "SMD_" + "__".join(p.upper() for p in parts)


def _secret_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Top-level fields holding a secret (their values are never echoed)."""
    return frozenset(
        name
        for name, info in cls.model_fields.items()
        if SecretStr in typing.get_args(info.annotation) or info.annotation is SecretStr
    )


def _format_error(
    err: ValidationError, cls: type[BaseModel], argument_names: Mapping[str, str]
) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    name = _variable(loc) if loc else "settings"
    if loc and str(loc[0]) in argument_names:
        name = f"argument {argument_names[str(loc[0])]}"
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if first.get("type") in ("enum", "literal_error") and "expected" in first.get("ctx", {}):
        msg = f"accepted: {first['ctx']['expected']}"
    # Never echo the offending value of a secret; other values help.
    value = first.get("input")
    secret = bool(loc) and str(loc[0]) in _secret_fields(cls)
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    what = "invalid" if name.startswith("argument ") else "invalid setting"
    return f"{what} {name}{shown}: {msg}{tail}"


_SETTINGS_FILES = ("smd.toml", "pyproject.toml")
_READABLE = "accepted: a readable UTF-8 text file"


def _not_a_file() -> str | None:
    # pydantic-settings silently skips a settings file that is not a regular
    # file; a user who wrote one expects it read, so say why it cannot be.
    for name in _SETTINGS_FILES:
        path = Path(name)
        if path.is_file() or not (path.is_symlink() or path.exists()):
            continue
        what = (
            "a directory"
            if path.is_dir()
            else "a broken or looping symbolic link"
            if not path.exists()
            else "not a regular file"
        )
        return f"cannot read settings file {path.absolute()}: it is {what}; accepted: a TOML file"
    return None


def _culprit(err: Exception) -> str:
    """Name the settings file behind a read, decode or TOML error (the error may not)."""
    named = getattr(err, "filename", None)
    for name in (named,) if named else (*_SETTINGS_FILES, ".env"):
        path = Path(name)
        try:
            if path.is_file():
                text = path.read_bytes().decode("utf-8")
                if path.suffix == ".toml":
                    tomllib.loads(text)
        except OSError as exc:
            return f"cannot read settings file {path.absolute()}: {exc.strerror}; {_READABLE}"
        except UnicodeDecodeError:
            return f"cannot read settings file {path.absolute()}: not valid UTF-8; {_READABLE}"
        except tomllib.TOMLDecodeError as exc:
            return f"malformed TOML in smd.toml or pyproject.toml: {path.absolute()}: {exc}"
    if isinstance(err, tomllib.TOMLDecodeError):
        return f"malformed TOML in smd.toml or pyproject.toml: {err}"
    return f"cannot read a settings file: {err}"


@functools.lru_cache(maxsize=8)
def _merged(models: tuple[type[BaseModel], ...]) -> type[Settings]:
    merged: type[Settings] = type("Settings", (Settings, *models), {"__module__": __name__})
    return merged


def settings_class() -> type[Settings]:
    """:class:`Settings` merged with the settings models plugins contribute."""
    models = settings_models()
    return _merged(models) if models else Settings


def load_settings(*, argument_names: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from every source; raise :class:`SettingsError` on bad input.

    ``overrides`` are the highest-priority source (arguments). An invalid one
    is reported under its name in ``argument_names`` (the CLI maps
    ``environment`` to ``--env``), else as its ``SMD_*`` variable.
    """
    problem = _not_a_file()
    if problem is not None:
        raise SettingsError(problem)
    cls = settings_class()
    try:
        in_files, in_environment = unknown_keys(cls)
        settings = cls(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        if first.get("type") == "extra_forbidden":
            # A nested typo: name it with the closest valid key, like the rest.
            loc = [str(part).lower() for part in first.get("loc", ())]
            for unknown in (*in_files, *in_environment):
                words = unknown.key.lower().removeprefix("smd_").replace("__", ".").split(".")
                if words[: len(loc)] == loc:
                    raise SettingsError(unknown.message()) from None
        raise SettingsError(_format_error(err, cls, argument_names or {})) from None
    except PydanticSettingsError as err:
        # e.g. malformed JSON in a complex SMD_* variable
        raise SettingsError(f"invalid settings: {err}") from None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as err:
        raise SettingsError(_culprit(err)) from None
    if in_files:
        # A file is written on purpose: a key nothing reads is a mistake to stop on.
        raise SettingsError(in_files[0].message())
    for unknown in in_environment:
        # The environment is shared with everything else: say so, carry on.
        warnings.warn(unknown.message(), SettingsWarning, stacklevel=2)
    return settings
