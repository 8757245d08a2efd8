"""Settings, from arguments, ``SMD_*`` environment variables, ``.env``,
``smd.toml`` and ``[tool.smd]`` in pyproject.toml (highest priority first).

Nested values use ``__``: ``SMD_BYPASS__PRODUCTION__INFRASTRUCTURE=continue``.
An invalid value raises :class:`SettingsError` with one line that names the
variable and what it accepts.
"""

from __future__ import annotations

import enum
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from smd._failures import FailureKind

__all__ = [
    "BypassMode",
    "BypassSettings",
    "EnvTimeouts",
    "Environment",
    "Settings",
    "SettingsError",
    "TimeoutSettings",
    "load_settings",
]


class SettingsError(ValueError):
    """An invalid setting; the message is one line naming it and what it accepts."""


class Environment(enum.StrEnum):
    """Where the service runs; picks the default bypass mode and timeouts."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    TEST = "test"

    @classmethod
    def parse(cls, value: str | Environment) -> Environment:
        """Case-insensitive; the error lists the accepted names."""
        if isinstance(value, Environment):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            accepted = ", ".join(e.value for e in cls)
            raise ValueError(f"unknown environment {value!r}; accepted: {accepted}") from None


class BypassMode(enum.StrEnum):
    """The built-in bypass matrix's modes."""

    STRICT = "strict"
    PERMISSIVE = "permissive"
    CONDITIONAL = "conditional"


def _positive_finite(value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError("accepted: a positive finite number of seconds")
    return float(value)


# (No user:password@ in the example: the redactor would mask it.)
_URL_FORM = (
    "accepted: a URL like postgresql://user@host:5432/dbname (a password goes after 'user:')"
)


def _url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a database URL, never quoting it (it holds a password).

    Only the URL syntax every client agrees on (scheme, ``host:port`` list);
    the phase that uses the URL checks the rest.
    """
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme or not scheme[0].isalpha():
        return "not a URL"
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return "not a URL"
    for host in netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, digits = port.rpartition(":")
        if colon and digits and not (digits.isdigit() and 0 < int(digits) < 65536):
            return "a port is not a number from 1 to 65535"
    return None


CellAction = Literal["fail", "continue", "conditional"]


class BypassSettings(BaseModel):
    """The bypass matrix: mode per environment and per-cell overrides.

    ``mode`` forces one mode in every environment. A cell
    (environment x failure kind) can be overridden: ``production = {infrastructure = "continue"}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: BypassMode | None = None
    development: dict[FailureKind, CellAction] = Field(default_factory=dict)
    staging: dict[FailureKind, CellAction] = Field(default_factory=dict)
    production: dict[FailureKind, CellAction] = Field(default_factory=dict)
    test: dict[FailureKind, CellAction] = Field(default_factory=dict)
    allowed_kinds: frozenset[FailureKind] = frozenset(
        {FailureKind.INFRASTRUCTURE, FailureKind.TIMEOUT}
    )
    min_success_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    max_consecutive_degraded: int = Field(default=3, ge=1)
    success_half_life_hours: float = Field(default=72.0, gt=0)
    force_continue: bool = False
    allow_force_in_production: bool = False

    @field_validator("mode", mode="before")
    @classmethod
    def _lower_mode(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    def cells(self, environment: Environment) -> dict[FailureKind, CellAction]:
        """The overridden cells of one environment."""
        cells: dict[FailureKind, CellAction] = getattr(self, environment.value)
        return cells


class EnvTimeouts(BaseModel):
    """Default (no history), floor and ceiling of learned deadlines, in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: float
    floor: float
    ceiling: float

    @field_validator("default", "floor", "ceiling")
    @classmethod
    def _finite(cls, v: float) -> float:
        return _positive_finite(v)

    def model_post_init(self, __context: Any) -> None:
        if self.floor > self.ceiling:
            raise ValueError(f"floor ({self.floor:g}s) is above ceiling ({self.ceiling:g}s)")


_ENV_TIMEOUT_DEFAULTS: dict[str, dict[str, float]] = {
    "development": {"default": 10.0, "floor": 0.5, "ceiling": 60.0},
    "staging": {"default": 30.0, "floor": 1.0, "ceiling": 120.0},
    "production": {"default": 30.0, "floor": 1.0, "ceiling": 120.0},
    "test": {"default": 10.0, "floor": 0.5, "ceiling": 60.0},
}


class TimeoutSettings(BaseModel):
    """Learned-timeout settings per environment, plus an infrastructure profile.

    Setting one bound (``SMD_TIMEOUTS__PRODUCTION__CEILING=60``) keeps the
    environment's other defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    development: EnvTimeouts = EnvTimeouts(**_ENV_TIMEOUT_DEFAULTS["development"])
    staging: EnvTimeouts = EnvTimeouts(**_ENV_TIMEOUT_DEFAULTS["staging"])
    production: EnvTimeouts = EnvTimeouts(**_ENV_TIMEOUT_DEFAULTS["production"])
    test: EnvTimeouts = EnvTimeouts(**_ENV_TIMEOUT_DEFAULTS["test"])
    profile: str = "none"
    min_samples: int = Field(default=8, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _merge_partial(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for env, defaults in _ENV_TIMEOUT_DEFAULTS.items():
                given = data.get(env)
                if isinstance(given, dict):
                    data[env] = {**defaults, **given}
        return data

    def for_env(self, environment: Environment) -> EnvTimeouts:
        """The bounds of one environment."""
        bounds: EnvTimeouts = getattr(self, environment.value)
        return bounds


class Settings(BaseSettings):
    """Everything smd can be told. See the README's Settings section."""

    model_config = SettingsConfigDict(
        env_prefix="SMD_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        pyproject_toml_table_header=("tool", "smd"),
        toml_file="smd.toml",
    )

    environment: Environment = Environment.PRODUCTION
    startup_budget: float = 120.0
    phase_timeout: float = 30.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    progress_interval: float = 5.0
    history_enabled: bool = True
    history_path: Path | None = None
    database_url: SecretStr | None = None
    bypass: BypassSettings = BypassSettings()
    timeouts: TimeoutSettings = TimeoutSettings()

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, v: object) -> object:
        return Environment.parse(v) if isinstance(v, str) else v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr | None) -> SecretStr | None:
        # Caught here, a malformed URL stops before anything runs or is
        # recorded, like any other invalid setting.
        problem = _url_problem(v.get_secret_value()) if v is not None else None
        if problem is not None:
            raise ValueError(f"{problem}; {_URL_FORM}")
        return v

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("startup_budget", "phase_timeout", "progress_interval")
    @classmethod
    def _seconds(cls, v: float) -> float:
        return _positive_finite(v)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
            PyprojectTomlConfigSettingsSource(settings_cls),
        )

    def history_file(self) -> Path:
        """Where the embedded history store lives (``SMD_HISTORY_PATH`` or the state dir)."""
        if self.history_path is not None:
            return self.history_path
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "smd" / "history.sqlite3"


def _variable(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if str(p) != "[key]"]
    return "SMD_" + "__".join(p.upper() for p in parts)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    name = _variable(loc) if loc else "settings"
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if first.get("type") in ("enum", "literal_error") and "expected" in first.get("ctx", {}):
        msg = f"accepted: {first['ctx']['expected']}"
    # Never echo the offending value of a secret; other values help.
    value = first.get("input")
    shown = "" if "DATABASE_URL" in name or isinstance(value, dict) else f" (got {value!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid setting {name}{shown}: {msg}{tail}"


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


def load_settings(**overrides: Any) -> Settings:
    """Build settings from every source; raise :class:`SettingsError` on bad input."""
    problem = _not_a_file()
    if problem is not None:
        raise SettingsError(problem)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(_format_error(err)) from None
    except PydanticSettingsError as err:
        # e.g. malformed JSON in a complex SMD_* variable
        raise SettingsError(f"invalid settings: {err}") from None
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as err:
        raise SettingsError(_culprit(err)) from None
