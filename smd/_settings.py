"""Settings, from arguments, ``SMD_*`` environment variables, ``.env``,
``smd.toml`` and ``[tool.smd]`` in pyproject.toml (highest priority first).

Nested values use ``__``: ``SMD_BYPASS__PRODUCTION__INFRASTRUCTURE=continue``.
An invalid value raises :class:`SettingsError` with one line that names the
variable and what it accepts.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
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

from smd._failures import FailureKind
from smd._settings_keys import read_toml
from smd._stats import DEFAULT_HALF_LIFE_HOURS
from smd._units import seconds as _seconds_value
from smd.exceptions import SettingsError
from smd.plugins import profile as _profile
from smd.plugins import store_scheme, stores

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "ENV_TIMEOUT_DEFAULTS",
    "MIN_SAMPLES_DEFAULT",
    "BypassMode",
    "BypassSettings",
    "CellAction",
    "EnvTimeouts",
    "Environment",
    "OtelSettings",
    "Settings",
    "SettingsBase",
    "SettingsError",
    "TimeoutSettings",
]


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
    try:
        return _seconds_value("value", value)
    except ValueError:
        raise ValueError("accepted: a positive finite number of seconds") from None


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
    success_half_life_hours: float = Field(default=DEFAULT_HALF_LIFE_HOURS, gt=0)
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


#: Per environment: the no-data default, floor and ceiling of learned deadlines.
ENV_TIMEOUT_DEFAULTS: dict[str, dict[str, float]] = {
    "development": {"default": 10.0, "floor": 0.5, "ceiling": 60.0},
    "staging": {"default": 30.0, "floor": 1.0, "ceiling": 120.0},
    "production": {"default": 30.0, "floor": 1.0, "ceiling": 120.0},
    "test": {"default": 10.0, "floor": 0.5, "ceiling": 60.0},
}


#: History (ready samples) needed before a deadline is learned (``SMD_TIMEOUTS__MIN_SAMPLES``).
MIN_SAMPLES_DEFAULT = 8


class TimeoutSettings(BaseModel):
    """Learned-timeout settings per environment, plus an infrastructure profile.

    Setting one bound (``SMD_TIMEOUTS__PRODUCTION__CEILING=60``) keeps the
    environment's other defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    development: EnvTimeouts = EnvTimeouts(**ENV_TIMEOUT_DEFAULTS["development"])
    staging: EnvTimeouts = EnvTimeouts(**ENV_TIMEOUT_DEFAULTS["staging"])
    production: EnvTimeouts = EnvTimeouts(**ENV_TIMEOUT_DEFAULTS["production"])
    test: EnvTimeouts = EnvTimeouts(**ENV_TIMEOUT_DEFAULTS["test"])
    profile: str = "none"
    min_samples: int = Field(default=MIN_SAMPLES_DEFAULT, ge=1)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        # Profiles come from plugins (the PostgreSQL phase ships the cloud ones).
        return _profile(v).name

    @model_validator(mode="before")
    @classmethod
    def _merge_partial(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for env, defaults in ENV_TIMEOUT_DEFAULTS.items():
                given = data.get(env)
                if isinstance(given, dict):
                    data[env] = {**defaults, **given}
        return data

    def for_env(self, environment: Environment) -> EnvTimeouts:
        """The bounds of one environment."""
        bounds: EnvTimeouts = getattr(self, environment.value)
        return bounds


class SettingsBase(BaseSettings):
    """The sources and conventions every smd settings model shares.

    Plugins derive the settings they own from it (``SMD_DATABASE_URL`` is the
    PostgreSQL plugin's), and :func:`load_settings` merges them into one
    :class:`Settings` read from the same sources: arguments, ``SMD_*``
    environment variables, ``.env``, ``smd.toml``, ``[tool.smd]``.
    """

    model_config = SettingsConfigDict(
        env_prefix="SMD_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        pyproject_toml_table_header=("tool", "smd"),
        toml_file="smd.toml",
        # Validators are built when a model is first used, not when it is
        # defined: load_settings only ever validates the merged class
        # (settings_class()), so building this one's, and each plugin
        # model's, at import was work `smd plan` paid for nothing.
        defer_build=True,
    )

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
            _TomlSource(settings_cls),
            _PyprojectSource(settings_cls),
        )


class _TomlSource(TomlConfigSettingsSource):
    """``smd.toml``, parsed once for the unknown keys and the values (:func:`read_toml`)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        if isinstance(file_path, Path):
            return read_toml(file_path)
        return super()._read_file(file_path)


class _PyprojectSource(PyprojectTomlConfigSettingsSource):
    """``[tool.smd]`` of pyproject.toml, parsed once as well."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        if isinstance(file_path, Path):
            return read_toml(file_path)
        return super()._read_file(file_path)


class OtelSettings(BaseModel):
    """OpenTelemetry (extra ``smd-startup[otel]``): spans through the global tracer provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class Settings(SettingsBase):
    """Everything smd's engine can be told. Every variable: ``docs/reference/settings.md``.

    :func:`load_settings` returns an instance of a subclass that also holds
    the fields plugins own (``database_url`` with the PostgreSQL plugin).
    """

    environment: Environment = Environment.PRODUCTION
    startup_budget: float = 120.0
    phase_timeout: float = 30.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stop_budget: float = 30.0
    progress_interval: float = 5.0
    history_enabled: bool = True
    history_path: Path | None = None
    history_url: SecretStr | None = None
    bypass: BypassSettings = BypassSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    otel: OtelSettings = OtelSettings()

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, v: object) -> object:
        return Environment.parse(v) if isinstance(v, str) else v

    @field_validator("history_url")
    @classmethod
    def _history_url(cls, v: SecretStr | None) -> SecretStr | None:
        # The scheme picks the shared store a plugin registered; the value
        # holds a password, so the error names only the scheme.
        if v is None:
            return v
        scheme, sep, _ = v.get_secret_value().strip().partition("://")
        known = sorted(stores())
        if store_scheme(v.get_secret_value()) not in known:
            raise ValueError(
                f"no shared history store for {'this URL' if not sep else repr(scheme)}; "
                f"accepted: a URL whose scheme is one of {', '.join(known) or 'none (install a plugin)'}"
            )
        return v

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("startup_budget", "phase_timeout", "stop_budget", "progress_interval")
    @classmethod
    def _seconds(cls, v: float) -> float:
        return _positive_finite(v)

    def history_file(self) -> Path:
        """Where the embedded history store lives (``SMD_HISTORY_PATH`` or the state dir)."""
        if self.history_path is not None:
            return self.history_path
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "smd" / "history.sqlite3"
