"""A startup that hangs on a (blackholed) database after two phases with teardowns.

Used by tests/test_signals.py, both as a TARGET (``tests/targets/sig_blackhole.py:startup``)
and as an ASGI app for uvicorn (``tests.targets.sig_blackhole:app``).
``SMD_DATABASE_URL`` is the database; ``SMDTEST_MARKS`` names a file that
phases and teardowns append a line to (the observable side effect).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from smd import PhaseContext, Startup
from smd.asgi import smd_lifespan
from smd.phases import DatabasePhase

startup = Startup("sig-blackhole")


def _mark(text: str) -> None:
    path = os.environ.get("SMDTEST_MARKS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


async def _teardown_first(value: object) -> None:
    _mark("teardown first")


async def _teardown_second(value: object) -> None:
    _mark("teardown second")


@startup.phase(teardown=_teardown_first)
async def first(ctx: PhaseContext) -> str:
    _mark("started first")
    return "one"


@startup.phase(requires=["first"], teardown=_teardown_second)
async def second(ctx: PhaseContext) -> str:
    _mark("started second")
    return "two"


# The deadline (60 s) is far beyond the test's bound: exiting on time proves
# the signal cancelled the wait, not a deadline.
startup.add(DatabasePhase(requires=["second"], timeout=60.0, pool=True))

# The app is its process's owner: smd's one log pipeline (JSON lines on stderr).
app = Starlette(lifespan=smd_lifespan(startup, configure_logging=True))
