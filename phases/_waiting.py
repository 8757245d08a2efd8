"""What every waiting phase does around its check's retry loop.

``CheckPhase``, ``DatabasePhase`` and ``MigrationsPhase`` all wait for a
dependency inside the phase's deadline. They share three rules, kept here
once: how much of the deadline the retry loop may use, how attempts are
recorded and logged (the first failure at once, then at most once per
``progress_interval``), and how the loop's result becomes the phase's outcome
(a ``PhaseError`` carrying the classified failure, or one ``<prefix>.ready``
line). Only the event prefix (``smd.check`` / ``smd.database``) and the
fields of the waiting line differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smd import PhaseContext, PhaseError

if TYPE_CHECKING:
    from smd.retry import CheckResult

__all__ = ["WaitLog", "wait_budget"]

# The phase runner cancels the phase at its deadline; stopping the attempt loop
# a little earlier lets the phase report its own classified failure (refused
# 57 times, last error 57P03...) instead of a bare cancellation. 5% of the
# deadline, at most 0.25 s: enough for the last attempt's classification and
# one log line, small enough not to matter against any real deadline.
_MARGIN_FRACTION = 0.05
_MARGIN_MAX = 0.25


def wait_budget(ctx: PhaseContext) -> float:
    """The seconds the retry loop may use: what is left of the deadline, less the margin."""
    remaining = ctx.remaining()
    return max(0.0, remaining - min(_MARGIN_MAX, remaining * _MARGIN_FRACTION))


class WaitLog:
    """The log lines and attempt records of one wait, under one event prefix."""

    __slots__ = ("_ctx", "_fields", "_log", "_prefix", "_reported")

    def __init__(self, ctx: PhaseContext, prefix: str, **fields: Any) -> None:
        self._ctx = ctx
        self._log = ctx.log
        self._prefix = prefix
        self._fields = fields  # on the failure lines too (the check's target)
        self._reported = 0.0

    def waiting(self, budget: float, per_attempt: float, **extra: Any) -> None:
        """``<prefix>.waiting`` with the deadline and the per-attempt timeout."""
        self._log.info(
            f"{self._prefix}.waiting",
            **self._fields,
            **extra,
            deadline=round(budget, 6),
            attempt_timeout=round(min(per_attempt, budget), 6),
        )

    def on_attempt(self, start: float, end: float, ok: bool, /, **detail: Any) -> None:
        """Record an attempt on the phase; log a failed one (the first at once, then
        at most once per progress interval: a refused connection shows within
        milliseconds, and a wait of minutes must not flood the log)."""
        ctx = self._ctx
        ctx.record_attempt(start, end, ok, **detail)
        if ok:
            return
        if len(ctx.attempts) == 1 or end - self._reported >= ctx.settings.progress_interval:
            self._reported = end
            self._log.info(
                f"{self._prefix}.attempt_failed",
                **self._fields,
                attempt=len(ctx.attempts),
                kind=detail.get("kind"),
                code=detail.get("code"),
                error=detail.get("message"),
                left=round(max(0.0, ctx.remaining()), 3),
            )

    def finished(self, result: CheckResult) -> CheckResult:
        """Raise the classified failure, or log ``<prefix>.ready`` and return ``result``."""
        if not result.ok:
            assert result.failure is not None
            raise PhaseError(result.failure)
        self._log.info(
            f"{self._prefix}.ready",
            target=result.target,
            attempts=result.attempts,
            time_to_ready=round(result.time_to_ready or 0.0, 6),
        )
        return result
