"""A TARGET whose phases form a cycle (an invalid plan, exit 78)."""

from __future__ import annotations

from smd import PhaseContext, Startup

startup = Startup("cycle")


@startup.phase(requires=["b"])
async def a(ctx: PhaseContext) -> None:
    return None


@startup.phase(requires=["a"])
async def b(ctx: PhaseContext) -> None:
    return None
