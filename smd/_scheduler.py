"""Scheduling phases: each as soon as everything it requires ended ``ok``
(``concurrent``, time-to-ready = the critical path), or one at a time in
plan order (``sequential``). Stops at the first failure the bypass policy
will not let through, cancelling whatever still runs.
"""

from __future__ import annotations

from typing import Any, Literal

import anyio

from smd._phase import Phase
from smd._plan import Plan
from smd._report import Outcome, PhaseReport
from smd._runner import PhaseRunner

__all__ = ["Mode", "Scheduler"]

Mode = Literal["concurrent", "sequential"]


class Scheduler:
    """Runs a plan's phases with a :class:`~smd._runner.PhaseRunner`.

    ``reports`` holds the phases that ended (in completion order; the report
    sorts them), ``values`` what the ``ok`` ones returned, ``failed`` the
    first phase that stopped startup and ``errors`` its error. The runner's
    ``started`` says which phases began (a phase that began and has no
    report was cancelled).
    """

    def __init__(self, plan: Plan, runner: PhaseRunner, mode: Mode) -> None:
        if mode not in ("concurrent", "sequential"):
            raise ValueError(f"unknown mode {mode!r}; accepted: concurrent, sequential")
        self.plan = plan
        self.runner = runner
        self.mode: Mode = mode
        self.reports: dict[str, PhaseReport] = {}
        self.values: dict[str, Any] = {}
        self.failed: str | None = None
        self.errors: list[Exception] = []

    async def run(self) -> None:
        """Run every phase (or until one fails)."""
        if self.mode == "sequential":
            for name in self.plan.order:
                await self._one(self.plan.phase(name))
                if self.failed is not None:
                    return
            return
        # Event-driven: a phase is spawned when its last requirement ends (in
        # plan order among those that become ready together), so no task
        # waits on events and the first phases start before the rest is
        # even looked at.
        waiting = {p.name: len(p.requires) for p in self.plan.phases}
        dependents = self.plan.dependents()
        async with anyio.create_task_group() as tg:

            async def one(phase: Phase) -> None:
                await self._one(phase)
                if self.failed is not None:
                    tg.cancel_scope.cancel()
                    return
                for name in dependents[phase.name]:
                    waiting[name] -= 1
                    if waiting[name] == 0:
                        tg.start_soon(one, self.plan.phase(name))

            for name in self.plan.order:
                if waiting[name] == 0:
                    tg.start_soon(one, self.plan.phase(name))

    def _blocked_by(self, phase: Phase) -> str | None:
        for req in phase.requires:
            rep = self.reports.get(req)
            if rep is None or rep.outcome is not Outcome.OK:
                got = rep.outcome.value if rep else "not run"
                return f"requirement {req!r} ended {got}"
        return None

    async def _one(self, phase: Phase) -> None:
        blocked = self._blocked_by(phase)
        if blocked is not None:
            self.reports[phase.name] = self.runner.skipped(phase, blocked)
            return
        outcome = await self.runner.run(phase, self.values)
        self.reports[phase.name] = outcome.report
        if outcome.report.outcome is Outcome.OK:
            self.values[phase.name] = outcome.value
        elif outcome.report.outcome is Outcome.FAILED and self.failed is None:
            self.failed = phase.name
            if outcome.error is not None:
                self.errors.append(outcome.error)
