"""smd: an async startup orchestrator for Python services.

Declare phases on a :class:`Startup`, get a deterministic :class:`Plan`, run
it with deadlines, and let a bypass policy decide what a failure means.
"""

from __future__ import annotations

from smd._clock import Clock, ManualClock, SystemClock
from smd._failures import Failure, FailureKind, PhaseError
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
from smd._samples import Sample, Series, TimingHistory
from smd._settings import BypassMode, Environment, Settings, SettingsError, load_settings
from smd._store import HistoryStore, MemoryHistoryStore
from smd._timeout_base import FixedTimeout, TimeoutContext, TimeoutDecision, TimeoutPolicy

__all__ = [
    "Action",
    "Attempt",
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
    "PermissivePolicy",
    "Phase",
    "PhaseContext",
    "PhaseError",
    "PhaseLike",
    "Plan",
    "Sample",
    "Series",
    "Settings",
    "SettingsError",
    "Startup",
    "StrictPolicy",
    "SystemClock",
    "TimeoutContext",
    "TimeoutDecision",
    "TimeoutPolicy",
    "TimingHistory",
    "load_settings",
]
