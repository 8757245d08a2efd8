"""Overhead of smd's PostgreSQL check on a real, healthy database (issue 6, section 4).

In one event loop, against one local PostgreSQL, in a shuffled order each
round, after warm-ups:

- **bare**: ``asyncpg.connect(dsn)`` + ``SELECT 1`` + ``close()`` -- what a
  hand-written readiness check does;
- **probe**: ``smd.checks.postgres.probe(dsn, attempt_seconds=10)`` -- one
  bounded attempt: parse and validate the options, connect, ``SELECT 1``,
  classify, close;
- **wait_ready**: ``PostgresCheck(dsn).wait_ready(deadline_seconds=10)``
  -- the attempt loop ``DatabasePhase`` runs; on a healthy server that is
  one attempt.

Each sample is the wall time of the whole call, close included, so both
sides pay the same handshake (TCP, the sslmode negotiation that the DSN and
asyncpg's default ``prefer`` imply, SCRAM) and the same teardown. The ratio
is of medians; the goal is probe / bare <= 1.15.

Without ``SMD_DATABASE_URL`` a throwaway PostgreSQL 15 cluster is started
with ``tests/pgbed/cluster.py`` and removed at the end.

Usage::

    python benchmarks/probe_overhead.py [--n N] [--format json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/_common.py; sys.path[0] is benchmarks/
    database_url,
    machine,
    quantile,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.15
_WARMUP = 20
_ATTEMPT_SECONDS = 10.0


Contender = Callable[[], Awaitable[None]]


def contenders(dsn: str) -> dict[str, Contender]:
    """The three ways to check one healthy database, by name."""
    import asyncpg

    from smd.checks.postgres import PostgresCheck, probe

    async def bare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def smd_probe() -> None:
        result = await probe(dsn, attempt_seconds=_ATTEMPT_SECONDS)
        if not result.ok:
            raise RuntimeError(f"probe failed on a healthy server: {result.failure}")

    async def smd_wait_ready() -> None:
        result = await PostgresCheck(dsn).wait_ready(deadline_seconds=_ATTEMPT_SECONDS)
        if not result.ok:
            raise RuntimeError(f"wait_ready failed on a healthy server: {result.failure}")

    return {"bare asyncpg": bare, "smd probe()": smd_probe, "smd wait_ready()": smd_wait_ready}


async def _measure(dsn: str, n: int) -> dict[str, list[float]]:
    funcs = contenders(dsn)
    names = list(funcs)
    for _ in range(_WARMUP):
        for name in names:
            await funcs[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(6)
    for _ in range(n):
        # A fresh order every round (seeded: reproducible): no contender
        # always goes first, nor always follows the same one -- a connection
        # right after another's close can find the server still reaping it.
        order = list(names)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            await funcs[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def measure(n: int) -> dict[str, Any]:
    """Run the comparison (asyncio, as ``smd run`` does) and return every figure."""
    with database_url() as dsn:
        samples = asyncio.run(_measure(dsn, n))
    base = samples["bare asyncpg"]
    base_median = statistics.median(base)
    rows: list[dict[str, Any]] = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "contender": name,
                "median_ms": median * 1000,
                "p90_ms": quantile(values, 0.9),
                "ratio": median / base_median,
                "paired_ratio": statistics.median(v / b for v, b in zip(values, base, strict=True)),
            }
        )
        rows[-1]["p90_ms"] *= 1000
    probe_ratio = next(r["ratio"] for r in rows if r["contender"] == "smd probe()")
    return {
        "benchmark": "probe_overhead",
        "machine": machine(),
        "n": n,
        "results": rows,
        "goal": GOAL,
        "ratio": probe_ratio,
        "met": probe_ratio <= GOAL,
    }


def render(doc: dict[str, Any]) -> str:
    """The human table."""
    m = doc["machine"]
    head = (
        f"probe overhead on a healthy local PostgreSQL -- {m['date']}, {m['cpus']} CPUs "
        f"({m['cpu']}, load {m['load']}), Python {m['python']}; {doc['n']} interleaved calls each"
    )
    rows = [
        [
            r["contender"],
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['ratio']:.3f}",
            f"{r['paired_ratio']:.3f}",
        ]
        for r in doc["results"]
    ]
    body = table(
        ["check (connect + SELECT 1 + close)", "median ms", "p90 ms", "/ bare", "paired / bare"],
        rows,
    )
    verdict = "met" if doc["met"] else "MISSED"
    margin = (doc["ratio"] / doc["goal"] - 1) * 100
    goal = (
        f"goal: smd probe() / bare asyncpg <= {doc['goal']}: {doc['ratio']:.3f} -- "
        f"{verdict} ({margin:+.0f}% vs goal)"
    )
    return "\n".join([head, "", body, "", goal])


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print, exit 0 (a missed goal is a figure, not an error)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=200, help="measured calls per contender")
    p.add_argument("--format", choices=["text", "json"], default="text")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    doc = measure(args.n)
    print(json.dumps(doc, indent=2) if args.format == "json" else render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
