"""A startup whose ``boom`` phase raises what ``SMDTEST_RAISE`` names (tests/test_phase_failures.py)."""

from __future__ import annotations

import asyncio
import os
import time

from smd import PhaseContext, Startup

startup = Startup("raises")


class Custom(BaseException):
    """A user's own BaseException subclass."""


RAISES: dict[str, BaseException] = {
    "cancelled": asyncio.CancelledError(),
    "system-exit-0": SystemExit(0),
    "system-exit-3": SystemExit(3),
    "keyboard-interrupt": KeyboardInterrupt(),
    "generator-exit": GeneratorExit(),
    "custom": Custom("a custom BaseException"),
}


@startup.phase(timeout=5)
async def first(ctx: PhaseContext) -> str:
    return "ok"


@startup.phase(requires=["first"], timeout=float(os.environ.get("SMDTEST_TIMEOUT", "5")))
async def boom(ctx: PhaseContext) -> None:
    what = os.environ.get("SMDTEST_RAISE", "")
    if what == "block":
        time.sleep(float(os.environ.get("SMDTEST_BLOCK", "1.5")))  # noqa: ASYNC251 - on purpose
        return
    raise RAISES[what]
