"""Startups used by the CLI tests: each fails (or not) in a chosen way.

``SMDTEST_KIND`` picks what the ``work`` phase does: ok, infrastructure,
timeout, configuration, application, unknown, hang (waits until cancelled),
bypass (infrastructure, but the phase carries a permissive policy).
``SMDTEST_MARKS`` names a file that teardowns append their phase name to.
``SMDTEST_SLOW_TEARDOWN=1`` makes the teardown of ``second`` wait until cancelled.
"""

from __future__ import annotations

import os

import anyio

from smd import Failure, FailureKind, PhaseContext, PhaseError, Startup
from smd.bypass import PermissivePolicy

startup = Startup("kinds")
not_a_startup = 42


def _mark(text: str) -> None:
    path = os.environ.get("SMDTEST_MARKS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


async def _teardown_first(value: object) -> None:
    _mark("teardown first")


async def _teardown_second(value: object) -> None:
    if os.environ.get("SMDTEST_SLOW_TEARDOWN"):
        _mark("slow teardown second")
        await anyio.sleep_forever()
    _mark("teardown second")


@startup.phase(teardown=_teardown_first)
async def first(ctx: PhaseContext) -> str:
    _mark("started first")
    return "one"


@startup.phase(requires=["first"], teardown=_teardown_second)
async def second(ctx: PhaseContext) -> str:
    _mark("started second")
    return "two"


async def _work(ctx: PhaseContext) -> str:
    kind = os.environ.get("SMDTEST_KIND", "ok")
    if kind == "ok":
        return "done"
    if kind == "hang":
        _mark("waiting")
        await anyio.sleep_forever()
    if kind == "timeout":
        await anyio.sleep(30)
    if kind == "application":
        raise RuntimeError("the phase's own bug")
    if kind == "bypass":
        kind = "infrastructure"
    raise PhaseError(Failure(FailureKind(kind), f"simulated {kind} failure"))


startup.phase(
    name="work",
    requires=["second"],
    timeout=float(os.environ.get("SMDTEST_TIMEOUT", "20")),
    bypass=PermissivePolicy() if os.environ.get("SMDTEST_KIND") == "bypass" else None,
)(_work)
