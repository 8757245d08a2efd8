"""smd: an async startup orchestrator for Python services.

Declare phases on a :class:`Startup`, get a deterministic :class:`Plan`, run
it with deadlines (:func:`lifecycle`, :func:`run_startup`), and let a bypass
policy decide what a failure means. The rest lives in submodules:
``smd.timeouts``, ``smd.bypass``, ``smd.history``, ``smd.events``,
``smd.retry``, ``smd.readiness``, ``smd.settings``, ``smd.clock``,
``smd.plugins``, ``smd.secrets``, ``smd.exceptions``, ``smd.asgi``,
``smd.testing``; ready-made checks and phases in ``smd.checks`` and
``smd.phases``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smd._failures import Failure, FailureKind
from smd._phase import Phase, PhaseContext, PhaseLike
from smd._plan import Plan
from smd._settings import Environment, Settings
from smd._settings_load import load_settings
from smd._startup import Startup
from smd.exceptions import InvalidPlan, PhaseError, SettingsError, SmdError, StartupFailed

if TYPE_CHECKING:
    from smd._lifecycle import lifecycle, run_startup
    from smd._report import Outcome, PhaseReport, Report, State
    from smd._run import StartupRun
    from smd.events import Observer

# The run-time half (the driver, the runner, events, observers, the report) is imported
# on first use: `smd plan` never runs a phase, and importing it eagerly cost
# `smd plan` about 10 ms of its ~50 ms over the bare dependencies
# (benchmarks/cold_start.py, issue 10's cold-start goal).
_RUNTIME = {
    "lifecycle": "smd._lifecycle",
    "run_startup": "smd._lifecycle",
    "StartupRun": "smd._run",
    "Observer": "smd.events",
    "Outcome": "smd._report",
    "PhaseReport": "smd._report",
    "Report": "smd._report",
    "State": "smd._report",
}

__all__ = [
    "Environment",
    "Failure",
    "FailureKind",
    "InvalidPlan",
    "Observer",
    "Outcome",
    "Phase",
    "PhaseContext",
    "PhaseError",
    "PhaseLike",
    "PhaseReport",
    "Plan",
    "Report",
    "Settings",
    "SettingsError",
    "SmdError",
    "Startup",
    "StartupFailed",
    "StartupRun",
    "State",
    "lifecycle",
    "load_settings",
    "run_startup",
]


def __getattr__(name: str) -> Any:
    """The run-time names on first use, and ``smd.__version__`` (from the metadata)."""
    if name in _RUNTIME:
        import importlib

        value = getattr(importlib.import_module(_RUNTIME[name]), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("smd-startup")
        except PackageNotFoundError:  # running from a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
