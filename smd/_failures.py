"""Failure kinds and the frozen ``Failure`` value every phase outcome carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Failure", "FailureKind", "PhaseError", "cause_chain"]


class FailureKind(enum.StrEnum):
    """Why a phase failed, as far as waiting is concerned.

    ``infrastructure`` and ``timeout`` may heal by waiting; ``configuration``
    will not; ``application`` is the phase's own code; ``unknown`` is the rest.
    """

    INFRASTRUCTURE = "infrastructure"
    TIMEOUT = "timeout"
    CONFIGURATION = "configuration"
    APPLICATION = "application"
    UNKNOWN = "unknown"

    @property
    def may_heal(self) -> bool:
        """Whether waiting can fix it: ``infrastructure`` and ``timeout`` are retried
        by checks and count as censored latency when they use up a deadline."""
        return self in (FailureKind.INFRASTRUCTURE, FailureKind.TIMEOUT)

    @classmethod
    def parse(cls, value: str) -> FailureKind:
        """Parse a kind case-insensitively; the error lists the accepted values."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            accepted = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown failure kind {value!r}; accepted: {accepted}") from None


def cause_chain(exc: BaseException | None) -> tuple[str, ...]:
    """``Type: message`` for an exception and everything it was raised from."""
    out: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        out.append(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: what kind, what happened, and the evidence.

    ``cause`` is the underlying exception (kept for chaining, never
    serialised raw); ``causes`` is its rendered chain. ``attempts`` and
    ``elapsed`` describe the work done before giving up. ``sqlstate`` is set
    when the dependency answered with one (PostgreSQL checks).
    """

    kind: FailureKind
    message: str
    cause: BaseException | None = field(default=None, compare=False, repr=False)
    attempts: int = 1
    elapsed: float = 0.0
    sqlstate: str | None = None
    causes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.causes and self.cause is not None:
            object.__setattr__(self, "causes", cause_chain(self.cause))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the cause as its rendered chain)."""
        return {
            "kind": self.kind.value,
            "message": self.message,
            "sqlstate": self.sqlstate,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 6),
            "causes": list(self.causes),
        }


class PhaseError(Exception):
    """Raised by a phase to report an already-classified failure.

    Checks classify what went wrong (a refused connection is
    ``infrastructure``, a bad password ``configuration``); a phase that uses
    a check raises ``PhaseError(failure)`` so the sequencer keeps that kind
    instead of calling it ``application``.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
