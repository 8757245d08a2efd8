"""Signals during a run: SIGTERM, SIGINT and SIGHUP interrupt it, once.

Opt-in and separate from the driver: the CLI and the ASGI lifespan install
:func:`catch_signals` around :func:`smd.lifecycle` and hand it the same
:class:`Interruption`. The first signal cancels the phases (what completed
is torn down, the report says ``interrupted``); a second one while teardown
runs abandons the remaining teardowns (the report names them).

Handlers are installed with ``signal.signal`` (not the loop's
``add_signal_handler``) so that a server's own handler (uvicorn's) can be
chained and restored exactly; the work is handed to the event loop with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from smd._run import StartupRun

__all__ = ["SIGNAL_NAMES", "Interruption", "catch_signals"]

SIGNAL_NAMES: dict[int, str] = {
    signal.SIGTERM: "sigterm",
    signal.SIGINT: "sigint",
    **({signal.SIGHUP: "sighup"} if hasattr(signal, "SIGHUP") else {}),
}


class Interruption:
    """Where signals go: the run they interrupt and the scope they cancel.

    :func:`smd.lifecycle` binds the run and the scope of its start; the
    first signal number is kept in :attr:`signum`.
    """

    __slots__ = ("_run", "_scope", "chained", "signum")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.chained = True
        self._run: StartupRun | None = None
        self._scope: anyio.CancelScope | None = None

    def bind(self, run: StartupRun | None, scope: anyio.CancelScope | None) -> None:
        """Direct later signals at ``run`` (and cancel ``scope`` while it is set)."""
        self._run = run
        self._scope = scope

    def __call__(self, signum: int) -> None:
        """A signal arrived (called on the event loop's thread)."""
        if self.signum is None:
            self.signum = signum
        if self._run is not None:
            self._run.interrupt(SIGNAL_NAMES[signum])
        if self._scope is not None:
            self._scope.cancel()


@contextmanager
def catch_signals(interruption: Interruption, *, enabled: bool = True) -> Iterator[Interruption]:
    """Send SIGTERM / SIGINT / SIGHUP to ``interruption`` while the block runs.

    A handler the host installed before (a server's) is still called after
    ours; :attr:`Interruption.chained` says afterwards whether one was.
    Ignored signals stay ignored. Off the main thread, outside asyncio, or
    with ``enabled=False`` nothing is installed.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): leave signals to the host
        loop = None
    if not enabled or loop is None or threading.current_thread() is not threading.main_thread():
        yield interruption
        return
    running = loop
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        running.call_soon_threadsafe(interruption, signum)
        prev = previous.get(signum)
        if prev is not None and _callable_handler(prev):
            prev(signum, frame)

    for sig in SIGNAL_NAMES:
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN or current is None:
            continue  # ignored stays ignored; None: installed outside Python
        previous[sig] = signal.signal(sig, handler)
    try:
        yield interruption
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
        if interruption.signum is not None:
            interruption.chained = _callable_handler(previous.get(interruption.signum))


def _callable_handler(handler: object) -> bool:
    """Whether ``handler`` is a host's own handler, to be called after ours.

    Python's default SIGINT handler is not, nor is the one ``asyncio.Runner``
    (so ``asyncio.run`` and ``anyio.run``) installs in its place: it cancels
    the main task on the first SIGINT and raises ``KeyboardInterrupt`` from
    the second, which would end a run before its teardown and report.
    """
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    runner_sigint = getattr(asyncio.Runner, "_on_sigint", None)
    func = getattr(handler, "func", None)  # a functools.partial of Runner._on_sigint
    return runner_sigint is None or getattr(func, "__func__", None) is not runner_sigint
