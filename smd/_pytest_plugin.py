"""smd's pytest plugin (entry point ``pytest11``): fixtures for testing startups.

- ``smd_clock``: a fresh :class:`~smd.clock.ManualClock` (waits advance it);
- ``smd_settings``: settings for the ``test`` environment with no history file;
- ``smd_run``: ``await smd_run(startup, **options)`` is :func:`smd.testing.run`
  with this test's clock and settings (options override them).

Async tests need an async plugin of their own (pytest-asyncio, anyio's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from smd._settings import Settings
from smd._startup import Startup
from smd.clock import ManualClock
from smd.testing import RunResult, run, test_settings

__all__ = ["smd_clock", "smd_run", "smd_settings"]


@pytest.fixture
def smd_clock() -> ManualClock:
    """A manual clock for one test."""
    return ManualClock()


@pytest.fixture
def smd_settings() -> Settings:
    """``test``-environment settings without a history file."""
    return test_settings()


@pytest.fixture
def smd_run(smd_clock: ManualClock, smd_settings: Settings) -> Callable[..., Awaitable[RunResult]]:
    """``await smd_run(startup, **options)``: run a startup instantly and see what it did."""

    async def go(startup: Startup, **options: Any) -> RunResult:
        options.setdefault("clock", smd_clock)
        if "environment" not in options:
            options.setdefault("settings", smd_settings)
        return await run(startup, **options)

    return go
