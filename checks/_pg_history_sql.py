"""What the PostgreSQL history store says to the server, and how rows become samples.

Three statements, each one round trip: read the samples of some targets
(one indexed ``SELECT``), list the targets that have samples, and write a
batch through the schema's ``append_samples`` function (one statement, so
one transaction: see :mod:`smd.checks._pg_fleet` for why the row locks it
takes are held only while the server runs it). Rows a newer smd wrote in a
form this one cannot read (a new series or failure kind) are skipped, never
fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from smd.checks._pg_fleet import qualified
from smd.history import TargetInfo
from smd.timeouts import Sample

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "policy_of",
    "read_samples",
    "read_targets",
    "target_info",
    "write_samples",
]


async def read_samples(conn: asyncpg.Connection, schema: str, names: list[str]) -> list[Any]:
    """Every stored sample of ``names``, oldest first per target."""
    return list(
        await conn.fetch(
            "SELECT target, series, at, seconds, censored, kind "
            f"FROM {qualified(schema, 'samples')} "
            "WHERE target = ANY($1::text[]) ORDER BY target, at, id",
            names,
        )
    )


async def read_targets(conn: asyncpg.Connection, schema: str) -> list[Any]:
    """The ``targets`` rows of the targets that have at least one sample, sorted."""
    t, s = qualified(schema, "targets"), qualified(schema, "samples")
    return list(
        await conn.fetch(
            "SELECT t.target, t.startup, t.dependency, t.environment, t.phase, "
            f"t.policy::text AS policy FROM {t} AS t "
            f"WHERE EXISTS (SELECT 1 FROM {s} AS s WHERE s.target = t.target) "
            "ORDER BY t.target"
        )
    )


async def write_samples(
    conn: asyncpg.Connection,
    schema: str,
    rows: Mapping[str, Sequence[Sample]],
    meta: Mapping[str, TargetInfo],
    bound: int,
) -> None:
    """Add ``rows`` (and upsert ``meta``) in one statement, keeping ``bound`` per series."""
    names = sorted(rows)
    flat = [(target, x) for target in names for x in rows[target]]
    known = sorted(meta)
    await conn.execute(
        f"SELECT {qualified(schema, 'append_samples')}($1::text[], $2::text[], "
        "$3::float8[], $4::float8[], $5::boolean[], $6::text[], $7::text[], $8::text[], "
        "$9::text[], $10::text[], $11::text[], $12::text[], $13::integer)",
        [target for target, _ in flat],
        [x.series.value for _, x in flat],
        [x.at for _, x in flat],
        [x.seconds for _, x in flat],
        [x.censored for _, x in flat],
        [x.kind.value if x.kind else None for _, x in flat],
        known,
        [meta[k].startup for k in known],
        [meta[k].dependency for k in known],
        [meta[k].environment for k in known],
        [meta[k].phase for k in known],
        [json.dumps(dict(meta[k].policy), default=str) for k in known],
        bound,
    )


def target_info(row: Any) -> TargetInfo:
    """A ``targets`` row as :class:`~smd.history.TargetInfo`."""
    return TargetInfo(
        str(row["target"]),
        row["startup"],
        row["dependency"],
        row["environment"],
        row["phase"],
        policy_of(row["policy"]),
    )


def policy_of(text: object) -> dict[str, object]:
    """A stored policy (JSON text) as a dict; ``{}`` when it is not one."""
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
