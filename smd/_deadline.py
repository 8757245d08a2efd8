"""The one function that computes a phase's deadline and per-attempt deadline.

``smd run``, ``smd plan`` and ``smd history`` all call :func:`phase_timeout`,
so for the same phase and history they print the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from smd._adaptive import AdaptiveTimeout
from smd._samples import TimingHistory
from smd._settings import Environment, Settings
from smd._timeout_base import FixedTimeout, TimeoutContext, TimeoutDecision, TimeoutPolicy

__all__ = [
    "BUILT_IN_POLICIES",
    "attempt_split",
    "needs_history",
    "phase_timeout",
    "policy_from_spec",
    "policy_spec",
    "timeout_context",
]

# With no learned per-attempt deadline, one attempt gets a quarter of the
# deadline, but at least 2 s (a TLS + SCRAM handshake over a slow link) and
# never more than the deadline: several attempts fit, so a dependency that
# was silent (blackholed) and comes back within the deadline is still caught.
_SPLIT_FRACTION = 0.25
_SPLIT_MIN = 2.0


def attempt_split(seconds: float) -> float:
    """The per-attempt deadline when nothing was learned about single attempts."""
    return min(seconds, max(_SPLIT_MIN, seconds * _SPLIT_FRACTION))


def timeout_context(settings: Settings, environment: Environment | None = None) -> TimeoutContext:
    """The settings' view of deadlines for ``environment`` (default: the settings')."""
    env = environment or settings.environment
    return TimeoutContext(
        env.value,
        settings.timeouts.for_env(env),
        settings.timeouts.profile,
        settings.timeouts.min_samples,
    )


def needs_history(policy: TimeoutPolicy | None) -> bool:
    """Whether computing this policy's deadline reads the target's history."""
    return policy is not None and bool(getattr(policy, "needs_history", True))


def phase_timeout(
    policy: TimeoutPolicy | None,
    history: TimingHistory,
    settings: Settings,
    *,
    environment: Environment | None = None,
) -> TimeoutDecision:
    """The deadline of a phase whose timeout policy is ``policy`` (``None``: the default).

    The result always has ``attempt_seconds`` set: the policy's learned
    per-attempt deadline when it is shorter than the whole deadline, else
    :func:`attempt_split`. A policy that raises gives the settings'
    ``phase_timeout`` with an explanation saying so (a broken policy must not
    hide the phase).
    """
    if policy is None:
        s = settings.phase_timeout
        decision = TimeoutDecision(
            s, "default", f"no timeout on the phase: settings phase_timeout = {s:g}s"
        )
    else:
        try:
            decision = policy.compute(history, timeout_context(settings, environment))
        except Exception as exc:
            s = settings.phase_timeout
            decision = TimeoutDecision(
                s,
                "default",
                f"timeout policy {type(policy).__name__} raised {type(exc).__name__}; "
                f"using settings phase_timeout = {s:g}s",
            )
    learned = decision.attempt_seconds
    if learned is not None and 0 < learned < decision.seconds:
        return decision
    # Built directly: dataclasses.replace introspects the fields on every call,
    # and this runs once per phase on the startup's critical path.
    return TimeoutDecision(
        decision.seconds,
        decision.source,
        decision.explanation,
        attempt_split(decision.seconds),
        decision.details,
    )


def policy_spec(policy: TimeoutPolicy | None) -> Mapping[str, Any]:
    """How ``smd history`` can rebuild this policy later (stored with the target)."""
    if policy is None:
        return {"type": "default"}
    spec = getattr(policy, "spec", None)
    if callable(spec):
        data = spec()
        if isinstance(data, Mapping):
            return dict(data)
    return {"type": "custom", "name": type(policy).__qualname__}


#: The policy types :func:`policy_from_spec` rebuilds; any other is a custom
#: policy's, which only its own code can rebuild.
BUILT_IN_POLICIES: Final = frozenset({"default", "fixed", "adaptive"})


def policy_from_spec(spec: Mapping[str, Any]) -> TimeoutPolicy | str | None:
    """The policy a spec names, ``None`` for the settings' default, or why it cannot be rebuilt."""
    kind = spec.get("type")
    params = {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "default":
            return None
        if kind == "fixed":
            return FixedTimeout(float(params["seconds"]))
        if kind == "adaptive":
            return AdaptiveTimeout(**params)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        # ArithmeticError: a number too large for a float (a hand-made spec).
        return f"stored timeout policy cannot be rebuilt ({type(exc).__name__}: {exc})"
    return f"set by the custom policy {spec.get('name', '?')}; `smd plan TARGET` shows it"
