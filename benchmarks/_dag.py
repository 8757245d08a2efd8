"""The seeded random DAG of sleeping phases that benchmarks/engine.py measures.

Importable by the benchmark, and usable as a real ``smd run`` TARGET
(``benchmarks/_dag.py:startup``; size and seed from ``SMDBENCH_PHASES`` and
``SMDBENCH_SEED``), so that time to ready is also measured through the path
users take: the CLI, settings, logging and the SQLite history store. Run
directly (``python benchmarks/_dag.py``) it is the bare baseline: the same
DAG with nothing but anyio, one event per phase, printing its seconds.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from smd import Phase, PhaseContext, Startup

__all__ = ["Graph", "bare_dag", "random_dag", "sleeper", "startup", "startup_of"]

PhaseFn = Callable[[PhaseContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Graph:
    """A DAG: ``requires[i]`` are indices < i; ``sleep[i]`` seconds of work."""

    requires: tuple[tuple[int, ...], ...]
    sleep: tuple[float, ...]

    @property
    def names(self) -> list[str]:
        return [f"p{i:05d}" for i in range(len(self.requires))]

    def critical_path(self) -> tuple[float, int]:
        """Seconds of the longest chain of sleeps, and its number of phases."""
        finish: list[float] = []
        depth: list[int] = []
        for i, reqs in enumerate(self.requires):
            start = max((finish[r] for r in reqs), default=0.0)
            finish.append(start + self.sleep[i])
            depth.append(1 + max((depth[r] for r in reqs if finish[r] == start), default=0))
        end = max(range(len(finish)), key=finish.__getitem__)
        return finish[end], depth[end]


def random_dag(
    n: int, rng: random.Random, *, max_requires: int = 3, window: int = 25, sleep: bool = True
) -> Graph:
    """Each phase requires 0..max_requires of the ``window`` phases declared before it."""
    requires: list[tuple[int, ...]] = []
    for i in range(n):
        lo = max(0, i - window)
        k = min(i - lo, rng.randint(0, max_requires))
        requires.append(tuple(sorted(rng.sample(range(lo, i), k))))
    sleeps = tuple(rng.uniform(0.010, 0.050) if sleep else 0.0 for _ in range(n))
    return Graph(tuple(requires), sleeps)


def sleeper(seconds: float) -> PhaseFn:
    async def work(ctx: PhaseContext) -> None:
        await anyio.sleep(seconds)

    return work


def startup_of(graph: Graph, fns: Sequence[PhaseFn], name: str = "bench") -> Startup:
    names = graph.names
    # Declared in a shuffled order so the plan has real sorting to do.
    order = list(range(len(names)))
    random.Random(len(names)).shuffle(order)
    s = Startup(name)
    for i in order:
        s.add(Phase(name=names[i], run=fns[i], requires=tuple(names[r] for r in graph.requires[i])))
    return s


async def bare_dag(graph: Graph) -> float:
    """The same DAG with nothing but anyio: one event per phase; seconds to the last."""
    done = [anyio.Event() for _ in graph.requires]

    async def node(i: int) -> None:
        for r in graph.requires[i]:
            await done[r].wait()
        await anyio.sleep(graph.sleep[i])
        done[i].set()

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(graph.requires)):
            tg.start_soon(node, i)
    return time.perf_counter() - t0


def _env_graph() -> Graph:
    n = int(os.environ.get("SMDBENCH_PHASES", "200"))
    seed = int(os.environ.get("SMDBENCH_SEED", "2026"))
    return random_dag(n, random.Random(seed))


GRAPH = _env_graph()
startup = startup_of(GRAPH, [sleeper(s) for s in GRAPH.sleep], name="bench-dag")

if __name__ == "__main__":
    print(f"{anyio.run(bare_dag, GRAPH):.6f}")
