"""What the engine costs and what concurrency buys (issue 2 "Done when", issue 6 section 2).

Five measurements in one run, each side by side with its baseline:

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
d. **Through the CLI.** The same 200-phase DAG run by a real ``smd run``
   (``benchmarks/_dag.py:startup``) with the SQLite history store and JSON
   logs at ``info``, interleaved with the bare anyio runner in a process of
   its own: time to ready (the report's duration) over the critical path
   (goal <= 1.04) and over the bare runner (goal <= 1.01), and how long after
   ``smd.startup.started`` the first phase starts (the report's earliest
   phase start; goal <= 2 ms).
c. **Planning.** Validating and ordering a random DAG of 10,000 phases:
   seconds and microseconds per phase.

e. **Observers.** The same 2,000 no-op phases with the OpenTelemetry
   observer on the API alone (no SDK: goal under 10 us per phase), on an SDK
   with an in-memory exporter, and the Prometheus observer, each against the
   same run without (``benchmarks/observability.py`` alone prints only this).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import goal, machine, median, print_result, table
from _dag import Graph, bare_dag, random_dag, sleeper, startup_of

from smd import Phase, PhaseContext, Settings, Startup, StartupRun, load_settings, run_startup
from smd._logging import configure_logging
from smd._scheduler import Mode
from smd.bypass import StrictPolicy
from smd.history import MemoryHistoryStore

CRITICAL_PATH_GOAL = 1.03
OVERHEAD_GOAL = 5.0
# Through `smd run` with the SQLite history store (issue 10 "Done when").
CLI_CRITICAL_PATH_GOAL = 1.04
CLI_BARE_GOAL = 1.01
FIRST_PHASE_GOAL_MS = 2.0
ROOT = Path(__file__).resolve().parent.parent


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


# -- d. the same DAG through the CLI ----------------------------------------------------


def _smd_run_once(env: dict[str, str], report: Path) -> dict[str, Any]:
    """One real `smd run benchmarks/_dag.py:startup` with the SQLite store; its report."""
    import json
    import subprocess

    smd = Path(sys.executable).with_name("smd")
    out = subprocess.run(
        [str(smd), "run", "benchmarks/_dag.py:startup", "--report", str(report)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"smd run exited {out.returncode}")
    doc: dict[str, Any] = json.loads(report.read_text())
    return doc


def _bare_once(env: dict[str, str]) -> float:
    import subprocess

    out = subprocess.run(
        [sys.executable, "benchmarks/_dag.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def measure_cli(seed: int, repeat: int, n: int) -> dict[str, Any]:
    """Time to ready through `smd run` (SQLite history, logs at info) vs a bare anyio runner."""
    import tempfile

    graph = random_dag(n, random.Random(seed))
    critical, depth = graph.critical_path()
    runs: list[float] = []
    firsts: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="smd-bench-cli-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SMD_")},
            "SMDBENCH_PHASES": str(n),
            "SMDBENCH_SEED": str(seed),
            "SMD_ENVIRONMENT": "test",
            "SMD_STARTUP_BUDGET": "3600",
            "SMD_PROGRESS_INTERVAL": "3600",
            "SMD_LOG_FORMAT": "json",
            "SMD_LOG_LEVEL": "info",
            "SMD_HISTORY_PATH": str(Path(tmp) / "history.sqlite3"),
            "PYTHONPATH": str(ROOT / "benchmarks"),
        }
        report = Path(tmp) / "report.json"
        _smd_run_once(env, report)  # warm-up: creates the store, fills the OS caches
        for _ in range(max(repeat, 7)):
            doc = _smd_run_once(env, report)
            runs.append(float(doc["duration"]))
            firsts.append(min(float(p["start"]) for p in doc["phases"]))
            bare.append(_bare_once(env))
    r, b, f = median(runs), median(bare), median(firsts)
    return {
        "phases": n,
        "repeat": len(runs),
        "critical_path_s": critical,
        "critical_path_phases": depth,
        "smd_run_s": r,
        "bare_anyio_dag_s": b,
        "first_phase_offset_ms": f * 1e3,
        "ratio_smd_run_to_critical_path": r / critical,
        "ratio_smd_run_to_bare": r / b,
        "goal_critical_path": CLI_CRITICAL_PATH_GOAL,
        "goal_bare": CLI_BARE_GOAL,
        "goal_first_phase_ms": FIRST_PHASE_GOAL_MS,
        "verdict_critical_path": goal(r / critical, CLI_CRITICAL_PATH_GOAL),
        "verdict_bare": goal(r / b, CLI_BARE_GOAL),
        "verdict_first_phase": goal(f * 1e3, FIRST_PHASE_GOAL_MS),
        "samples": {"smd_run_s": runs, "bare_anyio_dag_s": bare, "first_phase_offset_s": firsts},
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
    d, o, p, c = data["dag"], data["overhead"], data["planning"], data["cli"]
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
            f"d. the same DAG through `smd run` (SQLite history, JSON logs at info; "
            f"{c['repeat']} runs interleaved with a bare anyio runner in its own process)",
            table(
                ["measurement", "value", "goal"],
                [
                    [
                        "time to ready / critical path",
                        f"{c['ratio_smd_run_to_critical_path']:.3f} "
                        f"({c['smd_run_s']:.3f} s / {c['critical_path_s']:.3f} s)",
                        f"<= {CLI_CRITICAL_PATH_GOAL}: {c['verdict_critical_path']}",
                    ],
                    [
                        "time to ready / bare anyio runner",
                        f"{c['ratio_smd_run_to_bare']:.3f} ({c['bare_anyio_dag_s']:.3f} s)",
                        f"<= {CLI_BARE_GOAL}: {c['verdict_bare']}",
                    ],
                    [
                        "first phase start after smd.startup.started",
                        f"{c['first_phase_offset_ms']:.2f} ms",
                        f"<= {FIRST_PHASE_GOAL_MS:g} ms: {c['verdict_first_phase']}",
                    ],
                ],
            ),
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
            "",
            "e. what the observers cost (the same table as benchmarks/observability.py)",
            _observability()
            .render({"machine": data["machine"], "result": data["observers"]})
            .split("\n", 2)[2],
        ]
    )


def _observability() -> Any:
    """benchmarks/observability.py, imported only for section e (see main_async)."""
    import observability

    return observability


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n_dag, n_noop, n_plan = (60, 500, 2000) if args.quick else (200, 2000, 10000)
    dag = await measure_dag(args.seed, args.repeat, n_dag)
    cli = measure_cli(args.seed, args.repeat, n_dag)
    overhead = await measure_overhead(max(args.repeat, 7), n_noop)
    planning = measure_planning(args.seed, max(args.repeat, 5), n_plan)
    # Last: it switches smd's logs to warning for its own runs, and it imports
    # OpenTelemetry, which gives every later run in this process smd's default
    # span observer (a user's run has none unless the app uses OpenTelemetry).
    observers = await _observability().measure(n_noop, max(args.repeat, 7))
    return {
        "benchmark": "engine",
        "machine": machine(),
        "seed": args.seed,
        "repeat": args.repeat,
        "dag": dag,
        "cli": cli,
        "overhead": overhead,
        "planning": planning,
        "observers": observers,
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
