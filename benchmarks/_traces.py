"""Synthetic time-to-ready traces for ``timeout_quality.py``, and the trace file format.

A trace is a list of starts; each is the seconds until the database became
ready, or ``None`` for a dead start (never ready). The file format is JSON
lines: ``{"ready_after": 1.23}`` or ``{"ready_after": null}``.

The environments (all with ``DEAD_RATE`` dead starts interleaved at random):

- ``fast-local``: a database on the same host; log-normal around 3 ms,
  with 1% small spikes of 20-80 ms (page cache, a checkpoint).
- ``cloud-vm``: a managed database in the same region; log-normal around
  30 ms, with 1% spikes of 100-300 ms (TLS, a lost packet).
- ``serverless``: a log-normal body around 0.3 s plus 5% cold starts
  log-normal around 8 s (a connector or a scale-to-zero compute waking up).
- ``regime-shift``: ``cloud-vm`` for the first half, then a slower
  regime around 1.5 s (the database moved to another region, or its
  instance was downsized) -- the direction that causes false failures.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["DEAD_RATE", "ENVIRONMENTS", "Trace", "generate", "read_trace", "write_trace"]

Trace = list[float | None]

DEAD_RATE = 0.02


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _fast_local(rng: random.Random, i: int, n: int) -> float:
    if rng.random() < 0.01:
        return rng.uniform(0.020, 0.080)
    return _lognormal(rng, 0.003, 0.3)


def _cloud_vm(rng: random.Random, i: int, n: int) -> float:
    if rng.random() < 0.01:
        return rng.uniform(0.100, 0.300)
    return _lognormal(rng, 0.030, 0.4)


def _serverless(rng: random.Random, i: int, n: int) -> float:
    if rng.random() < 0.05:
        return _lognormal(rng, 8.0, 0.2)
    return _lognormal(rng, 0.3, 0.35)


def _regime_shift(rng: random.Random, i: int, n: int) -> float:
    if i < n // 2:
        return _cloud_vm(rng, i, n)
    return _lognormal(rng, 1.5, 0.35)


ENVIRONMENTS: dict[str, Callable[[random.Random, int, int], float]] = {
    "fast-local": _fast_local,
    "cloud-vm": _cloud_vm,
    "serverless": _serverless,
    "regime-shift": _regime_shift,
}


def generate(env: str, seed: int, n: int, dead_rate: float = DEAD_RATE) -> Trace:
    """``n`` starts of environment ``env``, reproducible from ``seed``."""
    sample = ENVIRONMENTS[env]
    # One stream for latencies and one for dead starts, so that the dead rate
    # does not change which latencies a seed draws.
    rng = random.Random(f"{env}/{seed}/latency")
    dead = random.Random(f"{env}/{seed}/dead")
    out: Trace = []
    for i in range(n):
        latency = sample(rng, i, n)
        out.append(None if dead.random() < dead_rate else round(latency, 6))
    return out


def read_trace(path: Path) -> Trace:
    """Read a JSON-lines trace; blank lines are skipped, errors name the line."""
    out: Trace = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)["ready_after"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f'{path}:{lineno}: expected {{"ready_after": seconds|null}}: {err}'
                ) from None
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{path}:{lineno}: ready_after must be seconds >= 0 or null")
            out.append(None if value is None else float(value))
    return out


def write_trace(path: Path, trace: Iterable[float | None]) -> None:
    """Write a trace in the JSON-lines format."""
    with path.open("w", encoding="utf-8") as fh:
        for value in trace:
            fh.write(json.dumps({"ready_after": value}) + "\n")
