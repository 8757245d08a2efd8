"""What ``smd.checks`` registers with the engine (entry points ``smd.plugins``).

Every ``smd`` command loads every installed plugin (to list ``smd check``'s
names, to merge the settings plugins own), so a plugin object must be cheap
to import: the names, help texts and settings models live here, and each
factory imports its check, store or coordinator module only when called.
Importing the check modules themselves (TLS, URL parsing, the PostgreSQL
connection stack, the fleet's history and lock code) for a ``smd plan`` that
never probes cost about 4 % of what the command executes (measured with
``benchmarks/cold_start.py --callgrind``).

The TARGET texts are in :mod:`smd.checks._accepted`, which the check
modules use for their own error messages (they never import this module:
its factories import them, and a cycle is not allowed even through a
function-level import).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from smd.checks._accepted import HTTP_ACCEPTED, POSTGRES_ACCEPTED, REDIS_ACCEPTED, TCP_ACCEPTED
from smd.checks._pg_fleet_settings import STORE_SCHEMES, FleetSettings
from smd.plugins import CheckSpec, Plugin

if TYPE_CHECKING:
    from smd.checks.postgres_fleet import AdvisoryLockCoordinator
    from smd.history import HistoryStore
    from smd.retry import Check

__all__ = [
    "fleet",
    "http",
    "postgres",
    "redis",
    "tcp",
]


def _tcp_check(target: str) -> Check:
    from smd.checks.tcp import TcpCheck

    return TcpCheck.from_target(target)


def _http_check(target: str) -> Check:
    from smd.checks.http import HttpCheck

    return HttpCheck.from_target(target)


def _redis_check(target: str) -> Check:
    from smd.checks.redis import RedisCheck

    return RedisCheck.from_target(target)


def _postgres_check(target: str) -> Check:
    from smd.checks.postgres import PostgresCheck

    return PostgresCheck.from_target(target)


def _postgres_store(url: str, settings: Any) -> HistoryStore:
    from smd.checks.postgres_store import open_store

    return open_store(url, settings)


def _coordinator(settings: Any) -> AdvisoryLockCoordinator | None:
    from smd.checks.postgres_fleet import coordinator_factory

    return coordinator_factory(settings)


tcp = Plugin(
    "tcp",
    checks=(
        CheckSpec("tcp", _tcp_check, "one TCP check: the port accepts a connection", TCP_ACCEPTED),
    ),
)
http = Plugin(
    "http",
    checks=(
        CheckSpec(
            "http",
            _http_check,
            "one HTTP check: the URL answers GET with a status in 200-399 (no redirects followed)",
            f"{HTTP_ACCEPTED}; https:// trusts the system CAs or SSL_CERT_FILE",
        ),
    ),
)
redis = Plugin(
    "redis",
    checks=(
        CheckSpec(
            "redis",
            _redis_check,
            "one Redis check: AUTH and SELECT from the URL, then PING answers PONG",
            f"{REDIS_ACCEPTED}; rediss:// trusts the system CAs or SSL_CERT_FILE",
        ),
    ),
)
postgres = Plugin(
    "postgres",
    checks=(
        CheckSpec(
            "postgres",
            _postgres_check,
            "one PostgreSQL readiness check: a session opens and SELECT 1 answers",
            POSTGRES_ACCEPTED,
        ),
    ),
)
#: The fleet: its settings, the PostgreSQL history store
#: (``SMD_HISTORY_URL=postgresql://...``) and the once-per-fleet coordinator.
fleet = Plugin(
    "fleet",
    settings=(FleetSettings,),
    stores=MappingProxyType(dict.fromkeys(STORE_SCHEMES, _postgres_store)),
    coordinator=_coordinator,
)
