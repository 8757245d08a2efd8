"""The record of a run: plan, per-phase timings, outcomes, failures, decisions."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from smd._failures import Failure, FailureKind
from smd._phase import Attempt
from smd._plan import Plan
from smd._policy import Decision
from smd._redact import redact_value
from smd._timeout_base import TimeoutDecision

__all__ = [
    "EXIT_CODES",
    "REPORT_VERSION",
    "Outcome",
    "PhaseReport",
    "Report",
    "StartupFailed",
    "State",
    "exit_code_for_kind",
]

REPORT_VERSION = 1


class Outcome(enum.StrEnum):
    """How one phase ended."""

    OK = "ok"
    BYPASSED = "bypassed"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class State(enum.StrEnum):
    """How the whole startup ended (or where it is)."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"


#: sysexits codes, as documented in the README.
EXIT_CODES: dict[str, int] = {
    "ready": 0,
    "degraded": 0,
    "usage": 64,
    "application": 70,
    "infrastructure": 75,
    "timeout": 75,
    "configuration": 78,
    "invalid_settings": 78,
    "invalid_plan": 78,
    "unknown": 69,
    "sigint": 130,
    "sigterm": 143,
}


def exit_code_for_kind(kind: FailureKind) -> int:
    """The exit code of a startup that failed with this kind of failure."""
    return EXIT_CODES[kind.value]


@dataclass(frozen=True, slots=True)
class PhaseReport:
    """One phase of a run. Times are seconds since the startup began."""

    name: str
    wave: int
    requires: tuple[str, ...]
    outcome: Outcome
    start: float | None = None
    end: float | None = None
    timeout: TimeoutDecision | None = None
    deadline: float | None = None
    deadline_source: str = ""
    failure: Failure | None = None
    decision: Decision | None = None
    reason: str = ""
    attempts: tuple[Attempt, ...] = ()
    target: str = ""

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wave": self.wave,
            "requires": list(self.requires),
            "outcome": self.outcome.value,
            "start": None if self.start is None else round(self.start, 6),
            "end": None if self.end is None else round(self.end, 6),
            "duration": None if self.duration is None else round(self.duration, 6),
            "target": self.target,
            "timeout": self.timeout.to_dict() if self.timeout else None,
            "deadline": None if self.deadline is None else round(self.deadline, 6),
            "deadline_source": self.deadline_source,
            "failure": self.failure.to_dict() if self.failure else None,
            "decision": self.decision.to_dict() if self.decision else None,
            "reason": self.reason,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """A run of a startup. ``phases`` are in plan order, never completion order."""

    startup: str
    environment: str
    mode: str
    state: State
    plan: Plan
    phases: tuple[PhaseReport, ...]
    started_at: float
    duration: float
    budget: float
    reasons: tuple[str, ...] = ()
    teardown_errors: tuple[str, ...] = ()
    interrupted: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def phase(self, name: str) -> PhaseReport:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def failed_phase(self) -> PhaseReport | None:
        """The phase whose failure stopped startup, if any."""
        for p in self.phases:
            if p.outcome is Outcome.FAILED:
                return p
        return None

    def exit_code(self) -> int:
        """The documented exit code for this outcome."""
        if self.interrupted:
            return EXIT_CODES[self.interrupted]
        if self.state in (State.READY, State.DEGRADED):
            return 0
        failed = self.failed_phase
        if failed is None or failed.failure is None:
            return EXIT_CODES["unknown"]
        return exit_code_for_kind(failed.failure.kind)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "version": REPORT_VERSION,
            "startup": self.startup,
            "environment": self.environment,
            "mode": self.mode,
            "state": self.state.value,
            "exit_code": self.exit_code(),
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "budget": self.budget,
            "reasons": list(self.reasons),
            "interrupted": self.interrupted,
            "teardown_errors": list(self.teardown_errors),
            "plan": self.plan.to_dict(),
            "phases": [p.to_dict() for p in self.phases],
            **self.extra,
        }
        redacted: dict[str, Any] = redact_value(data)
        return redacted

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def summary(self) -> str:
        """A human summary; for a failed startup, the STARTUP FAILED block."""
        lines: list[str] = []
        if self.state is State.FAILED:
            lines.append(f"STARTUP FAILED: {self.startup} ({self.environment})")
            failed = self.failed_phase
            if self.interrupted:
                lines.append(f"  interrupted by {self.interrupted.upper()}; teardown ran")
            if failed is not None and failed.failure is not None:
                f = failed.failure
                lines.append(f"  phase:    {failed.name}")
                lines.append(
                    f"  kind:     {f.kind.value}"
                    + (f" (SQLSTATE {f.sqlstate})" if f.sqlstate else "")
                )
                lines.append(f"  error:    {f.message}")
                if failed.decision is not None:
                    lines.append(
                        f"  decision: {failed.decision.action.value}: {failed.decision.reason}"
                    )
                lines.append(f"  todo:     {_advice(f.kind)}")
        else:
            lines.append(f"startup {self.startup} {self.state.value} in {self.duration:.3f}s")
            lines.extend(f"  degraded: {r}" for r in self.reasons)
        lines.extend(f"  teardown error: {e}" for e in self.teardown_errors)
        return str(redact_value("\n".join(lines)))


def _advice(kind: FailureKind) -> str:
    return {
        FailureKind.INFRASTRUCTURE: "the dependency is not reachable or not ready yet; check it is up, then retry (exit 75: try again later)",
        FailureKind.TIMEOUT: "no answer before the deadline; check network paths (blackhole, firewall) and the learned timeout in `smd history` (exit 75)",
        FailureKind.CONFIGURATION: "waiting will not fix this: correct the settings (credentials, database name, TLS, host) and redeploy (exit 78)",
        FailureKind.APPLICATION: "the phase's own code raised: see the cause chain in the report (exit 70)",
        FailureKind.UNKNOWN: "unclassified failure: see the cause chain in the report (exit 69)",
    }[kind]


class StartupFailed(ExceptionGroup[Exception]):
    """Startup stopped. ``report`` says why; teardown errors are raised with it.

    ``exceptions`` holds the failing phase's error first, then every teardown
    error, so ``except StartupFailed`` and ``except*`` both work.
    """

    report: Report

    def __new__(cls, report: Report, errors: list[Exception]) -> StartupFailed:
        failed = report.failed_phase
        what = (
            f"phase {failed.name!r} failed ({failed.failure.kind.value}): {failed.failure.message}"
            if failed is not None and failed.failure is not None
            else "startup failed"
        )
        self = super().__new__(
            cls, str(redact_value(f"startup {report.startup!r}: {what}")), errors
        )
        self.report = report
        return self

    def __init__(self, report: Report, errors: list[Exception]) -> None:
        super().__init__(self.message, errors)

    def derive(self, excs: Any) -> Any:
        return ExceptionGroup(self.message, list(excs))
