"""What the PostgreSQL history store and the fleet coordinator share.

- :class:`FleetSettings` (defined in :mod:`smd.checks._pg_fleet_settings`,
  which every command loads): ``SMD_FLEET_URL``, ``SMD_HISTORY_SCHEMA`` and
  the history store's time budgets;
- the schema both use (one versioned schema, default ``smd``), created on
  first use under a transaction-level advisory lock so that hundreds of
  replicas starting at once create it exactly once;
- advisory-lock keys, the replica identity, and a connect that backs off with
  jitter while the server is out of connection slots (53300).

Nothing here imports asyncpg at module level.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from smd import Failure, FailureKind
from smd.checks._pg_classify import classify
from smd.checks._pg_fleet_settings import FleetSettings, register_secret_parts, valid_schema
from smd.checks._pg_options import PostgresOptions
from smd.retry import Backoff

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "SCHEMA_VERSION",
    "FleetSettings",
    "SchemaError",
    "connect",
    "ensure_schema",
    "lock_id",
    "qualified",
    "register_secret_parts",
    "replica_identity",
    "valid_schema",
]

#: The version of the schema this smd writes (``<schema>.schema_version``).
SCHEMA_VERSION: Final = 1

# Connection storms: a replica that gets "too many connections" (or a server
# still starting) tries again with full jitter, so a fleet spreads itself
# over the slots instead of retrying in lockstep.
STORM_BACKOFF: Final = Backoff(initial=0.02, multiplier=2.0, cap=0.5, jitter="full")
_STORM_CODES: Final = frozenset({"53300", "53000", "57P03"})
# One namespace for smd's advisory locks: the schema-creation lock is
# (this class, hash of the schema); once-per-fleet locks are 64-bit hashes.
_SCHEMA_LOCK_CLASS: Final = 0x736D64  # "smd"


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"`` (both already validated identifiers)."""
    return f'"{valid_schema(schema)}"."{table}"'


def lock_id(schema: str, key: str) -> int:
    """The 64-bit advisory-lock key of a once-per-fleet ``key`` (signed, as PostgreSQL's bigint).

    A hash: two keys can collide only with probability 2**-64, and a
    collision would merely make two different phases wait for each other.
    ``pg_locks`` shows it as ``classid`` (high 32 bits) and ``objid`` (low
    32 bits) with ``objsubid = 1``.
    """
    digest = hashlib.blake2b(f"{schema}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def replica_identity() -> str:
    """Who this replica is, for completion records: ``hostname:pid`` (the pod name in Kubernetes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- the schema ------------------------------------------------------------------------

#: Statements that bring a schema from version ``n - 1`` to ``n``.
_MIGRATIONS: Final[Mapping[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS {s}.samples (
            id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            target   text NOT NULL,
            series   text NOT NULL,
            at       double precision NOT NULL,
            seconds  double precision,
            censored boolean NOT NULL DEFAULT false,
            kind     text
        )""",
        "CREATE INDEX IF NOT EXISTS samples_by_target ON {s}.samples (target, series, at, id)",
        """CREATE TABLE IF NOT EXISTS {s}.targets (
            target      text PRIMARY KEY,
            startup     text NOT NULL DEFAULT '',
            dependency  text NOT NULL DEFAULT '',
            environment text NOT NULL DEFAULT '',
            phase       text NOT NULL DEFAULT '',
            policy      jsonb NOT NULL DEFAULT '{{}}',
            updated_at  timestamptz NOT NULL DEFAULT now()
        )""",
        # One write in one round trip: the row locks on the targets are held
        # only while the server runs this, never across client round trips
        # (a writer descheduled mid-transaction would stall every writer of
        # its targets). Read committed gives each statement here a fresh
        # snapshot, so the trim sees every sample committed before the lock.
        """CREATE OR REPLACE FUNCTION {s}.append_samples(
            p_target text[], p_series text[], p_at float8[], p_seconds float8[],
            p_censored boolean[], p_kind text[], p_info text[], p_startup text[],
            p_dependency text[], p_environment text[], p_phase text[], p_policy text[],
            p_bound integer
        ) RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO {s}.targets AS t (target)
                SELECT DISTINCT x FROM unnest(p_target) AS x ORDER BY x
                ON CONFLICT (target) DO UPDATE SET updated_at = now();
            UPDATE {s}.targets AS t SET startup = i.startup, dependency = i.dependency,
                environment = i.environment, phase = i.phase, policy = i.policy::jsonb,
                updated_at = now()
                FROM unnest(p_info, p_startup, p_dependency, p_environment, p_phase, p_policy)
                    AS i(target, startup, dependency, environment, phase, policy)
                WHERE t.target = i.target;
            INSERT INTO {s}.samples (target, series, at, seconds, censored, kind)
                SELECT * FROM unnest(p_target, p_series, p_at, p_seconds, p_censored, p_kind);
            DELETE FROM {s}.samples WHERE id IN (
                SELECT id FROM (
                    SELECT id, row_number() OVER (
                        PARTITION BY target, series ORDER BY at DESC, id DESC) AS n
                    FROM {s}.samples WHERE target = ANY(p_target)
                ) AS ranked WHERE n > p_bound);
        END
        $fn$""",
        """CREATE TABLE IF NOT EXISTS {s}.once_done (
            key     text PRIMARY KEY,
            done_by text NOT NULL,
            done_at timestamptz NOT NULL DEFAULT now(),
            seconds double precision
        )""",
    ),
}


class SchemaError(Exception):
    """The schema cannot be used (internal): ``failure`` says why, classified."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


async def schema_version(conn: asyncpg.Connection, schema: str) -> int:
    """The schema's version (0: not created yet)."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{qualified(schema, 'schema_version')}"
    )
    if not exists:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {qualified(schema, 'schema_version')}")
    return int(version or 0)


async def ensure_schema(conn: asyncpg.Connection, schema: str, *, where: str) -> None:
    """Create or upgrade ``schema`` to :data:`SCHEMA_VERSION` (idempotent, race-free).

    The check runs first without any lock (the usual case: nothing to do).
    Otherwise the creation runs in one transaction under
    ``pg_advisory_xact_lock``, re-reading the version under the lock, so
    concurrent replicas create the schema exactly once and none sees it half
    made. A schema of a newer version is left untouched: :class:`SchemaError`.
    """
    version = await schema_version(conn, schema)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise SchemaError(_newer(schema, version, where))
    s = f'"{valid_schema(schema)}"'
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _SCHEMA_LOCK_CLASS, s)
        # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the
        # CREATE privilege on the database, which a role using a schema its
        # DBA made need not have.
        if await conn.fetchval("SELECT to_regnamespace($1) IS NULL", s):
            await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {s}.schema_version (
                version    integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )
        version = await schema_version(conn, schema)
        if version > SCHEMA_VERSION:
            raise SchemaError(_newer(schema, version, where))
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                await conn.execute(statement.format(s=s))
            await conn.execute(f"INSERT INTO {s}.schema_version (version) VALUES ($1)", step)


def _newer(schema: str, version: int, where: str) -> Failure:
    return Failure(
        FailureKind.CONFIGURATION,
        f"{where}: schema {schema!r} is at version {version}, newer than this smd supports "
        f"({SCHEMA_VERSION}); upgrade smd or use another SMD_HISTORY_SCHEMA",
        code="schema-version",
    )


# -- connecting ------------------------------------------------------------------------


def storm_code(failure: Failure) -> bool:
    """Whether a connect failure is a connection storm (retry with jitter while time lasts)."""
    return failure.code in _STORM_CODES


async def connect(
    options: PostgresOptions,
    *,
    deadline: float,
    now: Callable[[], float],
    sleep: Callable[[float], Any],
    retry_on: Callable[[Failure], bool] = storm_code,
    application_name: str | None = None,
    rng: random.Random | None = None,
    label: str | None = None,
    **extra: Any,
) -> asyncpg.Connection:
    """A new, dedicated connection before ``deadline`` (on the ``now`` clock).

    Failures ``retry_on`` accepts (by default: too many connections, starting
    up) are retried with :data:`STORM_BACKOFF` while time lasts; anything
    else raises :class:`SchemaError` with the classified failure at once.
    Never pooled: the caller owns the session and closes it. Messages name
    the server as ``label`` (default: ``postgres://host:port/db``; ``""``:
    not at all, for a caller that names it itself).
    """
    import asyncpg

    rng = rng or random.Random()
    target = options.target_key() if label is None else label
    secrets = options.secrets()
    kwargs = options.connect_arguments()
    if application_name:
        settings = dict(kwargs.get("server_settings") or {})
        settings.setdefault("application_name", application_name[:63])
        kwargs["server_settings"] = settings
    kwargs.update(extra)
    retry = 0
    while True:
        left = deadline - now()
        if left <= 0:
            raise SchemaError(
                Failure(FailureKind.TIMEOUT, f"no connection{_named(target)} before the deadline")
            )
        failure: Failure
        try:
            with anyio.fail_after(left):
                conn: asyncpg.Connection = await asyncpg.connect(**kwargs, timeout=left)
            return conn
        except TimeoutError:
            failure = Failure(
                FailureKind.TIMEOUT, f"no connection{_named(target)} within {left:.3g}s"
            )
        except Exception as exc:
            failure = classify(exc, target=target, secrets=secrets)
        if not retry_on(failure) or deadline - now() <= 0:
            raise SchemaError(failure)
        await sleep(min(STORM_BACKOFF.delay(retry, rng), max(0.0, deadline - now())))
        retry += 1


def _named(target: str) -> str:
    return f" to {target}" if target else ""


async def close(conn: asyncpg.Connection) -> None:
    """Close politely (bounded, even when cancelled), else terminate."""
    # The check's one close; imported here, not at the top: every command
    # imports this module (the fleet plugin's settings), few ever close a session.
    from smd.checks._pg_connect import close as close_session

    await close_session(conn, graceful=True, shield=True)
