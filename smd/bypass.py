"""Bypass policies: whether a failed phase stops startup or lets it continue degraded.

The built-in :class:`BypassMatrix` (environment x failure kind) is the
default; anything with ``decide(failure, context) -> Decision`` can replace it
(``Startup(name, bypass=...)`` or per phase). :func:`decide` is how smd asks
any policy: it fails safe when the policy raises and applies the manual
override (``SMD_BYPASS__FORCE_CONTINUE``) to every policy alike.
"""

from __future__ import annotations

from smd._matrix import DEFAULT_MODES, BypassMatrix, CellSource
from smd._policy import (
    Action,
    BypassPolicy,
    Condition,
    Decision,
    DecisionContext,
    PermissivePolicy,
    StrictPolicy,
    apply_force,
    decide,
)
from smd._settings import BypassMode, CellAction
from smd._stats import DEFAULT_CONFIDENCE, SuccessRate, success_rate, wilson_lower_bound

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MODES",
    "Action",
    "BypassMatrix",
    "BypassMode",
    "BypassPolicy",
    "CellAction",
    "CellSource",
    "Condition",
    "Decision",
    "DecisionContext",
    "PermissivePolicy",
    "StrictPolicy",
    "SuccessRate",
    "apply_force",
    "decide",
    "success_rate",
    "wilson_lower_bound",
]
