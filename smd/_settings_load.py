"""Loading settings: every source, plugins' models merged in, one-line errors.

:func:`load_settings` builds :func:`settings_class` (the engine's
:class:`~smd._settings.Settings` merged with the models plugins contribute)
from arguments, ``SMD_*`` environment variables, ``.env``, ``smd.toml`` and
``[tool.smd]``; an invalid value raises :class:`~smd.exceptions.SettingsError`
with one line naming the variable (or argument, or a settings file's key and
the file) and what it accepts.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import json
import re
import tomllib
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource
from pydantic_settings import SettingsError as PydanticSettingsError

from smd._settings import Settings
from smd._settings_keys import (
    SettingsWarning,
    settings_files,
    unknown_key_inside,
    unknown_keys,
)
from smd.exceptions import SettingsError
from smd.plugins import settings_models

__all__ = ["load_settings", "settings_class"]


def _given(cls: type[BaseSettings], source: str | None = None) -> dict[str, str | None]:
    """The ``SMD_*`` variables set in the environment and ``.env`` (or one of them), upper-cased."""
    sources = (EnvSettingsSource, DotEnvSettingsSource)
    given: dict[str, str | None] = {}
    for kind in sources:
        if source is None or kind.__name__ == source:
            read = kind(cls)
            given.update((k.upper(), v) for k, v in read.env_vars.items())
    return {k: v for k, v in given.items() if k.startswith("SMD_")}


def _variable(loc: tuple[int | str, ...], given: Mapping[str, str | None]) -> str:
    """The variable behind ``loc``: the one the user set on its path, else its own.

    A list's index (``SMD_BYPASS__ALLOWED_KINDS__0``) is no variable anyone
    can set, and a value may come from a variable higher up the path, as
    JSON (``SMD_BYPASS='{"production": {...}}'``): name the variable the user set.
    """
    parts = [p.upper() for p in _path(loc)]
    full = "SMD_" + "__".join(parts)
    for n in range(len(parts) - 1, 0, -1):
        name = "SMD_" + "__".join(parts[:n])
        if full not in given and name in given and _holds(given[name], parts[n:]):
            return name
    return full


def _path(loc: tuple[int | str, ...]) -> list[str]:
    """The keys of an error's ``loc`` down to the setting: a list's index (and
    pydantic's ``[key]`` marker) belong to the value, not to its name."""
    keys: list[str] = []
    for p in loc:
        if isinstance(p, int):
            break
        if p != "[key]":
            keys.append(p)
    return keys


def _entry(node: object, keys: list[str]) -> object:
    """What nested mappings hold at ``keys`` (matched case-insensitively), or ``_MISSING``."""
    for key in keys:
        if not isinstance(node, Mapping):
            return _MISSING
        node = next((v for k, v in node.items() if str(k).lower() == key.lower()), _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _holds(value: str | None, keys: list[str]) -> bool:
    """Whether ``value``, read as JSON, has an entry at ``keys``."""
    try:
        node: object = json.loads(value or "")
    except ValueError:
        return False
    return _entry(node, keys) is not _MISSING


_MISSING = object()


# -- a complex setting (list, set, dict, model) whose value is not JSON ------------------

_PARSE_ERROR = re.compile(r'error parsing value for field "(\w+)" from source "(\w+)"')
_LISTS = (list, set, frozenset, tuple, collections.abc.Sequence, collections.abc.Set)
_MAPS = (dict, collections.abc.Mapping)
_PLAIN: dict[Any, tuple[str, list[Any]]] = {
    str: ("strings", ["a", "b"]),
    int: ("integers", [1, 2]),
    float: ("numbers", [0.5, 2]),
}


def _arms(ann: Any) -> tuple[Any, ...]:
    """The arms of ``X | None`` (or of any union) but ``None``; else ``(ann,)``."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(ann) if a is not type(None))
    return (ann,)


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _is_complex(ann: Any) -> bool:
    return any(typing.get_origin(a) in (*_LISTS, *_MAPS) or _is_model(a) for a in _arms(ann))


def _choices(ann: Any) -> list[Any]:
    """The values an enum or ``Literal`` accepts (``[]`` for any other type)."""
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return [m.value for m in ann]
    if typing.get_origin(ann) is typing.Literal:
        return list(typing.get_args(ann))
    return []


def _one_of(values: list[Any]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_accepted(ann: Any, variable: str | None) -> str:
    """What a complex setting accepts, with an example where one can be given.

    ``variable``: the environment variable the value came from, or ``None``
    for a settings file (TOML: an array or a table, not JSON text).
    """
    toml = variable is None
    for arm in _arms(ann):
        origin, args = typing.get_origin(arm), typing.get_args(arm)
        if origin in _LISTS:
            item = args[0] if args else None
            values = _choices(item)
            sample = values[:2] if values else _PLAIN.get(item, ("values", ["a", "b"]))[1]
            shown = _toml(sample) if toml else f"'{_compact(sample)}'"
            what = "an array" if toml else "a JSON list"
            if values:
                return f"{what}, e.g. {shown}, of {_one_of(values)}"
            noun = _PLAIN.get(item, ("values", []))[0]
            return f"{what} of {noun}, e.g. {shown}"
        if origin in _MAPS:
            froms, values = (_choices(a) for a in (args or (None, None)))
            what = "a table" if toml else "a JSON object"
            if froms and values:
                example = {froms[0]: values[0]}
                shown = _toml(example) if toml else f"'{_compact(example)}'"
                return f"{what}, e.g. {shown}, from {_one_of(froms)} to {_one_of(values)}"
            return f"{what}, e.g. " + ('{ key = "value" }' if toml else '\'{"key":"value"}\'')
        if _is_model(arm):
            keys = ", ".join(arm.model_fields)
            if toml:
                return f"a table with any of the keys {keys}"
            return f"a JSON object with any of the keys {keys} (or {variable}__KEY for one key)"
    return "a TOML value" if toml else "a JSON value"


def _toml(value: object) -> str:
    """A list of scalars or a one-level mapping, as TOML writes it inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    assert isinstance(value, list)
    return "[" + ", ".join(json.dumps(v) for v in value) + "]"


def _walk(ann: Any, keys: list[str]) -> Any:
    """The annotation ``keys`` (a variable's path below a field) lead to, or ``None``."""
    for key in keys:
        for arm in _arms(ann):
            if _is_model(arm):
                fields = {n.lower(): f for n, f in arm.model_fields.items()}
                if key.lower() in fields:
                    ann = fields[key.lower()].annotation
                    break
            elif typing.get_origin(arm) in _MAPS and len(typing.get_args(arm)) == 2:
                ann = typing.get_args(arm)[1]
                break
        else:
            return None
    return ann


def _holds_secret(ann: Any) -> bool:
    if ann is SecretStr:
        return True
    if _is_model(ann):
        return any(_holds_secret(f.annotation) for f in ann.model_fields.values())
    return any(_holds_secret(a) for a in typing.get_args(ann))


def _not_json(err: PydanticSettingsError, cls: type[BaseSettings]) -> str:
    """One line for a complex setting whose value does not parse as JSON."""
    found = _PARSE_ERROR.search(str(err))
    if found is None or found.group(1) not in cls.model_fields:
        return f"invalid settings: {err}"
    field, source = found.groups()
    prefix = f"SMD_{field.upper()}"
    where = ".env" if source == DotEnvSettingsSource.__name__ else "the environment"
    for name, value in _given(cls, source).items():
        if name != prefix and not name.startswith(prefix + "__"):
            continue
        keys = name[len(prefix) + 2 :].split("__") if name != prefix else []
        ann = _walk(cls.model_fields[field].annotation, keys)
        if ann is None or not _is_complex(ann) or not value:
            continue
        try:
            json.loads(value)
        except ValueError:
            shown = "" if _holds_secret(ann) else f" (got {value!r})"
            accepted = _json_accepted(ann, name)
            return f"invalid setting {name}{shown}: not valid JSON; accepted: {accepted}"
    ann = cls.model_fields[field].annotation
    return (
        f"invalid setting {prefix}: a value in {where} for it (or one of {prefix}__*) "
        f"is not valid JSON; accepted: {_json_accepted(ann, prefix)}"
    )


def _secret_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Top-level fields holding a secret anywhere inside (their values are never echoed)."""
    return frozenset(
        name for name, info in cls.model_fields.items() if _holds_secret(info.annotation)
    )


# -- a scalar setting (number, boolean) pydantic rejected: what it accepts ---------------

_BOOLEAN = "true/false (also 1/0, yes/no, on/off)"
#: pydantic's error types for a value that is not of the field's type at all.
_NOT_A = {
    "float_parsing": "not a valid number",
    "float_type": "not a valid number",
    "int_parsing": "not a valid integer",
    "int_type": "not a valid integer",
    "int_from_float": "not a whole number",
    "bool_parsing": "not a valid boolean",
    "bool_type": "not a valid boolean",
}
#: pydantic's error types for a number out of bounds, and the bound (a ctx key) they name.
_BOUNDS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _field(cls: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[type[BaseModel], str] | None:
    """The model and field name ``loc`` ends on (through nested models), or ``None``."""
    model = cls
    for i, part in enumerate(loc):
        if not isinstance(part, str) or part not in model.model_fields:
            return None
        if i == len(loc) - 1:
            return model, part
        ann = model.model_fields[part].annotation
        inner = next((a for a in _arms(ann) if _is_model(a)), None)
        if inner is None:
            return None
        model = inner
    return None


def _stated(model: type[BaseModel], name: str) -> str | None:
    """What a number field's own validator says it accepts (asked with NaN), if it says."""
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if name not in decorator.info.fields or decorator.info.mode != "after":
            continue
        try:
            decorator.func(float("nan"))
        except ValueError as exc:
            text = str(exc)
            if text.startswith("accepted: "):
                return text.removeprefix("accepted: ")
        except Exception:  # a validator that wants more than a value: no answer
            continue
    return None


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _scalar_accepted(model: type[BaseModel], name: str, ctx: Mapping[str, Any]) -> str | None:
    """What a number or boolean field accepts, from its type and its bounds."""
    arms = _arms(model.model_fields[name].annotation)
    if bool in arms:
        return _BOOLEAN
    if int in arms and float not in arms:
        noun = "an integer"
    elif float in arms or int in arms:
        noun = "a number"
    else:
        return None
    stated = _stated(model, name)  # e.g. "a positive finite number of seconds"
    if stated is not None:
        return stated
    bounds: dict[str, Any] = {}
    for constraint in model.model_fields[name].metadata:
        for key in _SIGNS:
            if getattr(constraint, key, None) is not None:
                bounds[key] = getattr(constraint, key)
    bounds.update((k, v) for k, v in ctx.items() if k in _SIGNS)
    if "ge" in bounds and "le" in bounds and len(bounds) == 2:
        return f"{noun} from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    parts = [f"{_SIGNS[k]} {_number(v)}" for k, v in bounds.items()]
    return f"{noun} {' and '.join(parts)}" if parts else noun


def _one_accepted(msg: str) -> str:
    """Keep the first (most specific) ``accepted:`` part of a message that has several.

    A validator may wrap a message that already says what is accepted
    (``invalid sslmode 'x'; accepted: disable, ...``) in its own general one.
    """
    head, sep, rest = msg.partition("; accepted: ")
    if not sep:
        return msg
    return f"{head}{sep}{rest.split('; accepted: ', 1)[0]}"


def _in_file(loc: tuple[int | str, ...]) -> str | None:
    """``key in FILE`` when the value at ``loc`` came from smd.toml or ``[tool.smd]``.

    The key is the path down to the setting (a list's index is part of its value).
    """
    keys = _path(loc)
    if not keys:
        return None
    for source, data in settings_files():  # in priority order: smd.toml first
        if _entry(data, keys) is not _MISSING:
            return f"{'.'.join(keys)} in {source}"
    return None


def _from_environment(name: str, given: Mapping[str, str | None]) -> bool:
    return name in given or any(k.startswith(name + "__") for k in given)


def _unknown_inside(loc: tuple[int | str, ...], cls: type[BaseSettings]) -> str | None:
    """An unknown key inside the JSON value of a variable (``SMD_BYPASS='{"mod": ...}'``),
    named like every unknown key: with the closest valid one, else the accepted ones."""
    if not loc or not all(isinstance(p, str) for p in loc):
        return None
    given = _given(cls)
    name = _variable(loc, given)
    if name not in given:
        return None
    depth = len(name.removeprefix("SMD_").split("__"))
    unknown = unknown_key_inside(cls, [str(p) for p in loc], name, depth)
    return None if unknown is None else unknown.message()


def _not_utf8(value: object) -> bool:
    """Whether ``value`` is text that cannot be UTF-8 (bytes the environment could not decode)."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _probed(model: type[BaseModel], name: str) -> str | None:
    """What a text field says it accepts, asked with an empty value (like :func:`_stated`)."""
    try:
        model.model_validate({name: ""})
    except ValidationError as err:
        for error in err.errors():
            if tuple(error.get("loc", ())) != (name,):
                continue
            ctx = error.get("ctx", {})
            if error.get("type") in ("enum", "literal_error") and "expected" in ctx:
                return str(ctx["expected"])
            _, sep, rest = str(error.get("msg", "")).partition("accepted: ")
            if sep:
                return rest.split("; accepted: ", 1)[0]
    except Exception:  # a validator that wants more than a value: no answer
        return None
    return None


def _text_accepted(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """What the field at ``loc`` accepts, for a value that is not even text."""
    found = _field(cls, loc)
    if found is None:
        return "UTF-8 text"
    model, name = found
    ann = model.model_fields[name].annotation
    values = [v for arm in _arms(ann) for v in _choices(arm)]
    if values:
        return _one_of(values)
    return _scalar_accepted(model, name, {}) or _probed(model, name) or "UTF-8 text"


def _not_of_kind(ann: Any, toml: bool) -> str:
    """What a complex setting's value is not (it is JSON, or TOML, of another kind)."""
    for arm in _arms(ann):
        if typing.get_origin(arm) in _LISTS:
            return "not an array" if toml else "not a JSON list"
    return "not a table" if toml else "not a JSON object"


def _format_error(
    err: ValidationError, cls: type[BaseSettings], argument_names: Mapping[str, str]
) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    given = _given(cls)
    name = _variable(loc, given) if loc else "settings"
    variable: str | None = name  # where the value came from, for the accepted forms
    if loc and str(loc[0]) in argument_names:
        name = f"argument {argument_names[str(loc[0])]}"
    elif loc and not _from_environment(name, given):
        in_file = _in_file(loc)
        if in_file is not None:
            name, variable = in_file, None
    elif loc:
        # A variable higher up the path, holding JSON: say where in it.
        inner = _variable(loc, {}).removeprefix(name).removeprefix("__")
        if inner:
            name = f"{name} (at key {inner.lower().replace('__', '.')})"
    msg = str(first.get("msg", "invalid value"))
    msg = _one_accepted(msg.removeprefix("Value error, "))
    kind = str(first.get("type", ""))
    ctx = first.get("ctx", {})
    value = first.get("input")
    undecoded = _not_utf8(value)
    if undecoded:
        # Bytes the environment could not decode: no validator can read them, and
        # the value, not text, is never echoed.
        msg = f"not valid UTF-8 text; accepted: {_text_accepted(cls, loc)}"
    elif kind == "extra_forbidden":
        msg = "no such setting; accepted: the keys listed in docs/reference/settings.md"
    elif kind in ("enum", "literal_error") and "expected" in ctx:
        msg = f"accepted: {ctx['expected']}"
    elif kind in _NOT_A or kind in _BOUNDS:
        found = _field(cls, loc)
        accepted = None if found is None else _scalar_accepted(*found, ctx)
        if accepted is not None:
            problem = f"{_NOT_A[kind]}; " if kind in _NOT_A else ""
            msg = f"{problem}accepted: {accepted}"
    elif kind.endswith("_type") and all(isinstance(p, str) for p in loc):
        ann = _walk(cls, [str(p) for p in loc])  # JSON, but not a list or an object
        if ann is not None and _is_complex(ann):
            problem = _not_of_kind(ann, variable is None)
            msg = f"{problem}; accepted: {_json_accepted(ann, variable)}"
    # Never echo the offending value of a secret; other values help.
    secret = bool(loc) and str(loc[0]) in _secret_fields(cls)
    shown = "" if secret or undecoded or isinstance(value, dict) else f" (got {value!r})"
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
            inside = _unknown_inside(tuple(first.get("loc", ())), cls)
            if inside is not None:
                raise SettingsError(inside) from None
        raise SettingsError(_format_error(err, cls, argument_names or {})) from None
    except PydanticSettingsError as err:
        # e.g. malformed JSON in a complex SMD_* variable
        raise SettingsError(_not_json(err, cls)) from None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as err:
        raise SettingsError(_culprit(err)) from None
    if in_files:
        # A file is written on purpose: a key nothing reads is a mistake to stop on.
        raise SettingsError(in_files[0].message())
    for unknown in in_environment:
        # The environment is shared with everything else: say so, carry on.
        warnings.warn(unknown.message(), SettingsWarning, stacklevel=2)
    return settings
