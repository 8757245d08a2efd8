"""Probes, installed as ``smd.checks``: each talks to one kind of dependency
and returns a result whose failures are already classified.

``smd.checks.postgres`` (asyncpg, imported only when a probe runs),
``smd.checks.tcp``, ``smd.checks.http`` and ``smd.checks.redis`` (plain anyio
sockets). Each is a :class:`smd.retry.Check` and registers itself for
``smd check NAME TARGET`` through the ``smd.plugins`` entry points. A check
never decides policy; phases and the bypass policy do.
"""

from __future__ import annotations

__all__: list[str] = []
