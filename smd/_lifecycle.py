"""The one start/stop driver: :func:`lifecycle`; :func:`run_startup` is a gate on it.

``smd run``, the ASGI lifespan and library users all drive a run through
:func:`lifecycle`, so starting, background recovery, teardown and error
reporting behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from smd._report import Report
from smd._run import StartupRun
from smd._signals import Interruption
from smd._startup import Startup
from smd.exceptions import StartupInterrupted

__all__ = ["lifecycle", "run_startup"]


@asynccontextmanager
async def lifecycle(
    startup: Startup | StartupRun,
    *,
    recover: bool = True,
    interruption: Interruption | None = None,
    **options: Any,
) -> AsyncIterator[StartupRun]:
    """Start ``startup`` on enter, tear down on exit.

    Yields the :class:`StartupRun` (``run.values``, ``run.report``,
    ``run.readiness``) once every phase ended ready or degraded; bypassed
    phases with a recovery probe are probed in the background meanwhile
    (``recover=True``) and stopped at exit. A failed startup raises
    :class:`~smd.StartupFailed` after rolling back what started; a signal
    delivered to ``interruption`` (see the CLI and the ASGI lifespan) raises
    :class:`~smd.exceptions.StartupInterrupted`. ``options`` go to
    :class:`StartupRun` (``settings``, ``store``, ``policy``, ``clock``,
    ``mode``, ``observers``). No task outlives the block.

    ``startup`` may also be a :class:`StartupRun` built beforehand (without
    ``options``), for a caller that publishes ``run.readiness`` before the
    phases run (the ASGI lifespan does); a run is started once.
    """
    if isinstance(startup, StartupRun):
        if options:
            raise TypeError(
                f"lifecycle() got a StartupRun and options {sorted(options)}: "
                "give the options to StartupRun(...) instead"
            )
        if startup.started:
            raise RuntimeError(f"this run of startup {startup.startup.name!r} was already started")
        run = startup
    else:
        run = StartupRun(startup, **options)
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        try:
            with anyio.CancelScope() as scope:
                if interruption is not None:
                    interruption.bind(run, scope)
                await run.start(tg if recover else None)
            if interruption is not None:
                interruption.bind(run, None)  # later signals only abandon teardown
            if scope.cancelled_caught:
                assert run.report is not None
                signum = interruption.signum if interruption is not None else None
                raise StartupInterrupted(run.report, signum or 0)
            try:
                yield run
            finally:
                tg.cancel_scope.cancel()  # stop background recovery first
                with anyio.CancelScope(shield=True):
                    await run.stop()
        except Exception as exc:
            # Raised from the task group's host, it would come out wrapped in
            # an ExceptionGroup: StartupFailed and the body's own errors must
            # reach the caller as themselves.
            error = exc
    if error is not None:
        raise error


async def run_startup(startup: Startup, **options: Any) -> Report:
    """Run a startup as a gate: run every phase, then tear down what started.

    Returns the report when ready or degraded; raises :class:`~smd.StartupFailed`
    (with ``.report``) otherwise. Options are those of :func:`lifecycle`.
    """
    async with lifecycle(startup, recover=False, **options) as run:
        assert run.report is not None
        return run.report
