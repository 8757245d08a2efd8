"""The bypass-policy plug point, ``decide(failure, context) -> Decision``, and
the one function that asks any policy: :func:`decide`.

:func:`decide` is what the run and ``smd plan`` both call: it asks the
policy, fails safe when the policy raises, and applies the manual override
(``SMD_BYPASS__FORCE_CONTINUE``) to every policy alike. It logs nothing: the
run publishes a :class:`~smd.events.BypassDecided` event, which the logging
observer writes as ``smd.bypass.decided`` (and ``smd.bypass.forced`` /
``smd.bypass.force_refused`` when the override was involved).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smd._encode import SKIP, encode
from smd._failures import Failure
from smd._settings import BypassSettings, Environment

if TYPE_CHECKING:
    from smd._samples import TimingHistory
    from smd.clock import Clock

__all__ = [
    "Action",
    "BypassPolicy",
    "Condition",
    "Decision",
    "DecisionContext",
    "PermissivePolicy",
    "StrictPolicy",
    "apply_force",
    "decide",
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


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's verdict and why. ``conditions`` lists everything it checked."""

    action: Action
    reason: str
    conditions: tuple[Condition, ...] = ()
    mode: str = ""
    forced: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rounded and redacted)."""
        data: dict[str, object] = encode(self)
        return data


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What a policy may look at besides the failure itself.

    ``history`` is the persisted history of the phase's target *before* this
    start (success rate, consecutive degraded startups); ``target`` names it.
    ``settings`` are the run's bypass settings (cells, thresholds, force).
    """

    phase: str
    environment: str
    essential: bool = False
    target: str = ""
    history: TimingHistory | None = field(default=None, repr=False, metadata=SKIP)
    clock: Clock | None = field(default=None, repr=False, metadata=SKIP)
    settings: BypassSettings = field(default_factory=BypassSettings, repr=False, metadata=SKIP)


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


def apply_force(decision: Decision, context: DecisionContext) -> Decision:
    """The manual override ``force_continue`` applied to any policy's decision.

    Outside production (or in production with ``allow_force_in_production``)
    the verdict becomes ``continue`` with ``forced=True``. In production
    without that second setting the force is refused: the policy's own
    verdict stands, a ``force_continue`` condition that does not hold is
    added, and the reason says so.
    """
    bypass = context.settings
    if not bypass.force_continue:
        return decision
    try:
        env: Environment | None = Environment.parse(context.environment)
    except ValueError:
        env = None
    if env is Environment.PRODUCTION and not bypass.allow_force_in_production:
        refused = Condition(
            "force_continue",
            False,
            True,
            "allow_force_in_production",
            "force continue was requested but is refused in production; "
            "set SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION=true to allow it",
        )
        return Decision(
            decision.action,
            f"{decision.reason} Force continue (SMD_BYPASS__FORCE_CONTINUE) was requested but "
            "refused in production because SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION is not set.",
            (*decision.conditions, refused),
            decision.mode,
            forced=False,
        )
    allowed = " with SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION" if env is Environment.PRODUCTION else ""
    detail = f"force continue is set (SMD_BYPASS__FORCE_CONTINUE){allowed}"
    return Decision(
        Action.CONTINUE,
        f"Startup continues degraded because {detail}. The policy's own verdict was "
        f"{decision.action.value}: {decision.reason}",
        (*decision.conditions, Condition("force_continue", True, True, None, detail)),
        decision.mode,
        forced=True,
    )


def decide(policy: BypassPolicy, failure: Failure, context: DecisionContext) -> Decision:
    """Ask ``policy`` about ``failure``: fail safe if it raises, then apply the override."""
    try:
        decision = policy.decide(failure, context)
        if not isinstance(decision, Decision):
            raise TypeError(f"decide() returned {type(decision).__name__}, not a Decision")
    except Exception as exc:
        # A broken policy must not let a failure through: fail, and say why.
        # (The manual override still applies: it exists for emergencies.)
        decision = Decision(
            Action.FAIL,
            f"bypass policy {type(policy).__name__} raised {type(exc).__name__}: {exc}; failing safe",
        )
    return apply_force(decision, context)
