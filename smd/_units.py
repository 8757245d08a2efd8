"""One validator for "a number of seconds", shared by every API that takes one."""

from __future__ import annotations

import math

__all__ = ["seconds"]


def seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as a float of seconds, or ``ValueError`` naming ``name``.

    Accepted: a finite ``int`` or ``float`` above 0 (``zero=True``: at least 0);
    ``bool`` is refused (``True`` seconds is a mistake, not 1 s).
    """
    bound = ">= 0" if zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero):
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return v
