"""Readiness: ``starting -> ready | degraded | failed``, and ``degraded -> ready``
when every bypassed dependency has recovered.

A run keeps its :class:`Readiness` (``run.readiness``); the health endpoints
read its :meth:`~Readiness.snapshot`.
"""

from __future__ import annotations

from smd._readiness import Readiness
from smd._report import PhaseStatus, ReadinessSnapshot, State

__all__ = ["PhaseStatus", "Readiness", "ReadinessSnapshot", "State"]
