"""The record of a run: plan, per-phase timings, outcomes, failures, decisions.

Also the one state enum (``State``) that the report, readiness and the
health endpoints share, and the frozen readiness snapshot.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from smd._encode import SKIP, TIMESTAMP, encode
from smd._exit import EXIT_CODES, for_kind
from smd._failures import Failure, FailureKind
from smd._redact import redact
from smd._timeout_base import TimeoutDecision
from smd.retry import Attempt

if TYPE_CHECKING:
    from smd._plan import Plan
    from smd._policy import Decision

__all__ = [
    "REPORT_VERSION",
    "Outcome",
    "PhaseReport",
    "PhaseStatus",
    "ReadinessSnapshot",
    "Report",
    "State",
]

#: Version of the JSON report (``report.to_json()``, ``smd run --report``).
#: 2: generic failure ``code``/``details`` instead of ``sqlstate``; ISO-8601 times.
REPORT_VERSION = 2


class Outcome(enum.StrEnum):
    """How one phase ended."""

    OK = "ok"
    BYPASSED = "bypassed"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"


class State(enum.StrEnum):
    """Where a startup stands: the report's verdict and readiness's state."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"

    @property
    def serving(self) -> bool:
        """Ready or degraded: startup let the service take traffic."""
        return self in (State.READY, State.DEGRADED)


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
    #: Why the phase moved its deadline later (``PhaseContext.extend_deadline``;
    #: ``deadline`` is then the extended one), ``""`` when it did not.
    deadline_extended: str = ""
    failure: Failure | None = None
    decision: Decision | None = None
    reason: str = ""
    attempts: tuple[Attempt, ...] = ()
    target: str = ""
    note: str = ""

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = encode(self)
        data["duration"] = encode(self.duration)
        return data


@dataclass(frozen=True, slots=True)
class Report:
    """A run of a startup. ``phases`` are in plan order, never completion order."""

    startup: str
    environment: str
    mode: str
    state: State
    plan: Plan = field(metadata=SKIP)
    phases: tuple[PhaseReport, ...]
    started_at: float = field(metadata=TIMESTAMP)
    duration: float
    budget: float
    reasons: tuple[str, ...] = ()
    teardown_errors: tuple[str, ...] = ()
    teardown_skipped: tuple[str, ...] = ()
    interrupted: str | None = None

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
        """The documented exit code for this outcome (one table: ``smd._exit``)."""
        if self.interrupted:
            return EXIT_CODES[self.interrupted]
        if self.state.serving:
            return 0
        failed = self.failed_phase
        if failed is None or failed.failure is None:
            return EXIT_CODES["unknown"]
        return for_kind(failed.failure.kind)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": REPORT_VERSION,
            **encode(self),
            "exit_code": self.exit_code(),
            "plan": self.plan.to_dict(),
        }
        data["phases"] = [p.to_dict() for p in self.phases]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

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
                    f"  kind:     {f.kind.value}" + (f" (code {f.code})" if f.code else "")
                )
                lines.append(f"  error:    {f.message}")
                if failed.decision is not None:
                    lines.append(
                        f"  decision: {failed.decision.action.value}: {failed.decision.reason}"
                    )
                lines.append(f"  todo:     {_ADVICE[f.kind]}")
        else:
            lines.append(f"startup {self.startup} {self.state.value} in {self.duration:.3f}s")
            lines.extend(f"  degraded: {r}" for r in self.reasons)
        lines.extend(f"  teardown error: {e}" for e in self.teardown_errors)
        if self.teardown_skipped:
            lines.append(f"  teardown skipped: {', '.join(self.teardown_skipped)}")
        return redact("\n".join(lines))


_ADVICE: Mapping[FailureKind, str] = {
    FailureKind.INFRASTRUCTURE: "the dependency is not reachable or not ready yet; check it is up, then retry (exit 75: try again later)",
    FailureKind.TIMEOUT: "no answer before the deadline; check network paths (blackhole, firewall), a phase blocking the event loop, and the learned timeout in `smd history` (exit 75)",
    FailureKind.CONFIGURATION: "waiting will not fix this: correct the settings (credentials, database name, TLS, host) and redeploy (exit 78)",
    FailureKind.APPLICATION: "the phase's own code raised: see the cause chain in the report (exit 70)",
    FailureKind.UNKNOWN: "unclassified failure: see the cause chain in the report (exit 69)",
}


@dataclass(frozen=True, slots=True)
class PhaseStatus:
    """One phase as readiness sees it. Times are the run clock's seconds."""

    name: str
    outcome: str = "pending"
    reason: str = ""
    started_at: float | None = field(default=None, metadata=SKIP)
    finished_at: float | None = field(default=None, metadata=SKIP)
    recovered_at: float | None = field(default=None, metadata=SKIP)
    probes: int = 0
    time_to_ready: float | None = None

    @property
    def degraded(self) -> bool:
        """Whether this phase still keeps the service degraded."""
        return self.outcome in ("bypassed", "skipped") and self.recovered_at is None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = encode(self)
        del data["name"]
        data["recovered"] = self.recovered_at is not None
        return data


@dataclass(frozen=True, slots=True)
class ReadinessSnapshot:
    """A consistent, immutable view for the health endpoints and the report.

    ``since`` is the wall-clock time of the last state change; ``reasons``
    the degraded reasons (plus the failure reason when failed), in phase order.
    """

    state: State
    reasons: tuple[str, ...]
    phases: Mapping[str, PhaseStatus]
    since: float = field(metadata=TIMESTAMP)

    def __post_init__(self) -> None:
        if not isinstance(self.phases, MappingProxyType):
            object.__setattr__(self, "phases", MappingProxyType(dict(self.phases)))

    @property
    def serving(self) -> bool:
        """Ready or degraded: startup let the service take traffic."""
        return self.state.serving

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = encode(self)
        data["phases"] = {name: st.to_dict() for name, st in self.phases.items()}
        return data
