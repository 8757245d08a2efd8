"""One invalid plan per ``BAD_CASE`` (tests/test_bad_input.py): each must exit 78.

Errors found while declaring (bad timeout, a sync callable, a duplicate
name) raise at import; errors of the graph (cycle, unknown requirement)
when the plan is computed.
"""

from __future__ import annotations

import math
import os
from typing import Any

from smd import Phase, PhaseContext, Startup

CASE = os.environ.get("BAD_CASE", "")
startup = Startup("bad-plans")


async def _noop(ctx: PhaseContext) -> None:
    return None


def _sync(ctx: PhaseContext) -> None:
    return None


def _add(name: str, requires: tuple[str, ...] = (), **kw: Any) -> None:
    startup.add(Phase(name=name, run=kw.pop("run", _noop), requires=requires, **kw))


_TIMEOUTS: dict[str, Any] = {
    "timeout-negative": -1.0,
    "timeout-zero": 0,
    "timeout-nan": math.nan,
    "timeout-inf": math.inf,
    "timeout-string": "10s",
}

if CASE == "cycle":
    _add("a", ("c",))
    _add("b", ("a",))
    _add("c", ("b",))
elif CASE == "self-cycle":
    _add("a", ("a",))
elif CASE == "unknown-requirement":
    _add("a")
    _add("b", ("a", "missing"))
elif CASE == "duplicate":
    _add("a")
    _add("a")
elif CASE == "sync-callable":
    _add("a", run=_sync)
elif CASE == "sync-teardown":
    _add("a", teardown=_sync)
elif CASE in _TIMEOUTS:
    _add("a", timeout=_TIMEOUTS[CASE])
elif CASE == "bad-name":
    _add("has space")
else:
    _add("a")
