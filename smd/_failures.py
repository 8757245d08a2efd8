"""Failure kinds and the frozen ``Failure`` value every failed phase carries."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from smd._encode import SKIP, encode

__all__ = ["Failure", "FailureKind"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


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
        by checks, and a wait they make last until its deadline is a censored sample."""
        return self in (FailureKind.INFRASTRUCTURE, FailureKind.TIMEOUT)

    @classmethod
    def parse(cls, value: str | FailureKind) -> FailureKind:
        """Parse a kind case-insensitively; the error lists the accepted values."""
        if isinstance(value, FailureKind):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            accepted = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown failure kind {value!r}; accepted: {accepted}") from None


def _chain(exc: BaseException | None) -> tuple[str, ...]:
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
    ``elapsed`` describe the work done before giving up. ``code`` is the
    dependency's own code for the failure, when it gave one (the PostgreSQL
    check puts the SQLSTATE there, the Redis check the error prefix, the
    HTTP check the status), and ``details`` any further machine-readable
    evidence (``{"sqlstate": "57P03"}``). ``deadline_reached`` is set by a
    check whose wait was ended by its deadline while the failure could still
    heal: the start is then a censored sample ("ready after at least this long").
    """

    kind: FailureKind
    message: str
    cause: BaseException | None = field(default=None, compare=False, repr=False, metadata=SKIP)
    attempts: int = 1
    elapsed: float = 0.0
    code: str | None = None
    details: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    causes: tuple[str, ...] = ()
    deadline_reached: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FailureKind):
            object.__setattr__(self, "kind", FailureKind.parse(self.kind))
        if not isinstance(self.details, MappingProxyType):
            object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        if not self.causes and self.cause is not None:
            object.__setattr__(self, "causes", _chain(self.cause))

    @staticmethod
    def chain_of(exc: BaseException | None) -> tuple[str, ...]:
        """``Type: message`` for an exception and everything it was raised from."""
        return _chain(exc)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the cause as its rendered chain; rounded and redacted)."""
        data: dict[str, object] = encode(self)
        return data
