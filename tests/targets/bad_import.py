"""A TARGET whose import fails inside the module: a dependency that is not installed."""

from __future__ import annotations

import smd_no_such_dependency  # type: ignore[import-not-found]  # noqa: F401
