"""Timeout policies: fixed deadlines and deadlines learned from history.

The public, documented surface for replaying a trace through smd's
adaptive timeout::

    from smd.timeouts import AdaptiveTimeout, TimingHistory

    history = TimingHistory()
    policy = AdaptiveTimeout()          # built-in production-like bounds
    for ready_after in trace:
        decision = policy.compute(history)
        if ready_after is not None and ready_after <= decision.seconds:
            history.record_success(ready_after)
        else:
            history.record_timeout(decision.seconds)   # censored: "at least T"
    print(decision.seconds, decision.source, decision.explanation)

See :class:`AdaptiveTimeout` for the formula and :data:`INFRASTRUCTURE_PROFILES`
for the cold-start allowances.
"""

from __future__ import annotations

from smd._adaptive import INFRASTRUCTURE_PROFILES, AdaptiveTimeout, InfrastructureProfile
from smd._samples import TimingHistory
from smd._timeout_base import (
    FixedTimeout,
    TimeoutContext,
    TimeoutDecision,
    TimeoutPolicy,
    TimeoutSource,
)

__all__ = [
    "INFRASTRUCTURE_PROFILES",
    "AdaptiveTimeout",
    "FixedTimeout",
    "InfrastructureProfile",
    "TimeoutContext",
    "TimeoutDecision",
    "TimeoutPolicy",
    "TimeoutSource",
    "TimingHistory",
]
