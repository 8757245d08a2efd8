"""What the engine costs and what concurrency buys (issue 2 "Done when", issue 6 section 2).

Three measurements in one run, each side by side with its baseline:

a. **Time to ready of a DAG.** A seeded random DAG of 200 phases, each
   sleeping 10-50 ms. smd's default (concurrent) mode should finish in the
   graph's critical path (the longest chain of sleeps): goal
   ``time-to-ready / critical path <= 1.03``. The same graph also runs in
   ``sequential`` mode and as a hand-written lifespan that awaits the
   phases one after the other (what a service without smd usually does);
   both are compared with the sum of the sleeps, and the ratio
   ``hand-written sequential / smd concurrent`` is what concurrency buys. A
   bare anyio runner of the same DAG (one event per phase) shows how much of
   the gap to the critical path is the event loop's timer slack, not smd
   (asyncio wakes a sleeper up to ~1 ms late: epoll timeouts are whole
   milliseconds), and a run with logs at ``warning`` shows the share of the
   per-phase log lines.
b. **Per-phase overhead.** 2,000 independent no-op phases through
   ``run_startup`` against a bare ``anyio`` task group running the same
   coroutines: goal ``smd / bare <= 5``. Measured with logging at the default
   level (``info``, JSON rendered to /dev/null: two lines per phase) and with
   logging at ``warning`` (no per-phase lines), so the cost of the logs shows.
c. **Planning.** Validating and ordering a random DAG of 10,000 phases:
   seconds and microseconds per phase.

Every run uses an in-memory history store, the strict bypass policy and a
large startup budget. Figures are medians of ``--repeat`` repetitions.

Usage::

    python benchmarks/engine.py [--format json] [--seed N] [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import goal, machine, median, print_result, table

from smd import MemoryHistoryStore, Phase, PhaseContext, Startup, StrictPolicy
from smd._logging import configure_logging
from smd._sequencer import Mode, StartupRun, run_startup
from smd._settings import Settings, load_settings

CRITICAL_PATH_GOAL = 1.03
OVERHEAD_GOAL = 5.0

PhaseFn = Callable[[PhaseContext], Awaitable[Any]]


# -- graphs ---------------------------------------------------------------------


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


def startup_of(graph: Graph, fns: Sequence[PhaseFn]) -> Startup:
    names = graph.names
    # Declared in a shuffled order so the plan has real sorting to do.
    order = list(range(len(names)))
    random.Random(len(names)).shuffle(order)
    s = Startup("bench")
    for i in order:
        s.add(Phase(name=names[i], run=fns[i], requires=tuple(names[r] for r in graph.requires[i])))
    return s


def bench_settings(level: str = "info") -> Settings:
    return load_settings(
        environment="test",
        startup_budget=3600,
        phase_timeout=600,
        progress_interval=3600,
        log_level=level,
        log_format="json",
    )


def quiet_logs(level: str) -> None:
    """Render logs as JSON into /dev/null: the cost stays, the noise goes."""
    configure_logging("json", level, stream=DEVNULL)


DEVNULL: io.TextIOWrapper = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


# -- a. time to ready of a DAG ------------------------------------------------------


async def smd_time_to_ready(startup: Startup, settings: Settings, mode: Mode) -> float:
    run = StartupRun(
        startup, settings=settings, mode=mode, store=MemoryHistoryStore(), policy=StrictPolicy()
    )
    t0 = time.perf_counter()
    await run.start()
    elapsed = time.perf_counter() - t0
    await run.stop()
    return elapsed


async def bare_dag(graph: Graph) -> float:
    """The same DAG with nothing but anyio: one event per phase."""
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


async def hand_written_lifespan(graph: Graph, order: Sequence[int]) -> float:
    """What a lifespan without smd does: await each step in turn."""
    t0 = time.perf_counter()
    for i in order:
        await anyio.sleep(graph.sleep[i])
    return time.perf_counter() - t0


def topological(graph: Graph) -> list[int]:
    return list(range(len(graph.requires)))  # requirements always have lower indices


async def measure_dag(seed: int, repeat: int, n: int) -> dict[str, Any]:
    """Concurrent runs are cheap and get at least 5 repetitions; sequential ones ``repeat``."""
    graph = random_dag(n, random.Random(seed))
    fns = [sleeper(s) for s in graph.sleep]
    startup = startup_of(graph, fns)
    critical, depth = graph.critical_path()
    total = sum(graph.sleep)
    settings = bench_settings("info")
    quiet_logs("info")
    concurrent: list[float] = []
    quiet: list[float] = []
    bare: list[float] = []
    sequential: list[float] = []
    hand: list[float] = []
    warning = bench_settings("warning")
    await smd_time_to_ready(startup, settings, "concurrent")  # warm-up: lazy imports
    # Interleaved, so a burst of load on a shared machine hits every variant.
    for _ in range(max(repeat, 5)):
        concurrent.append(await smd_time_to_ready(startup, settings, "concurrent"))
        bare.append(await bare_dag(graph))
        quiet_logs("warning")
        quiet.append(await smd_time_to_ready(startup, warning, "concurrent"))
        quiet_logs("info")
    for _ in range(repeat):
        sequential.append(await smd_time_to_ready(startup, settings, "sequential"))
        hand.append(await hand_written_lifespan(graph, topological(graph)))
    c, b, s, h = median(concurrent), median(bare), median(sequential), median(hand)
    q = median(quiet)
    return {
        "phases": n,
        "repeat_concurrent": len(concurrent),
        "repeat_sequential": len(sequential),
        "edges": sum(len(r) for r in graph.requires),
        "waves": len(startup.plan().waves),
        "critical_path_s": critical,
        "critical_path_phases": depth,
        "sum_of_sleeps_s": total,
        "smd_concurrent_s": c,
        "smd_concurrent_logs_warning_s": q,
        "bare_anyio_dag_s": b,
        "smd_sequential_s": s,
        "hand_written_sequential_s": h,
        "ratio_concurrent_to_critical_path": c / critical,
        "ratio_concurrent_logs_warning_to_critical_path": q / critical,
        "ratio_bare_to_critical_path": b / critical,
        "ratio_concurrent_to_bare": c / b,
        "ratio_sequential_to_concurrent": s / c,
        "ratio_hand_written_to_concurrent": h / c,
        "ratio_sequential_to_sum": s / total,
        "ratio_hand_written_to_sum": h / total,
        "goal_critical_path": CRITICAL_PATH_GOAL,
        "goal_critical_path_verdict": goal(c / critical, CRITICAL_PATH_GOAL),
        "samples": {
            "smd_concurrent_s": concurrent,
            "smd_concurrent_logs_warning_s": quiet,
            "bare_anyio_dag_s": bare,
            "smd_sequential_s": sequential,
            "hand_written_sequential_s": hand,
        },
    }


# -- b. per-phase overhead -----------------------------------------------------------


async def noop(ctx: PhaseContext | None) -> None:
    return None


async def smd_noops(startup: Startup, settings: Settings) -> float:
    t0 = time.perf_counter()
    await run_startup(startup, settings=settings, store=MemoryHistoryStore(), policy=StrictPolicy())
    return time.perf_counter() - t0


async def bare_noops(n: int) -> float:
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(noop, None)
    return time.perf_counter() - t0


async def measure_overhead(repeat: int, n: int) -> dict[str, Any]:
    startup = Startup("noops")
    for i in range(n):
        startup.add(Phase(name=f"n{i:05d}", run=noop))
    out: dict[str, Any] = {"phases": n, "repeat": repeat}
    bare_all: list[float] = []
    for level in ("info", "warning"):
        settings = bench_settings(level)
        quiet_logs(level)
        await smd_noops(startup, settings)  # warm-up: imports, caches
        await bare_noops(n)
        smd_t: list[float] = []
        bare_t: list[float] = []
        for _ in range(repeat):
            gc.collect()
            smd_t.append(await smd_noops(startup, settings))
            gc.collect()
            bare_t.append(await bare_noops(n))
        bare_all += bare_t
        s, b = median(smd_t), median(bare_t)
        out[level] = {
            "smd_s": s,
            "bare_task_group_s": b,
            "ratio": s / b,
            "smd_us_per_phase": s / n * 1e6,
            "bare_us_per_phase": b / n * 1e6,
            "overhead_us_per_phase": (s - b) / n * 1e6,
            "goal": OVERHEAD_GOAL,
            "verdict": goal(s / b, OVERHEAD_GOAL),
            "samples": {"smd_s": smd_t, "bare_task_group_s": bare_t},
        }
    out["log_cost_us_per_phase"] = (out["info"]["smd_s"] - out["warning"]["smd_s"]) / n * 1e6
    return out


# -- c. planning -------------------------------------------------------------------------


def measure_planning(seed: int, repeat: int, n: int) -> dict[str, Any]:
    graph = random_dag(n, random.Random(seed + 1), max_requires=4, window=200, sleep=False)
    fns = [noop] * n
    t0 = time.perf_counter()
    startup = startup_of(graph, fns)
    declare = time.perf_counter() - t0
    times: list[float] = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        plan = startup.plan()
        times.append(time.perf_counter() - t0)
    t = median(times)
    return {
        "phases": n,
        "repeat": repeat,
        "edges": sum(len(r) for r in graph.requires),
        "waves": len(plan.waves),
        "declare_s": declare,
        "plan_s": t,
        "plan_us_per_phase": t / n * 1e6,
        "samples": times,
    }


# -- output ------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    d, o, p = data["dag"], data["overhead"], data["planning"]
    m = data["machine"]
    head = (
        f"smd engine benchmark - {m['date']} - {m['cpus']} CPU {m['cpu']} - "
        f"Python {m['python']} - load average {m['load']} - seed {data['seed']} - "
        "figures are medians"
    )
    dag_rows = [
        ["critical path", f"{d['critical_path_s']:.3f}", "1.000", ""],
        [
            "smd concurrent (time to ready)",
            f"{d['smd_concurrent_s']:.3f}",
            f"{d['ratio_concurrent_to_critical_path']:.3f}",
            f"goal <= {CRITICAL_PATH_GOAL}: {d['goal_critical_path_verdict']}",
        ],
        [
            "smd concurrent, logs at warning",
            f"{d['smd_concurrent_logs_warning_s']:.3f}",
            f"{d['ratio_concurrent_logs_warning_to_critical_path']:.3f}",
            f"goal <= {CRITICAL_PATH_GOAL}: "
            + goal(d["ratio_concurrent_logs_warning_to_critical_path"], CRITICAL_PATH_GOAL),
        ],
        [
            "bare anyio DAG (events)",
            f"{d['bare_anyio_dag_s']:.3f}",
            f"{d['ratio_bare_to_critical_path']:.3f}",
            f"event-loop floor; smd / bare = {d['ratio_concurrent_to_bare']:.3f}",
        ],
        [
            "smd sequential",
            f"{d['smd_sequential_s']:.3f}",
            f"{d['smd_sequential_s'] / d['critical_path_s']:.3f}",
            f"{d['ratio_sequential_to_sum']:.3f}x sum of sleeps",
        ],
        [
            "hand-written lifespan (awaits)",
            f"{d['hand_written_sequential_s']:.3f}",
            f"{d['hand_written_sequential_s'] / d['critical_path_s']:.3f}",
            f"{d['ratio_hand_written_to_sum']:.3f}x sum of sleeps",
        ],
        ["sum of sleeps", f"{d['sum_of_sleeps_s']:.3f}", "", ""],
    ]
    over_rows = []
    for level in ("info", "warning"):
        x = o[level]
        over_rows.append(
            [
                f"logs at {level}",
                f"{x['smd_s'] * 1e3:.1f}",
                f"{x['bare_task_group_s'] * 1e3:.1f}",
                f"{x['ratio']:.1f}x",
                f"{x['smd_us_per_phase']:.1f}",
                f"{x['overhead_us_per_phase']:.1f}",
                f"goal <= {OVERHEAD_GOAL:g}x: {x['verdict']}",
            ]
        )
    return "\n".join(
        [
            head,
            "",
            f"a. DAG of {d['phases']} phases ({d['edges']} edges, {d['waves']} waves), "
            f"each sleeping 10-50 ms; critical path {d['critical_path_phases']} phases; "
            f"{d['repeat_concurrent']} concurrent / {d['repeat_sequential']} sequential runs",
            table(["run", "seconds", "/ critical path", "note"], dag_rows),
            f"   concurrency buys: hand-written sequential / smd concurrent = "
            f"{d['ratio_hand_written_to_concurrent']:.1f}x "
            f"(smd sequential / smd concurrent = {d['ratio_sequential_to_concurrent']:.1f}x)",
            "",
            f"b. {o['phases']} no-op phases: run_startup vs a bare anyio task group "
            f"({o['repeat']} runs each)",
            table(
                ["", "smd ms", "bare ms", "ratio", "us/phase", "overhead us/phase", "verdict"],
                over_rows,
            ),
            f"   logs cost {o['log_cost_us_per_phase']:.1f} us per phase at info level "
            "(JSON rendered to /dev/null)",
            "",
            f"c. planning {p['phases']} phases ({p['edges']} edges, {p['waves']} waves): "
            f"{p['plan_s']:.3f} s, {p['plan_us_per_phase']:.1f} us per phase "
            f"({p['repeat']} runs)",
        ]
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n_dag, n_noop, n_plan = (60, 500, 2000) if args.quick else (200, 2000, 10000)
    dag = await measure_dag(args.seed, args.repeat, n_dag)
    overhead = await measure_overhead(max(args.repeat, 7), n_noop)
    planning = measure_planning(args.seed, max(args.repeat, 5), n_plan)
    return {
        "benchmark": "engine",
        "machine": machine(),
        "seed": args.seed,
        "repeat": args.repeat,
        "dag": dag,
        "overhead": overhead,
        "planning": planning,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median taken)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    data = anyio.run(main_async, args)
    print_result(args.format, data, render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
