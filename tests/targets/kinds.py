"""Startups used by the CLI tests: each fails (or not) in a chosen way.

``SMD_TEST_KIND`` picks what the ``work`` phase does: ok, infrastructure,
timeout, configuration, application, unknown, hang (waits until cancelled),
bypass (infrastructure, but the phase carries a permissive policy).
``SMD_TEST_MARKS`` names a file that teardowns append their phase name to.
"""

from __future__ import annotations

import os

import anyio

from smd import Failure, FailureKind, PermissivePolicy, PhaseContext, PhaseError, Startup

startup = Startup("kinds")
not_a_startup = 42


def _mark(text: str) -> None:
    path = os.environ.get("SMD_TEST_MARKS")
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


async def _work(ctx: PhaseContext) -> str:
    kind = os.environ.get("SMD_TEST_KIND", "ok")
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
    timeout=float(os.environ.get("SMD_TEST_TIMEOUT", "20")),
    bypass=PermissivePolicy() if os.environ.get("SMD_TEST_KIND") == "bypass" else None,
)(_work)
