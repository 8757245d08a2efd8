"""Settings: the engine's model, the base plugins derive theirs from, and loading.

Every variable is listed in ``docs/reference/settings.md`` (generated from the model).
"""

from __future__ import annotations

from smd._settings import (
    BypassMode,
    BypassSettings,
    CellAction,
    Environment,
    EnvTimeouts,
    OtelSettings,
    Settings,
    SettingsBase,
    SettingsError,
    TimeoutSettings,
)
from smd._settings_load import load_settings, settings_class

__all__ = [
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
    "load_settings",
    "settings_class",
]
