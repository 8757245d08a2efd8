"""Writing a check: one probe, one backoff, one retry loop.

A *check* names a dependency (:attr:`Check.target`, never a secret) and
makes one bounded attempt to reach it (:meth:`Check.probe`), returning a
:class:`ProbeResult` whose failure is already classified. :func:`wait_ready`
repeats the probe with :class:`Backoff` until it succeeds, the failure
cannot heal, or the deadline comes. The PostgreSQL, TCP, HTTP and Redis
checks, :class:`smd.phases.CheckPhase` and background recovery all use
these, and so can yours::

    import anyio
    from smd import Failure, FailureKind
    from smd.retry import ProbeResult, wait_ready

    class PortCheck:
        def __init__(self, host: str, port: int) -> None:
            self.target = f"tcp://{host}:{port}"
            self.host, self.port = host, port

        async def probe(self, attempt_seconds: float) -> ProbeResult:
            with anyio.move_on_after(attempt_seconds):
                try:
                    stream = await anyio.connect_tcp(self.host, self.port)
                except OSError as exc:
                    kind = FailureKind.INFRASTRUCTURE
                    return ProbeResult(False, Failure(kind, f"{self.target}: {exc}"))
                await stream.aclose()
                return ProbeResult(True, answered=True)
            return ProbeResult(False, Failure(FailureKind.TIMEOUT, f"{self.target}: no answer"))

    result = await wait_ready(PortCheck("db", 5432), deadline_seconds=10)

Between attempts the loop waits by what the failure cost: a refusal that
came back at once (no answer, within a few milliseconds) is retried every
10-20 ms, so a dependency that starts listening is noticed at once; a failure
the dependency answered, or a slow one, backs off exponentially to 0.5 s; and
no wait is shorter than 10 ms, which bounds the attempt rate (:class:`Backoff`).

Time comes from one :class:`~smd.clock.Clock` (``clock=``): with a
:class:`~smd.clock.ManualClock` the waits advance it instead of sleeping.
"""

from __future__ import annotations

from smd._backoff import Backoff
from smd._probe import Attempt, AttemptHook, AttemptRecorder, Check, CheckResult, ProbeResult
from smd._retry_loop import retry_until_ready, wait_ready

__all__ = [
    "Attempt",
    "AttemptHook",
    "AttemptRecorder",
    "Backoff",
    "Check",
    "CheckResult",
    "ProbeResult",
    "retry_until_ready",
    "wait_ready",
]
