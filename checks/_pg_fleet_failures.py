"""How the fleet coordinator words its failures: each names the work's key and what to expect.

Every failure says whether another replica will run the work (nothing was
recorded) and never shows a secret (messages come from
:func:`smd.checks._pg_classify.classify`, which scrubs them).
"""

from __future__ import annotations

from smd import Failure, FailureKind
from smd.checks._pg_classify import classify
from smd.checks._pg_lock_session import POOLED
from smd.checks._pg_options import PostgresOptions

__all__ = ["classified", "lost", "overran", "pooled", "timed_out", "unreachable", "unrecorded"]


def classified(exc: BaseException, key: str, options: PostgresOptions) -> Failure:
    """An exception of the coordination (not of the work), classified, naming the work."""
    f = classify(exc, target=options.target_key(), secrets=options.secrets())
    return Failure(
        f.kind,
        f"once-per-fleet work {key!r}: {f.message}",
        cause=f.cause,
        code=f.code,
        details=f.details,
        causes=f.causes,
    )


def unreachable(
    f: Failure, key: str, where: str, *, deadline_reached: bool | None = None
) -> Failure:
    """No connection to the coordinating database (``f``: why, already classified).

    ``deadline_reached``: whether the deadline ended the wait (default: for a timeout).
    """
    return Failure(
        f.kind,
        f"once-per-fleet work {key!r}: cannot reach {where}: {f.message}",
        cause=f.cause,
        code=f.code,
        details=f.details,
        causes=f.causes,
        deadline_reached=(
            f.kind is FailureKind.TIMEOUT if deadline_reached is None else deadline_reached
        ),
    )


def pooled(key: str, options: PostgresOptions) -> Failure:
    """The connection is not one server session: a session lock cannot be held (one line)."""
    return Failure(
        FailureKind.CONFIGURATION,
        f"once-per-fleet work {key!r}: SMD_FLEET_URL ({options.target_key()}) {POOLED}",
        code="fleet-lock",
    )


def timed_out(key: str, deadline_seconds: float, holder: str | None, where: str) -> Failure:
    """Another replica still held the lock at this replica's deadline."""
    who = f"replica {holder}" if holder else "another replica"
    return Failure(
        FailureKind.TIMEOUT,
        f"once-per-fleet work {key!r} was still being run by {who} when this replica's "
        f"deadline of {deadline_seconds:.3g}s came ({where})",
        deadline_reached=True,
    )


def overran(key: str) -> Failure:
    """This replica's work did not finish within its deadline."""
    return Failure(
        FailureKind.TIMEOUT,
        f"once-per-fleet work {key!r} did not finish within its deadline; nothing "
        "was recorded, so another replica will run it",
        deadline_reached=True,
    )


def lost(key: str, where: str, problem: str) -> Failure:
    """The lock's session was lost while the work ran (the work was told to stop)."""
    return Failure(
        FailureKind.INFRASTRUCTURE,
        f"once-per-fleet work {key!r}: lost {where} while the work ran "
        f"({problem}); the work was told to stop (work in a thread, such as an "
        "Alembic upgrade, runs to its end) and nothing was recorded, so another "
        "replica will run it",
    )


def unrecorded(key: str, exc: BaseException, options: PostgresOptions) -> Failure:
    """The work succeeded but its completion record could not be written."""
    cause = classify(exc, target=options.target_key(), secrets=options.secrets())
    return Failure(
        FailureKind.INFRASTRUCTURE,
        f"once-per-fleet work {key!r} finished, but its completion could not be "
        f"recorded ({cause.message}); another replica will run it again",
        cause=cause.cause,
        code=cause.code,
    )
