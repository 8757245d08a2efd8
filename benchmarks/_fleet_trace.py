"""Where a fleet's time goes: per-replica connects, CPU use, and the critical path.

``benchmarks/fleet.py`` records, per replica, what its report says (phase
starts and ends, the instant it became ready) and every server connection it
opened (:class:`ConnectTracer`: who asked -- the database phase, the history
store, the once coordinator, the work itself --, when, how long, and whether
the server refused it for lack of slots). :class:`CpuMeter` says how much CPU
the machine spent meanwhile, and on what. :func:`decompose` turns that into
the fleet's critical path, so a reader sees which part of "fleet / alone" is
the machine's (CPU queueing) and which is the coordination's.

The tracer only counts: it wraps ``asyncpg.connect`` with a few microseconds
of bookkeeping (a connect costs milliseconds) and changes nothing it does.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

__all__ = ["ConnectTracer", "CpuMeter", "decompose", "explain", "floor", "postmaster_pid"]

REPLICA: contextvars.ContextVar[int | None] = contextvars.ContextVar("replica", default=None)
# Who opened a connection, by the module its caller lives in (innermost first).
_PURPOSES = (
    ("postgres_fleet", "once"),
    ("postgres_store", "history"),
    ("_pg_history", "history"),
    ("_pg_connect", "database"),
    ("__main__", "work"),
)


def _purpose() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        for part, purpose in _PURPOSES:
            if name.endswith(part):
                return purpose
        frame = frame.f_back  # type: ignore[assignment]
    return "other"


class ConnectTracer:
    """Every ``asyncpg.connect`` of this process: ``(replica, purpose, start, end, outcome)``."""

    def __init__(self) -> None:
        self.records: list[tuple[int | None, str, float, float, str]] = []
        self._real: Callable[..., Any] = asyncpg.connect

    def install(self) -> None:
        real, records = self._real, self.records

        async def traced(*args: Any, **kwargs: Any) -> Any:
            purpose, start = _purpose(), time.time()
            outcome = "ok"
            try:
                return await real(*args, **kwargs)
            except asyncpg.TooManyConnectionsError:
                outcome = "53300"
                raise
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                records.append((REPLICA.get(), purpose, start, time.time(), outcome))

        asyncpg.connect = traced
        real_close = asyncpg.Connection.close

        async def close(conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
            purpose, start = _purpose(), time.time()
            try:
                await real_close(conn, *args, **kwargs)
            finally:
                records.append((REPLICA.get(), f"close:{purpose}", start, time.time(), "ok"))

        asyncpg.Connection.close = close

    def of(self, replica: int) -> list[tuple[str, float, float, str]]:
        return [(p, s, e, o) for r, p, s, e, o in self.records if r == replica]


def postmaster_pid(data_dir: Path | None) -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return int((data_dir / "postmaster.pid").read_text().split()[0])  # type: ignore[operator]
    return None


def _ticks(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (a postmaster reaps its backends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after the name.
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent during a ``with`` block: the machine, our workers, the server."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.figures: dict[str, float] = {}

    def _read(self) -> tuple[float, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = 0.0
        if self.server_pid is not None:
            with contextlib.suppress(OSError):
                server = _ticks(self.server_pid)
        return time.time(), _busy(), children.ru_utime + children.ru_stime, server

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        wall, busy, workers, server = (b - a for a, b in zip(self._start, end, strict=True))
        self.figures = {
            "wall_s": wall,
            "machine_busy_cpu_s": busy,
            "workers_cpu_s": workers,
            "server_cpu_s": server if self.server_pid is not None else float("nan"),
            "other_cpu_s": busy - workers - (server if self.server_pid is not None else 0.0),
            "cpus": float(os.cpu_count() or 1),
        }


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {
        "min": values[0],
        "median": statistics.median(values),
        "p90": values[round(0.9 * (len(values) - 1))],
        "max": values[-1],
    }


def decompose(results: list[dict[str, Any]], t0: float, work: dict[str, float]) -> dict[str, Any]:
    """The fleet's timeline (seconds since the common start ``t0``), replica by replica.

    ``work`` holds when the once work started and completed (the work's own
    rows, server clock: the same host here). For each stage, the spread over
    replicas: when their worker process had imported everything, when their
    run began, their database phase ended, their once phase ended, they were
    ready; how long waiters took to notice the completion (their once phase's
    end minus the completion) and how long their last probe's connect took;
    how many connects each opened, by purpose, and how many the server
    refused for lack of slots (53300).
    """
    rel: dict[str, list[float]] = {
        k: []
        for k in ("run_started", "database_end", "once_start", "once_end", "ready", "returned")
    }
    notice: list[float] = []
    probe_began: list[float] = []
    last_probe_connect: list[float] = []
    connects: dict[str, list[float]] = {}
    refused: dict[str, list[float]] = {}
    completed = work.get("completed")
    for r in results:
        origin = r.get("started_at")
        if origin is None:
            continue
        rel["run_started"].append(origin - t0)
        rel["ready"].append(r["ready_at"] - t0)
        rel["returned"].append(r["at"] - t0)
        for name, key in (("database_end", "database_end"), ("once_start", "migrate_start")):
            if r.get(key) is not None:
                rel[name].append(origin + r[key] - t0)
        if r.get("migrate_end") is not None:
            rel["once_end"].append(origin + r["migrate_end"] - t0)
            if completed is not None and not r.get("ran"):
                notice.append(origin + r["migrate_end"] - t0 - completed)
        trace = r.get("connects") or []
        for purpose in {p for p, *_ in trace if not p.startswith("close:")}:
            mine = [c for c in trace if c[0] == purpose]
            connects.setdefault(purpose, []).append(len(mine))
            refused.setdefault(purpose, []).append(sum(1 for c in mine if c[3] == "53300"))
        once = [c for c in trace if c[0] == "once" and c[3] == "ok"]
        if once and not r.get("ran"):
            last_probe_connect.append(once[-1][2] - once[-1][1])
            if completed is not None:
                probe_began.append(once[-1][1] - t0 - completed)
    return {
        "timeline": {k: _stats(v) for k, v in rel.items()},
        "notice_after_completion": _stats(notice),
        "last_probe_connect_s": _stats(last_probe_connect),
        "last_probe_began_after_completion": _stats(probe_began),
        "connects_per_replica": {k: _stats(v) for k, v in sorted(connects.items())},
        "connects_total": {k: sum(v) for k, v in sorted(connects.items())},
        "close_s": {
            p: _stats([c[2] - c[1] for r in results for c in r.get("connects") or [] if c[0] == p])
            for p in sorted({c[0] for r in results for c in r.get("connects") or []})
            if p.startswith("close:")
        },
        "refused_53300_total": {k: sum(v) for k, v in sorted(refused.items())},
    }


def _spread(s: dict[str, float]) -> str:
    if not s:
        return "n/a"
    return f"{s['median']:.2f} / {s['p90']:.2f} / {s['max']:.2f}"


def _cpu(c: dict[str, float], n: int) -> str:
    if not c:
        return "n/a"
    use = c["machine_busy_cpu_s"] / (c["wall_s"] * c["cpus"])
    runs = c["workers_cpu_s"] - c.get("imports_cpu_s", 0.0)
    return (
        f"{c['machine_busy_cpu_s']:.1f} CPU-s busy in {c['wall_s']:.1f} s wall "
        f"({use:.0%} of {c['cpus']:g} CPUs): replicas' processes {c['workers_cpu_s']:.1f} "
        f"(their imports {c.get('imports_cpu_s', 0.0):.1f}, then {1000 * runs / n:.0f} ms "
        f"per replica), PostgreSQL {c['server_cpu_s']:.1f} "
        f"({1000 * c['server_cpu_s'] / n:.0f} ms per replica), anything else "
        f"{c['other_cpu_s']:.1f}"
    )


def floor(c: dict[str, float]) -> float:
    """Wall seconds the replicas' own CPU (theirs after imports, PostgreSQL's) needs on all CPUs."""
    if not c:
        return float("nan")
    return (c["workers_cpu_s"] - c.get("imports_cpu_s", 0.0) + c["server_cpu_s"]) / c["cpus"]


def explain(f: dict[str, Any]) -> str:
    """The decomposition ``benchmarks/fleet.py`` prints under its table."""
    t, n = f.get("trace") or {}, f["replicas"]
    if not t:
        return ""
    tl = t["timeline"]
    conn = ", ".join(
        f"{k} {v['median']:g} (max {v['max']:g}; refused 53300: {t['refused_53300_total'][k]})"
        for k, v in t["connects_per_replica"].items()
    )
    lines = [
        "where the fleet's time went (s since the common start; median / p90 / max of replicas):",
        f"  worker processes imported    {t['processes_imported_s']:.2f} s after their spawn "
        f"(not counted: the common start is {t['start_after_spawn_s']:.2f} s after it)",
        f"  run began                    {_spread(tl['run_started'])}",
        f"  database phase ended         {_spread(tl['database_end'])}",
        f"  once phase began             {_spread(tl['once_start'])}",
        f"  once work                    started {f['work_started_s']:.2f}, completed "
        f"{f['work_completed_s']:.2f}",
        f"  waiters saw it done, after   {_spread(t['notice_after_completion'])} "
        f"(their last probe began {_spread(t['last_probe_began_after_completion'])} after "
        f"the completion, its connect took {_spread(t['last_probe_connect_s'])})",
        f"  ready                        {_spread(tl['ready'])}",
        f"  run returned (history write) {_spread(tl['returned'])}",
        f"  connects per replica         {conn}; server sessions {f['sessions']}",
        "  closing a session took       "
        + ", ".join(f"{k[6:]} {_spread(v)}" for k, v in t.get("close_s", {}).items()),
        f"  CPU                          {_cpu(f['cpu'], n)}",
        f"  CPU floor                    the replicas' own CPU needs {floor(f['cpu']):.2f} s of "
        f"all CPUs even if nothing else ran = {floor(f['cpu']) / f['alone_s']:.2f} x one "
        "replica alone",
    ]
    p = f.get("plain")
    if p:
        pt = p["trace"]["timeline"]
        lines += [
            "the same fleet without the once phase (each replica sleeps the work itself):",
            f"  database phase ended         {_spread(pt['database_end'])}",
            f"  ready                        {_spread(pt['ready'])}; alone {p['alone_s']:.2f}: "
            f"ratio {p['ratio']:.2f}, peak connections {p['peak_connections']}",
            f"  CPU                          {_cpu(p['cpu'], n)}",
            f"  CPU floor                    {floor(p['cpu']):.2f} s = "
            f"{floor(p['cpu']) / p['alone_s']:.2f} x one replica alone",
        ]
    return "\n".join(lines)
