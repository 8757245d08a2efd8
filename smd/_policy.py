"""The bypass-policy plug point: ``decide(failure, context) -> Decision``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smd._failures import Failure

if TYPE_CHECKING:
    from smd._clock import Clock
    from smd._samples import TimingHistory

__all__ = [
    "Action",
    "BypassPolicy",
    "Condition",
    "Decision",
    "DecisionContext",
    "PermissivePolicy",
    "StrictPolicy",
]


class Action(enum.StrEnum):
    """What startup does about a failed phase."""

    FAIL = "fail"
    CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition a policy checked, with the value it measured."""

    name: str
    holds: bool
    value: object
    threshold: object = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "holds": self.holds,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's verdict and why. ``conditions`` lists everything it checked."""

    action: Action
    reason: str
    conditions: tuple[Condition, ...] = ()
    mode: str = ""
    forced: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "mode": self.mode,
            "forced": self.forced,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What a policy may look at besides the failure itself.

    ``history`` is the persisted history of the phase's target (success rate,
    consecutive degraded startups); ``target`` names it.
    """

    phase: str
    environment: str
    essential: bool = False
    target: str = ""
    history: TimingHistory | None = field(default=None, repr=False)
    clock: Clock | None = field(default=None, repr=False)


@runtime_checkable
class BypassPolicy(Protocol):
    """Decides whether startup stops (``fail``) or continues degraded."""

    def decide(self, failure: Failure, context: DecisionContext) -> Decision:
        """Return the verdict for ``failure`` in ``context``."""
        ...


class StrictPolicy:
    """Every failure stops startup."""

    def decide(self, failure: Failure, context: DecisionContext) -> Decision:
        return Decision(
            Action.FAIL,
            f"strict mode: every failure stops startup ({failure.kind} failure in phase {context.phase!r})",
            mode="strict",
        )


class PermissivePolicy:
    """Every failure is logged and startup continues degraded."""

    def decide(self, failure: Failure, context: DecisionContext) -> Decision:
        return Decision(
            Action.CONTINUE,
            f"permissive mode: startup continues degraded ({failure.kind} failure in phase {context.phase!r})",
            mode="permissive",
        )
