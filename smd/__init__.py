"""smd: an async startup orchestrator for Python services.

Declare phases on a :class:`Startup`, get a deterministic :class:`Plan`, run
it with deadlines, and let a bypass policy decide what a failure means.
"""

from __future__ import annotations

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
