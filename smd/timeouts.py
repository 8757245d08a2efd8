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

See :class:`AdaptiveTimeout` for the formula. Infrastructure profiles
(cold-start allowances, ``SMD_TIMEOUTS__PROFILE``) are contributed by plugins:
:func:`smd.plugins.profiles` lists them (the database phase ships the cloud ones).
"""

from __future__ import annotations

from smd._adaptive import AdaptiveTimeout
from smd._deadline import attempt_split, phase_timeout, policy_spec, timeout_context
from smd._profiles import InfrastructureProfile
from smd._rfc6298 import Rfc6298Timeout
from smd._samples import Sample, Series, TimingHistory
from smd._timeout_base import (
    FixedTimeout,
    TimeoutContext,
    TimeoutDecision,
    TimeoutPolicy,
    TimeoutSource,
)

__all__ = [
    "AdaptiveTimeout",
    "FixedTimeout",
    "InfrastructureProfile",
    "Rfc6298Timeout",
    "Sample",
    "Series",
    "TimeoutContext",
    "TimeoutDecision",
    "TimeoutPolicy",
    "TimeoutSource",
    "TimingHistory",
    "attempt_split",
    "phase_timeout",
    "policy_spec",
    "timeout_context",
]
