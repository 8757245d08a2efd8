"""Small helpers shared by the benchmark scripts: timing, medians, machine
facts, a plain-text table and the ``--format json`` switch.

Benchmarks print ratios measured side by side in the same run; absolute
times on these machines drift, ratios much less.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["database_url", "goal", "machine", "median", "print_result", "quantile", "table"]

ROOT = Path(__file__).resolve().parent.parent


def median(values: Sequence[float]) -> float:
    """The median (of several repetitions); raises on an empty sequence."""
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    """Where the figures come from: UTC date, 1-minute load, CPU count and model, Python, OS."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    load = "n/a"
    with contextlib.suppress(OSError, AttributeError):
        load = f"{os.getloadavg()[0]:.1f}"  # a shared, busy machine explains noise
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": load,
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def goal(value: float, limit: float) -> str:
    """``met`` when ``value <= limit``, else how far off (``MISSED (1.8x the goal)``)."""
    if value <= limit:
        return "met"
    return f"MISSED ({value / limit:.2f}x the goal)"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def print_result(fmt: str, data: dict[str, Any], text: str) -> None:
    """Print ``data`` as JSON (``--format json``) or ``text`` (the table)."""
    if fmt == "json":
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (linear interpolation between order statistics)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """``SMD_DATABASE_URL`` if set, else a throwaway cluster for the duration."""
    given = os.environ.get("SMD_DATABASE_URL")
    if given:
        yield given
        return
    base = Path(tempfile.mkdtemp(prefix="smd-bench-pg-"))
    cluster = [sys.executable, str(ROOT / "tests" / "pgbed" / "cluster.py")]
    try:
        print(f"starting a throwaway PostgreSQL in {base} ...", file=sys.stderr)
        up = subprocess.run(
            [*cluster, "up", str(base)], capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            raise SystemExit(f"{sys.argv[0]}: could not start PostgreSQL:\n{up.stderr.strip()}")
        yield up.stdout.strip()
    finally:
        subprocess.run([*cluster, "down", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
