"""One generic phase for any check: wait until it is ready, inside the phase's deadline.

``CheckPhase`` composes a :class:`smd.retry.Check` (the TCP, HTTP, Redis
checks, or your own), a timeout policy (adaptive by default: it learns from
this target's history) and a bypass policy (the environment's default unless
given). It records the latency of every answered attempt; the phase runner
records the time to ready (or the censored sample of a wait its deadline
ended) and asks the bypass policy what a failure means. A bypassed phase is
probed once per recovery round in the background until it recovers.

::

    from smd.checks.redis import RedisCheck
    from smd.phases.check import CheckPhase

    startup.add(CheckPhase(RedisCheck("redis://:secret@cache:6379/0"), name="cache"))

    @startup.phase(requires=["cache"])
    async def warm(ctx): ...   # ctx["cache"] is the CheckResult
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from smd import Phase, PhaseContext, PhaseError
from smd.bypass import BypassPolicy
from smd.phases._waiting import WaitLog, wait_budget
from smd.retry import Backoff, Check, CheckResult, wait_ready
from smd.timeouts import AdaptiveTimeout, TimeoutPolicy, attempt_split

__all__ = ["CheckPhase"]


class CheckPhase:
    """A ready-made phase that waits for ``check`` (any :class:`smd.retry.Check`).

    ``timeout`` is seconds, a timeout policy, or ``None`` for the adaptive
    policy; ``bypass=None`` uses the environment's bypass matrix;
    ``essential=True`` keeps a conditional bypass from letting it through.
    The phase's value (``ctx[name]`` in the phases that require it) is the
    :class:`~smd.retry.CheckResult`; its history target is ``check.target``.
    """

    def __init__(
        self,
        check: Check,
        *,
        name: str,
        requires: Iterable[str] = (),
        timeout: TimeoutPolicy | float | None = None,
        bypass: BypassPolicy | None = None,
        essential: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        if not isinstance(check, Check):
            raise TypeError(
                f"CheckPhase {name!r}: {type(check).__name__} is not a check (it needs a "
                "'target' and an async 'probe(attempt_seconds)')"
            )
        self.check = check
        self.name = name
        self.requires = tuple(requires)
        self.timeout: TimeoutPolicy | float = AdaptiveTimeout() if timeout is None else timeout
        self.bypass = bypass
        self.essential = essential
        self.backoff = backoff

    def to_phase(self) -> Phase:
        """The :class:`smd.Phase` to add to a startup (``startup.add(self)`` calls it)."""
        return Phase(
            name=self.name,
            run=self.run,
            requires=self.requires,
            timeout=self.timeout,
            essential=self.essential,
            bypass=self.bypass,
            target=self.check.target,
            recovery=self.recover,
            description=f"wait until {self.check.target} is ready",
        )

    @staticmethod
    def _attempt_seconds(ctx: PhaseContext, budget: float) -> float:
        # smd.timeouts.phase_timeout sets it (learned, or the split of the
        # deadline `smd plan` prints); a policy of the user's may leave it out.
        learned = ctx.timeout.attempt_seconds
        if learned is not None and math.isfinite(learned) and learned > 0:
            return float(learned)
        return attempt_split(budget) if budget > 0 else 0.001

    async def run(self, ctx: PhaseContext) -> CheckResult:
        """Wait for the check inside the phase's deadline; raise ``PhaseError`` if not ready."""
        budget = wait_budget(ctx)
        per_attempt = self._attempt_seconds(ctx, budget)
        wait = WaitLog(ctx, "smd.check", target=self.check.target)
        wait.waiting(budget, per_attempt)
        options: dict[str, Any] = {}
        if self.backoff is not None:
            options["backoff"] = self.backoff
        result = await wait_ready(
            self.check,
            deadline_seconds=budget,
            attempt_seconds=per_attempt,
            on_attempt=wait.on_attempt,
            history=ctx.history,
            clock=ctx.clock,
            **options,
        )
        return wait.finished(result)

    async def recover(self, ctx: PhaseContext) -> CheckResult:
        """One probe for the background recovery of a bypassed phase.

        Raises ``PhaseError`` while the dependency is not ready (smd's
        readiness loop spaces the probes out); on success returns the
        :class:`~smd.retry.CheckResult` that smd publishes as the phase's value.
        """
        remaining = max(0.001, ctx.remaining())
        seconds = min(remaining, self._attempt_seconds(ctx, remaining))
        start = ctx.clock.monotonic()
        result = await self.check.probe(seconds)
        end = ctx.clock.monotonic()
        if result.answered:
            ctx.history.record_attempt(result.latency)
        detail: dict[str, Any] = {"latency": round(result.latency, 6), "recovery": True}
        if result.failure is not None:
            detail.update(kind=result.failure.kind.value, code=result.failure.code)
        ctx.record_attempt(start, end, result.ok, **detail)
        if not result.ok:
            assert result.failure is not None
            raise PhaseError(result.failure)
        return CheckResult(True, self.check.target, None, 1, end - start, end - start, result)

    def __repr__(self) -> str:
        return f"CheckPhase({self.name!r}, {self.check!r})"
