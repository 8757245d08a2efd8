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
from smd.retry import Backoff, Check, CheckResult, wait_ready
from smd.timeouts import AdaptiveTimeout, TimeoutPolicy, attempt_split

__all__ = ["CheckPhase"]

# The phase runner cancels the phase at its deadline; stopping the attempt loop
# a little earlier lets the phase report its own classified failure (refused
# 57 times, last error LOADING...) instead of a bare cancellation.
_MARGIN_FRACTION = 0.05
_MARGIN_MAX = 0.25


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
        remaining = ctx.remaining()
        budget = max(0.0, remaining - min(_MARGIN_MAX, remaining * _MARGIN_FRACTION))
        per_attempt = self._attempt_seconds(ctx, budget)
        target = self.check.target
        log = ctx.log
        log.info(
            "smd.check.waiting",
            target=target,
            deadline=round(budget, 6),
            attempt_timeout=round(min(per_attempt, budget), 6),
        )
        state = {"reported": 0.0}
        interval = ctx.settings.progress_interval

        def on_attempt(start: float, end: float, ok: bool, /, **detail: Any) -> None:
            ctx.record_attempt(start, end, ok, **detail)
            # The first failure is logged at once, then at most once per
            # progress interval.
            if not ok and (len(ctx.attempts) == 1 or end - state["reported"] >= interval):
                state["reported"] = end
                log.info(
                    "smd.check.attempt_failed",
                    target=target,
                    attempt=len(ctx.attempts),
                    kind=detail.get("kind"),
                    code=detail.get("code"),
                    error=detail.get("message"),
                    left=round(max(0.0, ctx.remaining()), 3),
                )

        options: dict[str, Any] = {}
        if self.backoff is not None:
            options["backoff"] = self.backoff
        result = await wait_ready(
            self.check,
            deadline_seconds=budget,
            attempt_seconds=per_attempt,
            on_attempt=on_attempt,
            history=ctx.history,
            clock=ctx.clock,
            **options,
        )
        if not result.ok:
            assert result.failure is not None
            raise PhaseError(result.failure)
        log.info(
            "smd.check.ready",
            target=result.target,
            attempts=result.attempts,
            time_to_ready=round(result.time_to_ready or 0.0, 6),
        )
        return result

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
