"""smd: an async startup orchestrator for Python services.

Declare phases on a :class:`Startup`, get a deterministic :class:`Plan`, run
it with deadlines, and let a bypass policy decide what a failure means.

The names below are imported on first use (module ``__getattr__``): ``smd plan``
and ``import checks.postgres`` do not pay for the runner, the store or
readiness unless they use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smd._clock import Clock, ManualClock, SystemClock
    from smd._failures import Failure, FailureKind, PhaseError
    from smd._logging import configure_logging
    from smd._matrix import BypassMatrix, SuccessRate, success_rate
    from smd._phase import Attempt, InvalidPlan, Phase, PhaseContext, PhaseLike, Startup
    from smd._plan import Plan
    from smd._policy import (
        Action,
        BypassPolicy,
        Condition,
        Decision,
        DecisionContext,
        PermissivePolicy,
        StrictPolicy,
    )
    from smd._readiness import Backoff, Readiness, ReadinessSnapshot
    from smd._report import Outcome, PhaseReport, Report, StartupFailed, State
    from smd._samples import Sample, Series, TimingHistory
    from smd._sequencer import StartupRun, lifecycle, run_startup
    from smd._settings import BypassMode, Environment, Settings, SettingsError, load_settings
    from smd._sqlite_store import SQLiteHistoryStore, open_store
    from smd._store import HistoryStore, MemoryHistoryStore
    from smd._timeout_base import FixedTimeout, TimeoutContext, TimeoutDecision, TimeoutPolicy

# public name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "Action": "smd._policy",
    "Attempt": "smd._phase",
    "Backoff": "smd._readiness",
    "BypassMatrix": "smd._matrix",
    "BypassMode": "smd._settings",
    "BypassPolicy": "smd._policy",
    "Clock": "smd._clock",
    "Condition": "smd._policy",
    "configure_logging": "smd._logging",
    "Decision": "smd._policy",
    "DecisionContext": "smd._policy",
    "Environment": "smd._settings",
    "Failure": "smd._failures",
    "FailureKind": "smd._failures",
    "FixedTimeout": "smd._timeout_base",
    "HistoryStore": "smd._store",
    "InvalidPlan": "smd._phase",
    "lifecycle": "smd._sequencer",
    "load_settings": "smd._settings",
    "ManualClock": "smd._clock",
    "MemoryHistoryStore": "smd._store",
    "open_store": "smd._sqlite_store",
    "Outcome": "smd._report",
    "PermissivePolicy": "smd._policy",
    "Phase": "smd._phase",
    "PhaseContext": "smd._phase",
    "PhaseError": "smd._failures",
    "PhaseLike": "smd._phase",
    "PhaseReport": "smd._report",
    "Plan": "smd._plan",
    "Readiness": "smd._readiness",
    "ReadinessSnapshot": "smd._readiness",
    "Report": "smd._report",
    "run_startup": "smd._sequencer",
    "Sample": "smd._samples",
    "Series": "smd._samples",
    "Settings": "smd._settings",
    "SettingsError": "smd._settings",
    "SQLiteHistoryStore": "smd._sqlite_store",
    "Startup": "smd._phase",
    "StartupFailed": "smd._report",
    "StartupRun": "smd._sequencer",
    "State": "smd._report",
    "StrictPolicy": "smd._policy",
    "success_rate": "smd._matrix",
    "SuccessRate": "smd._matrix",
    "SystemClock": "smd._clock",
    "TimeoutContext": "smd._timeout_base",
    "TimeoutDecision": "smd._timeout_base",
    "TimeoutPolicy": "smd._timeout_base",
    "TimingHistory": "smd._samples",
}

__all__ = [
    "Action",
    "Attempt",
    "Backoff",
    "BypassMatrix",
    "BypassMode",
    "BypassPolicy",
    "Clock",
    "Condition",
    "Decision",
    "DecisionContext",
    "Environment",
    "Failure",
    "FailureKind",
    "FixedTimeout",
    "HistoryStore",
    "InvalidPlan",
    "ManualClock",
    "MemoryHistoryStore",
    "Outcome",
    "PermissivePolicy",
    "Phase",
    "PhaseContext",
    "PhaseError",
    "PhaseLike",
    "PhaseReport",
    "Plan",
    "Readiness",
    "ReadinessSnapshot",
    "Report",
    "SQLiteHistoryStore",
    "Sample",
    "Series",
    "Settings",
    "SettingsError",
    "Startup",
    "StartupFailed",
    "StartupRun",
    "State",
    "StrictPolicy",
    "SuccessRate",
    "SystemClock",
    "TimeoutContext",
    "TimeoutDecision",
    "TimeoutPolicy",
    "TimingHistory",
    "configure_logging",
    "lifecycle",
    "load_settings",
    "open_store",
    "run_startup",
    "success_rate",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562)."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
