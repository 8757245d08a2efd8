"""What a check is and what it returns: one attempt, and a whole wait.

Public in :mod:`smd.retry`: :class:`Check` (the protocol a check meets),
:class:`ProbeResult` (one attempt), :class:`CheckResult` (the outcome of
waiting), :class:`Attempt` (an attempt as the report and trace show it) and
the hooks the retry loop reports attempts to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from smd._failures import Failure, FailureKind

__all__ = [
    "Attempt",
    "AttemptHook",
    "AttemptRecorder",
    "Check",
    "CheckResult",
    "ProbeResult",
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt a phase made (a connection try), as the report and trace show it.

    ``start`` and ``end`` are seconds since the run began; ``detail`` holds
    what the check said about it (timeout, latency, kind, code).
    """

    number: int
    start: float
    end: float
    ok: bool
    detail: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.detail, MappingProxyType):
            object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))


class AttemptHook(Protocol):
    """Called after every attempt; :meth:`smd.PhaseContext.record_attempt` fits."""

    def __call__(self, start: float, end: float, ok: bool, /, **detail: Any) -> object: ...


class AttemptRecorder(Protocol):
    """Where answered attempts' latencies go (a :class:`smd.timeouts.TimingHistory`)."""

    def record_attempt(self, seconds: float) -> object: ...


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One attempt. ``answered``: the dependency spoke (success or an error of
    its own), so ``latency`` is a real round-trip figure worth learning from.
    ``summary`` says what a success proved (``"SELECT 1 answered"``);
    ``server_message`` what the dependency said when it refused."""

    ok: bool
    failure: Failure | None = None
    latency: float = 0.0
    answered: bool = False
    server_message: str | None = None
    summary: str = "answered"
    start: float = 0.0
    end: float = 0.0


@runtime_checkable
class Check(Protocol):
    """A dependency smd can wait for: a secret-free name and one bounded attempt."""

    @property
    def target(self) -> str:
        """What is checked, safe to log and to key history by (no secret)."""
        ...

    async def probe(self, attempt_seconds: float) -> ProbeResult:
        """One attempt, bounded by ``attempt_seconds``; never raises for a
        dependency problem (the result carries the classified failure)."""
        ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of waiting for a dependency to be ready.

    ``elapsed`` is the whole wait; ``time_to_ready`` (first attempt to first
    success) is set only on success. ``failure`` carries the final attempt
    count and elapsed time.
    """

    ok: bool
    target: str
    failure: Failure | None
    attempts: int
    elapsed: float
    time_to_ready: float | None
    last_probe: ProbeResult | None = field(default=None, repr=False)
    deadline: float = 0.0

    @property
    def status(self) -> str:
        """``accepting``, ``rejecting`` (the dependency answered no), ``no response``
        (nothing answered in time) or ``unreachable``."""
        if self.ok:
            return "accepting"
        if self.failure is not None and self.failure.kind is FailureKind.TIMEOUT:
            return "no response"
        if self.last_probe is not None and self.last_probe.answered:
            return "rejecting"
        return "unreachable"

    def render_text(self) -> str:
        """One ``pg_isready``-like line, then the reason when not ready."""
        plural = "s" if self.attempts != 1 else ""
        tries = f"{self.attempts} attempt{plural} in {self.elapsed * 1000:.0f} ms"
        if self.ok:
            last = self.last_probe
            latency = last.latency * 1000 if last else 0.0
            what = last.summary if last else "answered"
            return f"{self.target} - accepting connections ({what} in {latency:.1f} ms; {tries})"
        assert self.failure is not None
        f = self.failure
        code = f" [{f.code}]" if f.code else ""
        verdict = (
            "may heal by waiting; try again later"
            if f.kind.may_heal
            else "will not heal by waiting; fix the configuration"
            if f.kind is FailureKind.CONFIGURATION
            else "cause not recognised"
        )
        return (
            f"{self.target} - {self.status}: {f.kind.value} failure{code} ({tries})\n"
            f"  {f.message}\n"
            f"  {verdict}"
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rounded and redacted)."""
        from smd._encode import encode

        last = self.last_probe
        data: dict[str, object] = encode(
            {
                "ok": self.ok,
                "status": self.status,
                "target": self.target,
                "attempts": self.attempts,
                "elapsed": self.elapsed,
                "deadline": self.deadline,
                "time_to_ready": self.time_to_ready,
                "latency": None if last is None else last.latency,
                "failure": self.failure,
            }
        )
        return data
