"""Infrastructure profiles: cold-start allowances a learned deadline adds.

The engine knows the idea, not the catalogue: plugins contribute named
profiles (the PostgreSQL phase ships the cloud-database ones) through
:class:`smd.plugins.Plugin`; ``none`` is always there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NO_PROFILE", "InfrastructureProfile"]


@dataclass(frozen=True, slots=True)
class InfrastructureProfile:
    """Cold-start allowances of a piece of infrastructure between service and dependency.

    ``cold_start`` seconds are added to the overall deadline (the no-data
    default and the learned value alike) and ``attempt`` seconds to the
    per-attempt deadline, because a cold path can be slower than anything the
    history has seen yet (e.g. the first start after the path scaled to zero).
    They are allowances chosen to cover documented behaviour, not
    measurements; pass your own profile when you know better.
    """

    name: str
    cold_start: float
    attempt: float
    description: str = ""

    def __post_init__(self) -> None:
        for label, value in (("cold_start", self.cold_start), ("attempt", self.attempt)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"profile {self.name!r}: {label} must be a finite number >= 0")


NO_PROFILE = InfrastructureProfile(
    "none", 0.0, 0.0, "No allowance: the history is the whole story."
)
