"""Synthetic time-to-ready traces for ``timeout_quality.py``, and the trace file format.

A trace is a list of starts; each is the seconds until the database became
ready, or ``None`` for a dead start (never ready). The file format is JSON
lines: ``{"ready_after": 1.23}`` or ``{"ready_after": null}``.

Two disjoint sets of families:

- ``TRAINING``: the only traces used to choose the defaults of
  :class:`smd.timeouts.AdaptiveTimeout` (and its ablation).
- ``HELD_OUT``: other shapes and other parameters, never used to choose
  anything; they judge the defaults. Heavy tails (Pareto alpha 1.5 and 3),
  cold-start mixtures (2-10% at 5-40x the body), log-normal bodies of sigma
  0.2 and 1.0, slow drift, periodic maintenance windows, bursts of slow
  starts, dead rates 0.5-5%, histories of 50-5,000 starts. Two of them are
  the traces issue 12 measured the previous estimator on (a serverless-like
  trace with 4% cold starts around 10 s and 0.5% dead; a cloud-VM-like one
  with 2% spikes around 1.5 s).

Each family draws latencies and dead starts from two separate seeded
streams, so the dead rate does not change which latencies a seed draws.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FAMILIES",
    "HELD_OUT",
    "TRAINING",
    "Family",
    "Trace",
    "generate",
    "read_trace",
    "write_trace",
]

Trace = list[float | None]

#: latency(rng, i, n, state) -> seconds; ``state`` is a fresh dict per trace
#: (for families with memory, such as bursts).
Latency = Callable[[random.Random, int, int, dict[str, float]], float]


@dataclass(frozen=True)
class Family:
    name: str
    set: str  # "training" or "held-out"
    description: str
    latency: Latency
    dead_rate: float
    starts: int
    #: dead-rate override per start (maintenance windows); None: dead_rate everywhere.
    dead_at: Callable[[int, int], float] | None = None


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _pareto(rng: random.Random, x_min: float, alpha: float) -> float:
    return float(x_min * (1.0 - rng.random()) ** (-1.0 / alpha))


# -- training ------------------------------------------------------------------


def _fast_local(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.01:
        return rng.uniform(0.020, 0.080)
    return _lognormal(rng, 0.003, 0.3)


def _cloud_vm(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.01:
        return rng.uniform(0.100, 0.300)
    return _lognormal(rng, 0.030, 0.4)


def _serverless(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.05:
        return _lognormal(rng, 8.0, 0.2)
    return _lognormal(rng, 0.3, 0.35)


def _regime_shift(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if i < n // 2:
        return _cloud_vm(rng, i, n, state)
    return _lognormal(rng, 1.5, 0.35)


def _slow_lognormal(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _lognormal(rng, 2.0, 0.5)


def _pareto_25(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _pareto(rng, 0.5, 2.5)


def _near_cold(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.06:
        return _lognormal(rng, 2.4, 0.2)
    return _lognormal(rng, 0.8, 0.3)


# -- held out ------------------------------------------------------------------


def _pareto_15(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _pareto(rng, 0.2, 1.5)


def _lomax_3(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    # Lomax (Pareto II): a body near 0.05 s and a tail of index 3, scale 0.6 s.
    return float(0.05 + 0.6 * ((1.0 - rng.random()) ** (-1.0 / 3.0) - 1.0))


def _lognormal_wide(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _lognormal(rng, 0.8, 1.0)


def _lognormal_narrow(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _lognormal(rng, 4.0, 0.2)


def _cold_2pct_40x(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.02:
        return _lognormal(rng, 20.0, 0.25)
    return _lognormal(rng, 0.5, 0.3)


def _cold_4pct_10s(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.04:
        return _lognormal(rng, 10.0, 0.3)
    return _lognormal(rng, 0.4, 0.4)


def _spikes_2pct(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.02:
        return _lognormal(rng, 1.5, 0.25)
    return _lognormal(rng, 0.030, 0.4)


def _cold_10pct_5x(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    if rng.random() < 0.10:
        return _lognormal(rng, 7.5, 0.2)
    return _lognormal(rng, 1.5, 0.25)


def _slow_drift(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    # The median grows 15x over the history (0.2 s -> 3 s): a database that
    # keeps growing, or a pool that keeps filling up.
    return _lognormal(rng, 0.2 * 15.0 ** (i / max(1, n - 1)), 0.4)


_WINDOW_EVERY, _WINDOW_LENGTH = 250, 12


def _in_window(i: int) -> bool:
    return i % _WINDOW_EVERY >= _WINDOW_EVERY - _WINDOW_LENGTH


def _maintenance(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    # Every 250 starts, 12 starts during a maintenance window (vacuum, backup,
    # a minor-version upgrade): ~13x slower.
    if _in_window(i):
        return _lognormal(rng, 4.0, 0.3)
    return _lognormal(rng, 0.3, 0.3)


def _maintenance_dead(i: int, n: int) -> float:
    return 0.2 if _in_window(i) else 0.01


def _slow_bursts(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    # Each start opens a burst with probability 0.4%; a burst lasts 5-20
    # starts at 5-10x the body (a noisy neighbour, a cache being rebuilt).
    left = state.get("left", 0.0)
    if left == 0 and rng.random() < 0.004:
        left = float(rng.randint(5, 20))
        state["factor"] = rng.uniform(5.0, 10.0)
    if left > 0:
        state["left"] = left - 1
        return _lognormal(rng, 0.15 * state["factor"], 0.35)
    return _lognormal(rng, 0.15, 0.35)


def _new_deployment(rng: random.Random, i: int, n: int, state: dict[str, float]) -> float:
    return _lognormal(rng, 0.6, 0.5)


FAMILIES: tuple[Family, ...] = (
    Family(
        "fast-local",
        "training",
        "same host: log-normal 3 ms (sigma 0.3), 1% spikes of 20-80 ms",
        _fast_local,
        0.02,
        1000,
    ),
    Family(
        "cloud-vm",
        "training",
        "same region: log-normal 30 ms (sigma 0.4), 1% spikes of 100-300 ms",
        _cloud_vm,
        0.02,
        1000,
    ),
    Family(
        "serverless",
        "training",
        "log-normal 0.3 s (sigma 0.35) + 5% cold starts around 8 s",
        _serverless,
        0.02,
        1000,
    ),
    Family(
        "regime-shift",
        "training",
        "cloud-vm, then from the middle on log-normal 1.5 s (sigma 0.35)",
        _regime_shift,
        0.02,
        1000,
    ),
    Family(
        "slow-lognormal",
        "training",
        "a slow database: log-normal 2 s (sigma 0.5)",
        _slow_lognormal,
        0.01,
        1000,
    ),
    Family(
        "pareto-2.5",
        "training",
        "heavy tail: Pareto alpha 2.5 from 0.5 s",
        _pareto_25,
        0.03,
        1000,
    ),
    Family(
        "near-cold",
        "training",
        "log-normal 0.8 s (sigma 0.3) + 6% slow starts around 2.4 s (3x)",
        _near_cold,
        0.01,
        1000,
    ),
    Family(
        "pareto-1.5",
        "held-out",
        "very heavy tail: Pareto alpha 1.5 from 0.2 s",
        _pareto_15,
        0.01,
        3000,
    ),
    Family(
        "lomax-3",
        "held-out",
        "Lomax alpha 3, scale 0.6 s, from 0.05 s",
        _lomax_3,
        0.005,
        800,
    ),
    Family(
        "lognormal-wide",
        "held-out",
        "log-normal 0.8 s, sigma 1.0",
        _lognormal_wide,
        0.02,
        2000,
    ),
    Family(
        "lognormal-narrow",
        "held-out",
        "log-normal 4 s, sigma 0.2, 5% dead",
        _lognormal_narrow,
        0.05,
        400,
    ),
    Family(
        "cold-2%-40x",
        "held-out",
        "log-normal 0.5 s (sigma 0.3) + 2% cold starts around 20 s (40x)",
        _cold_2pct_40x,
        0.01,
        2000,
    ),
    Family(
        "cold-4%-10s",
        "held-out",
        "issue 12's serverless-like trace: 0.4 s body + 4% cold starts around 10 s, 0.5% dead",
        _cold_4pct_10s,
        0.005,
        1500,
    ),
    Family(
        "spikes-2%-1.5s",
        "held-out",
        "issue 12's cloud-VM-like trace: 30 ms body + 2% spikes around 1.5 s",
        _spikes_2pct,
        0.02,
        1500,
    ),
    Family(
        "cold-10%-5x",
        "held-out",
        "log-normal 1.5 s (sigma 0.25) + 10% cold starts around 7.5 s (5x), 3% dead",
        _cold_10pct_5x,
        0.03,
        600,
    ),
    Family(
        "slow-drift",
        "held-out",
        "log-normal (sigma 0.4) whose median grows 0.2 s -> 3 s over 5,000 starts",
        _slow_drift,
        0.01,
        5000,
    ),
    Family(
        "maintenance",
        "held-out",
        "0.3 s body; every 250 starts a 12-start window at ~4 s with 20% dead",
        _maintenance,
        0.01,
        3000,
        _maintenance_dead,
    ),
    Family(
        "slow-bursts",
        "held-out",
        "0.15 s body; bursts of 5-20 starts at 5-10x (0.4% of starts open one)",
        _slow_bursts,
        0.02,
        2000,
    ),
    Family(
        "new-deployment",
        "held-out",
        "50 starts of a fresh deployment: log-normal 0.6 s (sigma 0.5)",
        _new_deployment,
        0.02,
        50,
    ),
)

TRAINING: dict[str, Family] = {f.name: f for f in FAMILIES if f.set == "training"}
HELD_OUT: dict[str, Family] = {f.name: f for f in FAMILIES if f.set == "held-out"}
assert not TRAINING.keys() & HELD_OUT.keys()


def generate(family: Family, seed: int, n: int | None = None) -> Trace:
    """``n`` (default: the family's) starts of ``family``, reproducible from ``seed``."""
    n = family.starts if n is None else n
    rng = random.Random(f"{family.name}/{seed}/latency")
    dead = random.Random(f"{family.name}/{seed}/dead")
    state: dict[str, float] = {}
    out: Trace = []
    for i in range(n):
        latency = family.latency(rng, i, n, state)
        rate = family.dead_at(i, n) if family.dead_at is not None else family.dead_rate
        out.append(None if dead.random() < rate else round(latency, 6))
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
