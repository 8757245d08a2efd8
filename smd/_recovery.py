"""Background recovery of a bypassed phase: probe until it answers, then heal readiness.

The probe is the phase's ``recovery`` callable, run by the one retry helper
(:func:`smd.retry.retry_until_ready`) with :meth:`Backoff.recovery`
(0.5 s doubling to 30 s, full jitter: nothing waits on it, and a fleet of
replicas spreads out), without a deadline: it runs until the dependency
answers or the run stops. Each probe gets the settings' ``phase_timeout``.
On success the true time-to-ready (from the phase's first start) is recorded
as an uncensored sample and readiness is told, which may move ``degraded ->
ready``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from smd._failures import Failure, FailureKind
from smd._phase import Phase, PhaseContext
from smd._phase_failures import phase_failure
from smd._readiness import Readiness
from smd._report import PhaseReport
from smd._samples import TimingHistory
from smd._settings import Settings
from smd._timeout_base import TimeoutDecision
from smd.clock import Clock
from smd.exceptions import InvalidTransition
from smd.retry import Backoff, ProbeResult, retry_until_ready

__all__ = ["recover"]


def _always(_: Failure) -> bool:
    # Recovery keeps trying whatever the kind: it runs in the background and
    # backs off to one probe per 30 s, and a bypassed phase is by definition
    # one the service chose to live without until it answers.
    return True


async def recover(
    phase: Phase,
    report: PhaseReport,
    *,
    values: Mapping[str, Any],
    settings: Settings,
    clock: Clock,
    log: Any,
    history: TimingHistory,
    readiness: Readiness,
    origin: float,
    backoff: Backoff | None = None,
    publish: Callable[[object], None] | None = None,
) -> object:
    """Probe ``phase.recovery`` until it succeeds; return what the successful probe returned.

    ``publish`` gets that value (unless it is None or a bool: a yes/no probe
    has nothing to publish) *before* readiness turns ``ready``, so whoever
    the readiness change wakes (observers, routes) already finds it.
    """
    if phase.recovery is None:
        raise ValueError(f"phase {phase.name!r} has no recovery probe")
    recovery = phase.recovery
    per_probe = float(settings.phase_timeout)
    timeout = TimeoutDecision(
        per_probe,
        "fixed",
        "recovery probe: settings phase_timeout",
        attempt_seconds=per_probe,
    )
    got: list[object] = []
    probes = 0

    async def probe(seconds: float) -> ProbeResult:
        nonlocal probes
        probes += 1
        readiness.note_probe(phase.name)
        start = clock.monotonic()
        ctx = PhaseContext(
            phase=phase,
            settings=settings,
            log=log,
            results={r: values[r] for r in phase.requires if r in values},
            timeout=timeout,
            deadline=start + seconds,
            history=history,
            clock=clock,
            origin=origin,
        )
        try:
            with anyio.move_on_after(seconds) as scope:
                value = await recovery(ctx)
        except Exception as exc:
            return ProbeResult(False, phase_failure(phase.name, exc, clock.monotonic() - start))
        if scope.cancelled_caught:
            return ProbeResult(
                False, Failure(FailureKind.TIMEOUT, f"no answer within {seconds:g}s")
            )
        if value is False:
            return ProbeResult(
                False, Failure(FailureKind.INFRASTRUCTURE, "the probe returned False")
            )
        got.append(value)
        return ProbeResult(True, answered=True)

    def failed(start: float, end: float, ok: bool, /, **detail: Any) -> None:
        if not ok:
            log.debug(
                "smd.readiness.probe_failed",
                probe=probes,
                kind=detail.get("kind"),
                error=detail.get("message"),
            )

    try:
        await retry_until_ready(
            probe,
            target=report.target or phase.name,
            deadline_seconds=math.inf,
            attempt_seconds=per_probe,
            backoff=backoff or Backoff.recovery(),
            on_attempt=failed,
            clock=clock,
            retry=_always,
        )
    except anyio.get_cancelled_exc_class():
        log.debug("smd.readiness.recovery_stopped", probes=probes)
        raise
    began = origin + (report.start or 0.0)
    seconds = max(0.0, clock.monotonic() - began)
    history.record_success(seconds)
    value = got[0] if got else None
    if publish is not None and value is not None and not isinstance(value, bool):
        publish(value)
    try:
        readiness.recovered(phase.name, time_to_ready=seconds, probes=probes)
    except InvalidTransition as exc:  # a background task must not crash the service
        log.warning("smd.readiness.recover_ignored", error=str(exc))
    return value
