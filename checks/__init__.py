"""Probes: each talks to one kind of dependency and returns a classified result.

``checks.postgres`` is the PostgreSQL check (asyncpg, imported only when a
probe runs). A check never decides policy; phases and the bypass policy do.
"""

from __future__ import annotations

__all__: list[str] = []
