"""A fleet of replicas starting at once against one PostgreSQL (issue 14's figures).

    python benchmarks/fleet.py                    # 200 replicas: 10 processes x 20 runs
    python benchmarks/fleet.py --processes 4 --replicas 10 --format json

A throwaway cluster with ``max_connections=100`` is started (or
``SMD_DATABASE_URL`` is used; it should allow 100 connections). Each replica is
an independent run of the real engine with its own connections and local
state: a ``DatabasePhase``, then ``migrate``, a ``once=True`` phase whose work
sleeps ``--work`` seconds (the migration) and logs itself in a table. All
replicas of all processes start at the same wall-clock instant, once every
worker process has started and imported (their interpreters' start is
printed, not counted: one replica alone does not pay it either).

What is measured, by ``--via``:

- ``engine`` (the default): each replica is ``smd.run_startup(startup,
  settings=...)`` with the settings ``smd run`` would load from its
  environment (``SMD_DATABASE_URL``, ``SMD_HISTORY_URL`` = the same server,
  a ``SMD_HISTORY_PATH`` of its own): the history store is chosen by the
  engine (``open_store``: the PostgreSQL store behind ``FallbackStore``), the
  once phase runs through the coordinator the ``fleet`` plugin offers, as in
  ``smd run``. 10 processes x 20 concurrent runs, as issue 14 suggests. Left
  out: the interpreter's start and imports of one process per replica.
- ``smd-run``: each replica is its own ``smd run tests/targets/fleet_once.py:startup``
  process (the once phase alone, no database phase), its ``--report`` read
  back. On a 2-core machine 200 interpreters starting at once mostly measure
  process start-up, which is why it is not the default.

Printed, in one run:

- fleet: how many replicas became ready (goal: all), how many times the
  once work ran (goal: exactly 1), the time until the last replica was ready
  over one replica's time-to-ready alone (goal <= 1.2; "ready" is the
  instant the report says so, as ``smd run --report`` gives it; the ratio
  to ``run_startup``'s return, after the history write, is printed too), the
  server's peak connection count (``pg_stat_activity``, sampled every 10 ms;
  goal <= 90);
- where the fleet's time went (``_fleet_trace.py``): replica by replica,
  when its run began, its database phase and once phase ended, how long
  after the completion a waiter saw the work done (its last probe's start
  and connect), every connection it opened by purpose (database phase,
  history store, once coordinator, the work) and the 53300 refusals, how
  long closing took, and the CPU the machine, the replicas and PostgreSQL
  spent; the "CPU floor" is the replicas' own CPU over the machine's CPUs:
  the wall time the fleet needs even if nothing waited and nothing else ran;
- the same fleet without the once phase (``--skip-plain`` leaves it out):
  every replica sleeps the work's time itself, no coordination. Its ratio
  is what this machine costs a fleet of this shape; the difference to the
  fleet's is the coordination's;
- the first-start deadline of a brand-new replica with the shared store
  against one with an empty local store;
- sigkill: the process holding the lock is killed (SIGKILL) half-way through
  the work: another replica completes it, every replica of the other
  processes becomes ready, the work completed exactly once.

The sigkill scenario always uses ``--via engine`` processes (killing one
kills its 20 replicas with it; the others must all become ready).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import structlog

from smd import Phase, PhaseContext, Startup, StartupFailed, load_settings, run_startup
from smd.phases import DatabasePhase

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, goal, machine, print_result, table
from _fleet_trace import REPLICA, ConnectTracer, CpuMeter, decompose, explain, postmaster_pid

sys.path.insert(0, str(ROOT / "tests"))
TABLE = "fleet_bench_runs"
# Every worker started, so that none outlives a benchmark that failed.
_CHILDREN: list[subprocess.Popen[str]] = []


# -- one replica (in a worker process) -------------------------------------------------


async def replica(
    url: str,
    key: str,
    index: int,
    work_seconds: float,
    shared: bool,
    state: Path,
    *,
    plain: bool = False,
    tracer: ConnectTracer | None = None,
) -> dict[str, Any]:
    """One replica's start through the real engine; what happened, for the parent.

    ``plain``: the same startup with ``migrate`` an ordinary phase that only
    sleeps (every replica "migrates" at once, no coordination, no bookkeeping
    connections): what the machine costs a fleet of this shape by itself.
    """
    REPLICA.set(index)
    identity = f"{socket.gethostname()}:{os.getpid()}/{index}"
    outcome: dict[str, Any] = {"identity": identity, "pid": os.getpid()}

    async def mark(event: str) -> None:
        # The work's own connection, like a migration's: it rides out the storm too.
        for attempt in range(200):
            try:
                conn = await asyncpg.connect(url)
                break
            except asyncpg.TooManyConnectionsError:
                await anyio.sleep(0.05 * (1 + attempt % 4))
        try:
            await conn.execute(
                f"INSERT INTO {TABLE} (key, who, event) VALUES ($1, $2, $3)", key, identity, event
            )
        finally:
            await conn.close()

    async def migrate(ctx: PhaseContext) -> None:
        await mark("started")
        await anyio.sleep(work_seconds)
        await mark("completed")

    async def sleep(ctx: PhaseContext) -> None:
        await anyio.sleep(work_seconds)

    startup = Startup("fleet-plain" if plain else "fleet")
    startup.add(DatabasePhase())
    if plain:
        startup.add(Phase("migrate", sleep, requires=("database",), timeout=120.0))
    else:
        startup.add(
            Phase(
                "migrate", migrate, requires=("database",), timeout=120.0, once=True, once_key=key
            )
        )
    # What `smd run` loads from SMD_DATABASE_URL, SMD_HISTORY_URL and a local
    # SMD_HISTORY_PATH of this replica's own (the fallback; fresh each time).
    settings = load_settings(
        environment="production",
        database_url=url,
        history_url=url if shared else None,
        history_path=state / f"{os.getpid()}-{index}-{time.time_ns()}.sqlite3",
    )
    try:
        report = await run_startup(startup, settings=settings)
    except StartupFailed as failed:
        report = failed.report
    database = next(p for p in report.phases if p.name == "database")
    failure = report.failed_phase.failure if report.failed_phase else None
    once = next(p for p in report.phases if p.name == "migrate")
    outcome.update(
        ran=not plain and once.outcome.value == "ok" and not once.note,
        started_at=report.started_at,
        # The instant readiness flipped (the report is built then); the
        # history write comes after it and is not part of time-to-ready.
        ready_at=report.started_at + report.duration,
        database_attempts=len(database.attempts),
        connects=tracer.of(index) if tracer is not None else [],
        note=once.note,
        database_end=database.end,
        migrate_start=once.start,
        migrate_end=once.end,
        ready=report.state.value in ("ready", "degraded"),
        at=time.time(),
        duration=report.duration,
        deadline=database.timeout.seconds if database.timeout else None,
        deadline_source=database.timeout.source if database.timeout else None,
        # A learned deadline that gave way to a full server (53300, see DatabasePhase).
        extended=bool(database.deadline_extended),
        error=None if failure is None else f"{failure.kind.value}: {failure.message}",
    )
    return outcome


def worker(args: argparse.Namespace) -> None:
    """A worker process: ``--replicas`` replicas started together at the instant the parent sends.

    It says ``IMPORTED`` once its interpreter started and imported
    everything, then waits for the start instant on stdin: every worker of
    a fleet has imported by then, so the replicas of all processes start
    together whatever the interpreters' start cost on a loaded machine.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    url = os.environ["SMD_DATABASE_URL"]
    state = Path(tempfile.mkdtemp(prefix="smd-bench-replica-"))
    imported = time.time()  # interpreter start and imports end here
    at_import = resource.getrusage(resource.RUSAGE_SELF)
    tracer = ConnectTracer()
    tracer.install()
    print("IMPORTED", flush=True)
    start_at = float(sys.stdin.readline())

    async def main() -> None:
        await anyio.sleep(max(0.0, start_at - time.time()))

        async def one(i: int) -> None:
            result = await replica(
                url,
                args.key,
                i,
                args.work,
                not args.no_shared_store,
                state,
                plain=args.plain,
                tracer=tracer,
            )
            print("RESULT " + json.dumps(result), flush=True)

        async with anyio.create_task_group() as tg:
            for i in range(args.replicas):
                tg.start_soon(one, i)

    anyio.run(main)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    process = {
        "imported": imported,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        # What the replicas themselves cost, without the interpreter's start.
        "run_cpu_s": usage.ru_utime + usage.ru_stime - at_import.ru_utime - at_import.ru_stime,
    }
    print("PROCESS " + json.dumps(process), flush=True)


# -- the parent -------------------------------------------------------------------------


@contextlib.contextmanager
def cluster() -> Iterator[tuple[str, str, Path | None]]:
    """(app DSN, superuser DSN, data directory): ``SMD_DATABASE_URL``, or a throwaway cluster."""
    given = os.environ.get("SMD_DATABASE_URL")
    if given:
        yield given, given, None  # whose server's CPU is then not ours to read
        return
    from pgbed.cluster import PgCluster

    base = Path(tempfile.mkdtemp(prefix="smd-bench-fleet-"))
    print(f"starting a throwaway PostgreSQL (max_connections=100) in {base} ...", file=sys.stderr)
    pg = PgCluster.create(base, settings={"max_connections": "100", "log_connections": "off"})
    try:
        pg.ensure_app()
        yield (
            pg.dsn(),
            pg.dsn("postgres", database=pg.app.database if pg.app else "postgres"),
            pg.data_dir,
        )
    finally:
        pg.destroy()


class PeakConnections:
    """Samples the server's client connections every 10 ms (from a superuser session)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: anyio.run(self._run), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                n = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                )
                self.peak = max(self.peak, int(n))
                await anyio.sleep(0.01)
        finally:
            await conn.close()

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def launch(
    url: str,
    key: str,
    processes: int,
    replicas: int,
    work: float,
    *,
    shared: bool = True,
    plain: bool = False,
) -> tuple[list[subprocess.Popen[str]], float]:
    """Start the worker processes; all their replicas begin at the returned wall time."""
    env = {**os.environ, "SMD_DATABASE_URL": url}
    argv = [
        sys.executable,
        __file__,
        "--worker",
        "--key",
        key,
        "--replicas",
        str(replicas),
        "--work",
        str(work),
    ]
    if not shared:
        argv.append("--no-shared-store")
    if plain:
        argv.append("--plain")
    procs = [
        subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    _CHILDREN.extend(procs)
    for proc in procs:  # every interpreter started and imported
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "IMPORTED":
            raise RuntimeError(f"worker {proc.pid} did not start (exit {proc.wait()})")
    # A moment for the last write to reach every worker: they all start then.
    start_at = time.time() + 0.1
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at!r}\n")
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch the closed pipe
    return procs, start_at


def launch_smd_run(
    url: str, key: str, processes: int, replicas: int, work: float, state: Path
) -> tuple[list[subprocess.Popen[str]], float]:
    """The same fleet as ``smd run`` processes (one replica each; see the module docstring)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMD_")},
        "SMD_DATABASE_URL": url,
        "SMD_HISTORY_URL": url,
        "SMDTEST_ONCE_KEY": key,
        "SMDTEST_ONCE_SLEEP": str(work),
        "SMDTEST_ONCE_TABLE": TABLE,
        "SMD_ENVIRONMENT": "production",
        "SMD_LOG_LEVEL": "error",
    }
    target = str(ROOT / "tests" / "targets" / "fleet_once.py") + ":startup"
    start_at = time.time()
    procs = []
    for i in range(processes * replicas):
        argv = [sys.executable, "-m", "smd", "run", target, "--report", str(state / f"{i}.json")]
        history = {"SMD_HISTORY_PATH": str(state / f"{i}.sqlite3")}
        procs.append(
            subprocess.Popen(
                argv,
                env={**env, **history},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    _CHILDREN.extend(procs)
    return procs, start_at


def smd_run_results(procs: list[subprocess.Popen[str]], state: Path) -> list[dict[str, Any]]:
    """What each ``smd run`` replica's report says (a replica without one did not start)."""
    results = []
    for i, proc in enumerate(procs):
        proc.wait(600)
        path = state / f"{i}.json"
        if not path.exists():
            results.append({"ready": False, "error": f"exit {proc.returncode}, no report"})
            continue
        report = json.loads(path.read_text())
        once = next(p for p in report["phases"] if p["name"] == "migrate")
        started = datetime.fromisoformat(report["started_at"]).timestamp()
        failure = once.get("failure") or {}
        results.append(
            {
                "ready": report["state"] in ("ready", "degraded"),
                "ran": once["outcome"] == "ok" and not once["note"],
                "note": once["note"],
                "at": started + report["duration"],
                "error": f"{failure['kind']}: {failure['message']}" if failure else None,
            }
        )
    return results


def collect(
    procs: list[subprocess.Popen[str]], processes: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The replicas' results; each worker's import end and CPU go to ``processes``."""
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        for line in (out or "").splitlines():
            if line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
            elif line.startswith("PROCESS ") and processes is not None:
                processes.append(json.loads(line[8:]))
    return results


def sql(dsn: str, statement: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        # Even a superuser gets "too many clients" while a storm's sessions
        # are still authenticating (each holds a server slot meanwhile).
        for attempt in range(400):
            try:
                conn = await asyncpg.connect(dsn)
                break
            except asyncpg.TooManyConnectionsError:
                await anyio.sleep(0.02 * (1 + attempt % 5))
        try:
            return list(await conn.fetch(statement, *args))
        finally:
            await conn.close()

    return anyio.run(run)


def events(dsn: str, key: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in sql(dsn, f"SELECT who, event FROM {TABLE} WHERE key = $1 ORDER BY at", key)
    ]


def _sessions(dsn: str) -> int:
    """Sessions the server has opened so far (all databases)."""
    return int(sql(dsn, "SELECT sum(sessions)::bigint FROM pg_stat_database")[0][0] or 0)


def _ready(results: list[dict[str, Any]], t0: float, field: str) -> float:
    """Seconds from the common start to the last replica's ``field`` instant (ready ones)."""
    return max((r[field] for r in results if r["ready"]), default=t0) - t0


def _run_fleet(
    url: str, key: str, args: argparse.Namespace, *, plain: bool = False
) -> dict[str, Any]:
    """One fleet start (engine workers), with its peak connections, CPU and timeline."""
    processes: list[dict[str, Any]] = []
    before = _sessions(args.superuser)
    with PeakConnections(args.superuser) as peak, CpuMeter(args.server_pid) as cpu:
        spawned = time.time()
        procs, t0 = launch(url, key, args.processes, args.replicas, args.work, plain=plain)
        results = collect(procs, processes)
    work = {
        str(r[0]): float(r[1]) - t0
        for r in sql(
            args.superuser,
            f"SELECT event, extract(epoch FROM at)::float8 FROM {TABLE} WHERE key = $1",
            key,
        )
    }
    trace = decompose(results, t0, work)
    trace["processes_imported_s"] = max((p["imported"] - spawned for p in processes), default=0)
    trace["start_after_spawn_s"] = t0 - spawned
    trace["workers_cpu_s_each"] = [round(p["cpu_s"], 2) for p in processes]
    if cpu.figures:
        cpu.figures["imports_cpu_s"] = sum(p["cpu_s"] - p["run_cpu_s"] for p in processes)
    return {
        "results": results,
        "t0": t0,
        "ready": sum(1 for r in results if r["ready"]),
        "extended": sum(1 for r in results if r.get("extended")),
        "last_ready_s": _ready(results, t0, "ready_at"),
        "last_returned_s": _ready(results, t0, "at"),
        "peak_connections": peak.peak,
        "sessions": _sessions(args.superuser) - before,
        "cpu": cpu.figures,
        "work": work,
        "trace": trace,
    }


def fleet(url: str, args: argparse.Namespace) -> dict[str, Any]:
    stamp = time.time_ns()
    n = args.processes * args.replicas
    key = f"fleet/{stamp}"
    if args.via == "smd-run":
        # One replica alone (a brand-new fleet, nobody else around), then the fleet.
        state = Path(tempfile.mkdtemp(prefix="smd-bench-smd-run-"))
        procs, t0 = launch_smd_run(url, f"alone/{stamp}", 1, 1, args.work, state)
        (alone,) = smd_run_results(procs, state)
        alone_time = alone_ready = alone["at"] - t0
        with PeakConnections(args.superuser) as peak:
            state = Path(tempfile.mkdtemp(prefix="smd-bench-smd-run-"))
            procs, t0 = launch_smd_run(url, key, args.processes, args.replicas, args.work, state)
            results = smd_run_results(procs, state)
        run: dict[str, Any] = {
            "results": results,
            "ready": sum(1 for r in results if r["ready"]),
            "last_ready_s": _ready(results, t0, "at"),
            "last_returned_s": _ready(results, t0, "at"),
            "peak_connections": peak.peak,
            "trace": {},
            "work": {},
            "cpu": {},
            "sessions": None,
        }
        plain: dict[str, Any] | None = None
        plain_alone = None
    else:
        procs, t0 = launch(url, f"alone/{stamp}", 1, 1, args.work)
        (alone,) = collect(procs)
        alone_ready, alone_time = alone["ready_at"] - t0, alone["at"] - t0
        run = _run_fleet(url, key, args)
        plain = plain_alone = None
        if not args.skip_plain:
            # The same fleet without coordination: every replica sleeps the
            # work's time itself. Its ratio is what the machine costs.
            procs, t0 = launch(url, f"plain-alone/{stamp}", 1, 1, args.work, plain=True)
            (one,) = collect(procs)
            plain_alone = one["ready_at"] - t0
            plain = _run_fleet(url, f"plain/{stamp}", args, plain=True)
    results = run["results"]
    ran = sum(1 for _, e in events(args.superuser, key) if e == "completed")
    errors = sorted({str(r["error"])[:300] for r in results if r.get("error")})
    # A brand-new replica's first start: with the fleet's shared store, and without.
    if args.via == "smd-run":  # its replicas (fleet_once.py) have no database phase to learn
        newcomer = lonely = {"deadline": None, "deadline_source": "n/a with --via smd-run"}
    else:
        procs, _ = launch(url, f"newcomer/{stamp}", 1, 1, 0.01)
        (newcomer,) = collect(procs)
        procs, _ = launch(url, f"lonely/{stamp}", 1, 1, 0.01, shared=False)
        (lonely,) = collect(procs)
    out = {
        "replicas": n,
        "ready": run["ready"],
        "extended": run["extended"],
        "once_ran": ran,
        "once_ran_reported": sum(1 for r in results if r.get("ran")),
        "alone_s": alone_ready,
        "alone_returned_s": alone_time,
        "fleet_s": run["last_ready_s"],
        "fleet_returned_s": run["last_returned_s"],
        "ratio": run["last_ready_s"] / alone_ready,
        "ratio_returned": run["last_returned_s"] / alone_time,
        "peak_connections": run["peak_connections"],
        "sessions": run["sessions"],
        "cpu": run["cpu"],
        "deadline_shared_s": newcomer["deadline"],
        "deadline_shared_source": newcomer["deadline_source"],
        "deadline_alone_s": lonely["deadline"],
        "deadline_alone_source": lonely["deadline_source"],
        "errors": errors[:8],
        "trace": run["trace"],
        "work_started_s": run["work"].get("started"),
        "work_completed_s": run["work"].get("completed"),
    }
    if plain is not None and plain_alone is not None:
        out["plain"] = {
            "alone_s": plain_alone,
            "ready": plain["ready"],
            "fleet_s": plain["last_ready_s"],
            "ratio": plain["last_ready_s"] / plain_alone,
            "peak_connections": plain["peak_connections"],
            "sessions": plain["sessions"],
            "cpu": plain["cpu"],
            "trace": plain["trace"],
        }
    return out


def sigkill(url: str, args: argparse.Namespace) -> dict[str, Any]:
    key = f"sigkill/{time.time_ns()}"
    work = max(args.work, 4.0)
    procs, _ = launch(url, key, args.processes, args.replicas, work)
    deadline = time.time() + 120
    while not events(args.superuser, key) and time.time() < deadline:
        time.sleep(0.02)
    ((holder, _),) = events(args.superuser, key)
    time.sleep(work / 2)  # half-way through the work
    pid = int(holder.rpartition(":")[2].partition("/")[0])
    os.kill(pid, signal.SIGKILL)
    results = collect(procs)
    others = [r for r in results if r["pid"] != pid]
    seen = events(args.superuser, key)
    completed = [who for who, e in seen if e == "completed"]
    return {
        "killed_pid": pid,
        "replicas_killed_with_it": args.replicas,
        "others": (args.processes - 1) * args.replicas,
        "others_ready": sum(1 for r in others if r["ready"]),
        "others_extended": sum(1 for r in others if r.get("extended")),
        "work_started": sum(1 for _, e in seen if e == "started"),
        "work_completed": len(completed),
        "completed_by_another": bool(completed) and completed[0] != holder,
        "errors": sorted({str(r["error"])[:300] for r in others if r.get("error")})[:8],
    }


def _deadline(seconds: float | None, source: str) -> str:
    return source if seconds is None else f"{seconds:g} ({source})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=20, help="concurrent runs per process")
    parser.add_argument("--work", type=float, default=2.0, help="seconds the once work takes")
    parser.add_argument("--via", choices=["engine", "smd-run"], default="engine")
    parser.add_argument("--skip-sigkill", action="store_true")
    parser.add_argument(
        "--skip-plain", action="store_true", help="skip the same fleet without the once phase"
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--no-shared-store", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with cluster() as (url, superuser, data_dir):
        args.superuser = superuser
        args.server_pid = postmaster_pid(data_dir)
        sql(
            superuser,
            f"CREATE TABLE IF NOT EXISTS {TABLE} (key text, who text, event text, at timestamptz DEFAULT now())",
        )
        sql(superuser, f"GRANT ALL ON {TABLE} TO PUBLIC")
        try:
            f = fleet(url, args)
            k = None if args.skip_sigkill else sigkill(url, args)
        finally:
            for child in _CHILDREN:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    m = machine()
    data = {"machine": m, "fleet": f, "sigkill": k}
    rows = [
        [
            "replicas ready",
            f"{f['ready']} / {f['replicas']}",
            "all",
            "met" if f["ready"] == f["replicas"] else "MISSED",
        ],
        [
            "  of them waited for a slot past a learned deadline (53300)",
            f["extended"],
            "",
            "",
        ],
        ["once work ran", f["once_ran"], "exactly 1", "met" if f["once_ran"] == 1 else "MISSED"],
        [
            "replicas whose report says they ran it",
            f["once_ran_reported"],
            "exactly 1",
            "met" if f["once_ran_reported"] == 1 else "MISSED",
        ],
        ["one replica alone (s)", f"{f['alone_s']:.2f}", "", ""],
        ["fleet, last ready (s)", f"{f['fleet_s']:.2f}", "", ""],
        ["fleet / alone", f"{f['ratio']:.2f}", "<= 1.2", goal(f["ratio"], 1.2)],
        [
            "  the same, to run_startup's return (history written)",
            f"{f['ratio_returned']:.2f}",
            "",
            "",
        ],
        [
            "  the same fleet without the once phase / alone",
            f"{f['plain']['ratio']:.2f}" if f.get("plain") else "skipped",
            "",
            "",
        ],
        ["peak connections", f["peak_connections"], "<= 90", goal(f["peak_connections"], 90)],
        [
            "first-start deadline, shared store (s)",
            _deadline(f["deadline_shared_s"], f["deadline_shared_source"]),
            "",
            "",
        ],
        [
            "first-start deadline, no shared store (s)",
            _deadline(f["deadline_alone_s"], f["deadline_alone_source"]),
            "",
            "",
        ],
    ]
    if k is not None:
        rows += [
            [
                "sigkill: others ready",
                f"{k['others_ready']} / {k['others']}",
                "all",
                "met" if k["others_ready"] == k["others"] else "MISSED",
            ],
            [
                "  of them waited for a slot past a learned deadline (53300)",
                k["others_extended"],
                "",
                "",
            ],
            [
                "sigkill: work completed",
                k["work_completed"],
                "exactly 1",
                "met" if k["work_completed"] == 1 else "MISSED",
            ],
            [
                "sigkill: completed by another replica",
                k["completed_by_another"],
                "yes",
                "met" if k["completed_by_another"] else "MISSED",
            ],
            ["sigkill: work started (killed + completer)", k["work_started"], "2", ""],
        ]
    text = (
        f"fleet of {f['replicas']} replicas ({args.processes} processes x {args.replicas}), once work "
        f"{args.work:g}s, via {args.via}; {m['date']}, {m['cpus']} CPUs ({m['cpu']}), load {m['load']}\n"
        + table(["figure", "value", "goal", "verdict"], rows)
        + ("\nerrors: " + "; ".join(f["errors"]) if f["errors"] else "")
        + ("\nsigkill errors: " + "; ".join(k["errors"]) if k and k["errors"] else "")
        + ("\n" + explain(f) if f.get("trace") else "")
    )
    print_result(args.format, data, text)


if __name__ == "__main__":
    main()
