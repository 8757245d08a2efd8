"""How a phase's ending becomes a failure: its own exception, its deadline, a real cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio

from smd._failures import Failure, FailureKind
from smd.exceptions import PhaseError
from smd.retry import Attempt

__all__ = ["deadline_failure", "genuinely_cancelled", "phase_failure"]


def genuinely_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is the run's own cancellation (a deadline, a signal, the
    caller's scope), not a ``CancelledError`` the phase's code raised itself."""
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not asyncio (trio): its Cancelled cannot be raised by hand
        return True
    return task is None or task.cancelling() > 0


def deadline_failure(
    name: str,
    length: float,
    source: str,
    attempts: Sequence[Attempt],
    error: BaseException | None,
    elapsed: float,
) -> Failure:
    """The failure of a phase its deadline cancelled.

    When the phase was retrying a dependency, the deadline may land while
    it waits between attempts (a busy machine wakes it late): the kind its
    attempts saw (refused: infrastructure, with the dependency's code) says
    more than "timeout", so it is kept, as the retry helper keeps the
    telling failure. Attempts that all timed out, or none, leave ``timeout``.
    """
    message = f"phase {name!r} did not finish within its deadline of {length:.3g}s ({source})"
    kind, code = FailureKind.TIMEOUT, None
    for attempt in reversed(attempts):
        seen = attempt.detail.get("kind")
        if attempt.ok or seen is None:
            continue
        try:
            seen_kind = FailureKind.parse(str(seen))
        except ValueError:
            continue
        if seen_kind is FailureKind.INFRASTRUCTURE:
            kind = seen_kind
            code = attempt.detail.get("code")
            said = attempt.detail.get("message")
            if said:
                message += f"; its last attempts failed: {said}"
        break
    return Failure(
        kind,
        message,
        cause=error,
        attempts=max(1, len(attempts)),
        elapsed=elapsed,
        code=str(code) if code else None,
        deadline_reached=True,
    )


def phase_failure(name: str, exc: BaseException, elapsed: float) -> Failure:
    """The failure of a phase whose own code raised ``exc`` (any ``BaseException``)."""
    if isinstance(exc, PhaseError):
        return exc.failure
    return Failure(
        FailureKind.APPLICATION,
        f"phase {name!r} raised {type(exc).__name__}: {exc}"
        if str(exc)
        else f"phase {name!r} raised {type(exc).__name__}",
        cause=exc,
        elapsed=elapsed,
    )
