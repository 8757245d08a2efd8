"""Cold start and footprint of the ``smd`` command (issue 6, section 3).

Two ratios, each against the bare import of smd's own dependencies measured
in the same run (these machines are noisy; absolute times drift):

- **plan wall time**: ``smd plan examples/quickstart.py:startup`` divided by
  ``python -c "import anyio, structlog, pydantic_settings"``; goal <= 1.3.
- **run peak RSS**: ``smd run examples/quickstart.py:startup`` (a real run
  against PostgreSQL) divided by
  ``python -c "import anyio, structlog, pydantic_settings, asyncpg"``;
  goal <= 1.25.

Every measurement is a fresh child process of this interpreter (``python -m
smd ...``); the two sides of each ratio alternate, the order flipping every
round, after a few unmeasured warm-up runs (bytecode caches, page cache). Wall
time is measured around spawn + wait; peak RSS is the child's own
``ru_maxrss`` from ``wait4``. Ratios are of medians.

Without ``SMD_DATABASE_URL`` a throwaway PostgreSQL 15 cluster is started with
``tests/pgbed/cluster.py`` and removed at the end. History goes to a temporary
``SMD_HISTORY_PATH``; the environment is ``development`` so the quickstart's
missing cache server only degrades the start (exit 0).

Usage::

    python benchmarks/cold_start.py [--runs N] [--rss-runs N] [--format json] [--explain]

``--explain`` adds the modules ``smd plan`` imports beyond the baseline, by
import time (``python -X importtime``): where lazy imports would pay.
``--callgrind`` adds the same plan ratio in instructions executed (valgrind
``--tool=callgrind``, one run each): slow, but deterministic, so it is the
figure to compare before/after a change on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/_common.py; sys.path[0] is benchmarks/
    database_url,
    machine,
    quantile,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET = "examples/quickstart.py:startup"
PLAN_GOAL = 1.3
RSS_GOAL = 1.25
PLAN_BASELINE = "import anyio, structlog, pydantic_settings"
RSS_BASELINE = "import anyio, structlog, pydantic_settings, asyncpg"
_WARMUP = 3


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One finished child process: wall and CPU (user + system) seconds, peak RSS in KiB."""

    wall: float
    cpu: float
    maxrss_kib: int


class ChildFailed(RuntimeError):
    """A measured command did not exit 0."""


def run_child(argv: Sequence[str], env: dict[str, str]) -> ChildRun:
    """Run ``argv`` to completion; wall time and the child's own peak RSS.

    ``os.wait4`` gives this child's rusage alone (``RUSAGE_CHILDREN`` would
    be the maximum over every child so far).
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise ChildFailed(
                f"{' '.join(argv[1:])!r} exited {proc.returncode}:\n  " + "\n  ".join(tail)
            )
    # ru_maxrss is KiB on Linux (bytes on macOS).
    rss = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return ChildRun(wall, usage.ru_utime + usage.ru_stime, int(rss))


def interleaved(
    a: Sequence[str], b: Sequence[str], env: dict[str, str], runs: int
) -> tuple[list[ChildRun], list[ChildRun]]:
    """``runs`` measured runs of each, alternating A/B and B/A, after warm-ups."""
    for _ in range(_WARMUP):
        run_child(a, env)
        run_child(b, env)
    ra: list[ChildRun] = []
    rb: list[ChildRun] = []
    for i in range(runs):
        if i % 2 == 0:
            ra.append(run_child(a, env))
            rb.append(run_child(b, env))
        else:
            rb.append(run_child(b, env))
            ra.append(run_child(a, env))
    return ra, rb


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p10 and p90 of a sample."""
    return {
        "median": statistics.median(values),
        "p10": quantile(values, 0.1),
        "p90": quantile(values, 0.9),
    }


def instructions(argv: Sequence[str], env: dict[str, str]) -> int:
    """Instructions executed by ``argv`` (valgrind's callgrind; deterministic)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise ChildFailed("--callgrind needs valgrind on PATH (apt-get install valgrind)")
    result = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise ChildFailed(f"callgrind of {' '.join(argv[1:])!r} failed ({result.returncode})")
    return int(found.group(1))


def import_profile(env: dict[str, str], top: int = 15) -> list[dict[str, Any]]:
    """Modules ``smd plan`` imports that the baseline does not, slowest first."""

    def modules(argv: Sequence[str]) -> dict[str, tuple[int, int]]:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", *argv],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        out: dict[str, tuple[int, int]] = {}
        for row in result.stderr.splitlines():
            if not row.startswith("import time:") or "self [us]" in row:
                continue
            own, cumulative, name = row[len("import time:") :].split("|")
            out[name.strip()] = (int(own), int(cumulative))
        return out

    base = modules(["-c", PLAN_BASELINE])
    plan = modules(["-m", "smd", "plan", TARGET])
    extra = [(n, t) for n, t in plan.items() if n not in base]
    extra.sort(key=lambda item: -item[1][0])
    return [
        {"module": n, "self_ms": own / 1000, "cumulative_ms": cum / 1000}
        for n, (own, cum) in extra[:top]
    ] + [
        {
            "module": f"(all {len(extra)} extra modules)",
            "self_ms": sum(t[0] for _, t in extra) / 1000,
            "cumulative_ms": None,
        }
    ]


def measure(runs: int, rss_runs: int, explain: bool, callgrind: bool) -> dict[str, Any]:
    """Run both comparisons and return every figure."""
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="smd-bench-") as tmp, database_url() as dsn:
        env = dict(os.environ)
        env.update(
            SMD_DATABASE_URL=dsn,
            SMD_HISTORY_PATH=str(Path(tmp) / "history.sqlite3"),
            SMD_ENVIRONMENT="development",
            SMD_LOG_FORMAT="json",
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        plan_cmd = [py, "-m", "smd", "plan", TARGET]
        run_cmd = [py, "-m", "smd", "run", TARGET]
        # The runs first: `smd plan` then reads the history they left, as it
        # would on a deployed service (an empty history would skip SQLite).
        base_rss, smd_run = interleaved([py, "-c", RSS_BASELINE], run_cmd, env, rss_runs)
        base_plan, smd_plan = interleaved([py, "-c", PLAN_BASELINE], plan_cmd, env, runs)
        bare = [run_child([py, "-c", "pass"], env) for _ in range(max(5, runs // 3))]
        profile = import_profile(env) if explain else []
        counted: dict[str, Any] = {}
        if callgrind:
            base_ir = instructions([py, "-c", PLAN_BASELINE], env)
            plan_ir = instructions(plan_cmd, env)
            counted = {"baseline": base_ir, "smd": plan_ir, "ratio": plan_ir / base_ir}

    def side(label: str, values: list[ChildRun]) -> dict[str, Any]:
        return {
            "command": label,
            "wall_s": summary([r.wall for r in values]),
            "cpu_s": summary([r.cpu for r in values]),
            "maxrss_mib": summary([r.maxrss_kib / 1024 for r in values]),
        }

    plan_ratio = statistics.median(r.wall for r in smd_plan) / statistics.median(
        r.wall for r in base_plan
    )
    # CPU time is less sensitive than wall time to other load on the machine.
    plan_cpu_ratio = statistics.median(r.cpu for r in smd_plan) / statistics.median(
        r.cpu for r in base_plan
    )
    rss_ratio = statistics.median(r.maxrss_kib for r in smd_run) / statistics.median(
        r.maxrss_kib for r in base_rss
    )
    return {
        "benchmark": "cold_start",
        "machine": machine(),
        "runs": runs,
        "rss_runs": rss_runs,
        "interpreter": side('python -c "pass"', bare),
        "plan": {
            "baseline": side(f'python -c "{PLAN_BASELINE}"', base_plan),
            "smd": side(f"smd plan {TARGET}", smd_plan),
            "ratio": plan_ratio,
            "cpu_ratio": plan_cpu_ratio,
            "goal": PLAN_GOAL,
            "met": plan_ratio <= PLAN_GOAL,
            "instructions": counted,
        },
        "rss": {
            "baseline": side(f'python -c "{RSS_BASELINE}"', base_rss),
            "smd": side(f"smd run {TARGET}", smd_run),
            "ratio": rss_ratio,
            "goal": RSS_GOAL,
            "met": rss_ratio <= RSS_GOAL,
        },
        "import_profile": profile,
    }


def render(doc: dict[str, Any]) -> str:
    """The human table."""
    m = doc["machine"]
    head = (
        f"cold start and footprint -- {m['date']}, {m['cpus']} CPUs ({m['cpu']}, load {m['load']}), "
        f"Python {m['python']}; {doc['runs']} interleaved runs (RSS: {doc['rss_runs']})"
    )

    def row(side: dict[str, Any]) -> list[str]:
        w, r = side["wall_s"], side["maxrss_mib"]
        return [
            side["command"],
            f"{w['median'] * 1000:.0f}",
            f"{w['p90'] * 1000:.0f}",
            f"{side['cpu_s']['median'] * 1000:.0f}",
            f"{r['median']:.1f}",
        ]

    plan, rss = doc["plan"], doc["rss"]
    rows = [
        row(doc["interpreter"]),
        row(plan["baseline"]),
        row(plan["smd"]),
        row(rss["baseline"]),
        row(rss["smd"]),
    ]
    measures = table(
        ["command", "wall median ms", "wall p90 ms", "CPU median ms", "peak RSS MiB"], rows
    )

    def verdict(part: dict[str, Any]) -> str:
        met = "met" if part["met"] else "MISSED"
        margin = part["ratio"] / part["goal"] - 1
        return f"{met} ({margin * 100:+.0f}% vs goal)"

    goals = table(
        ["ratio", "value", "goal", "verdict"],
        [
            ["plan wall time / bare import", f"{plan['ratio']:.2f}", f"<= {PLAN_GOAL}", verdict(plan)],
            ["run peak RSS / bare import (+asyncpg)", f"{rss['ratio']:.2f}", f"<= {RSS_GOAL}", verdict(rss)],
            ["(plan CPU time / bare import, no goal)", f"{plan['cpu_ratio']:.2f}", "", ""],
            *(
                [["(plan instructions / bare import, callgrind)", f"{ir['ratio']:.3f}", "", ""]]
                if (ir := plan["instructions"])
                else []
            ),
        ],
    )  # fmt: skip
    out = [head, "", measures, "", goals]
    if doc["import_profile"]:
        prof = [
            [p["module"], f"{p['self_ms']:.1f}", f"{c:.1f}" if (c := p["cumulative_ms"]) else ""]
            for p in doc["import_profile"]
        ]
        out += ["", "imported by smd plan beyond the baseline (python -X importtime, one run):"]
        out += [table(["module", "self ms", "cumulative ms"], prof)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print, exit 0 (a missed goal is a figure, not an error)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=30, help="measured runs per side for wall time")
    p.add_argument("--rss-runs", type=int, default=10, help="measured runs per side for RSS")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--explain", action="store_true", help="add an import-time profile")
    p.add_argument(
        "--callgrind", action="store_true", help="add the plan ratio in instructions (valgrind)"
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.rss_runs < 1:
        p.error("--runs and --rss-runs must be at least 1")
    try:
        doc = measure(args.runs, args.rss_runs, args.explain, args.callgrind)
    except ChildFailed as exc:
        print(f"cold_start: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.format == "json" else render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
