"""What the observability observers cost per phase (issue 13 "Done when").

2,000 independent no-op phases through ``run_startup`` (logs at ``warning``,
rendered as JSON to /dev/null, so no per-phase log line), four ways:

a. no extra observer (the baseline);
b. the OpenTelemetry observer (``smd.otel.observer()``) with the API
   installed but no SDK configured: the API's no-op tracer, what a library
   user who never set up tracing gets; goal: under 10 us per phase over (a);
c. the OpenTelemetry observer on an SDK ``TracerProvider`` with a
   ``SimpleSpanProcessor`` into an ``InMemorySpanExporter`` (every span
   recorded and exported synchronously: the costly end);
d. the Prometheus observer (``smd.prometheus``) on its own registry.

The overhead of a variant is the median over rounds of its difference with
(a) in the same round. "Observer alone" replays the events of one such run
through the observer and nothing else: its own cost, free of the engine's
noise.

The four run interleaved, in a rotating order, ``--repeat`` times each (a
burst of load on a shared machine hits every variant alike); figures are
medians, and ratios are against (a) measured in the same run.

Usage::

    python benchmarks/observability.py [--format json] [--repeat N] [--phases N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import goal, machine, median, print_result, table
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import smd.otel
import smd.prometheus
from smd import Phase, PhaseContext, Settings, Startup, load_settings, run_startup
from smd._logging import configure_logging
from smd.bypass import StrictPolicy
from smd.events import Event, Observer
from smd.history import MemoryHistoryStore

#: Per-phase overhead of the OTel observer with the API alone (no SDK), in microseconds.
API_ONLY_GOAL_US = 10.0

DEVNULL: io.TextIOWrapper = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def bench_settings() -> Settings:
    return load_settings(
        environment="test",
        startup_budget=3600,
        phase_timeout=600,
        progress_interval=3600,
        log_level="warning",
        log_format="json",
    )


async def noop(ctx: PhaseContext) -> None:
    return None


def noop_startup(n: int) -> Startup:
    startup = Startup("noops")
    for i in range(n):
        startup.add(Phase(name=f"n{i:05d}", run=noop))
    return startup


class Variant:
    """One way of running: a name, its observers, and what to do between runs."""

    def __init__(
        self,
        key: str,
        label: str,
        observers: Sequence[Observer],
        reset: Callable[[], object] = lambda: None,
    ) -> None:
        self.key = key
        self.label = label
        self.observers = tuple(observers)
        self.reset = reset
        self.times: list[float] = []


def variants() -> list[Variant]:
    api_only = smd.otel.observer()  # no SDK configured: the global provider is the API's proxy
    assert api_only is not None, "opentelemetry-api is not installed"
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sdk = smd.otel.observer(tracer_provider=provider)
    assert sdk is not None
    metrics = smd.prometheus.PrometheusObserver(CollectorRegistry())
    return [
        Variant("none", "a. no extra observer", []),
        Variant("otel_api", "b. OTel, API only (no SDK)", [api_only]),
        Variant("otel_sdk", "c. OTel, SDK + in-memory exporter", [sdk], memory.clear),
        Variant("prometheus", "d. Prometheus observer", [metrics]),
    ]


async def one_run(startup: Startup, settings: Settings, variant: Variant) -> float:
    variant.reset()
    gc.collect()
    t0 = time.perf_counter()
    await run_startup(
        startup,
        settings=settings,
        store=MemoryHistoryStore(),
        policy=StrictPolicy(),
        observers=variant.observers,
    )
    return time.perf_counter() - t0


def replay(events: Sequence[Event], variant: Variant, repeat: int) -> list[float]:
    """Seconds to feed one run's ``events`` to the variant's observers alone, ``repeat`` times."""
    times: list[float] = []
    for _ in range(repeat):
        variant.reset()
        gc.collect()
        t0 = time.perf_counter()
        for event in events:
            for observer in variant.observers:
                observer(event)
        times.append(time.perf_counter() - t0)
    return times


async def measure(n: int, repeat: int) -> dict[str, Any]:
    configure_logging("json", "warning", stream=DEVNULL)
    startup = noop_startup(n)
    settings = bench_settings()
    runs = variants()
    for v in runs:  # warm-up: imports, caches, metric children
        await one_run(startup, settings, v)
    rounds: list[dict[str, float]] = []
    for i in range(repeat):
        # Interleaved, and rotated so no variant always runs first after a pause.
        done: dict[str, float] = {}
        for v in runs[i % len(runs) :] + runs[: i % len(runs)]:
            done[v.key] = await one_run(startup, settings, v)
            v.times.append(done[v.key])
        rounds.append(done)
    # The events of one run, replayed through each observer alone: its own cost,
    # without the engine's (and the machine's) noise around it.
    recorded: list[Event] = []
    await run_startup(
        startup,
        settings=settings,
        store=MemoryHistoryStore(),
        policy=StrictPolicy(),
        observers=[recorded.append],
    )
    base = median(runs[0].times)
    out: dict[str, Any] = {"phases": n, "repeat": repeat, "events": len(recorded), "variants": {}}
    for v in runs:
        m = median(v.times)
        # Overhead: the median of the differences with (a) in the same round
        # (pairs cancel the load drifting between rounds on a shared machine).
        paired = [(r[v.key] - r["none"]) / n * 1e6 for r in rounds]
        alone = median(replay(recorded, v, max(repeat, 5))) / n * 1e6
        out["variants"][v.key] = {
            "label": v.label,
            "median_s": m,
            "us_per_phase": m / n * 1e6,
            "overhead_us_per_phase": median(paired),
            "observer_alone_us_per_phase": alone,
            "ratio_to_none": m / base,
            "samples_s": v.times,
            "overhead_samples_us_per_phase": paired,
        }
    api = out["variants"]["otel_api"]["overhead_us_per_phase"]
    out["goal_api_only_us"] = API_ONLY_GOAL_US
    out["verdict_api_only"] = goal(api, API_ONLY_GOAL_US)
    return out


def render(data: dict[str, Any]) -> str:
    m, r = data["machine"], data["result"]
    head = (
        f"smd observability benchmark - {m['date']} - {m['cpus']} CPU {m['cpu']} - "
        f"Python {m['python']} - load average {m['load']} - figures are medians"
    )
    rows = []
    for key, v in r["variants"].items():
        note = ""
        if key == "otel_api":
            note = f"goal < {API_ONLY_GOAL_US:g} us/phase: {r['verdict_api_only']}"
        elif key == "none":
            note = "baseline"
        rows.append(
            [
                v["label"],
                f"{v['median_s'] * 1e3:.1f}",
                f"{v['us_per_phase']:.1f}",
                f"{v['overhead_us_per_phase']:+.1f}",
                f"{v['ratio_to_none']:.2f}x",
                f"{v['observer_alone_us_per_phase']:.2f}",
                note,
            ]
        )
    return "\n".join(
        [
            head,
            "",
            f"{r['phases']} no-op phases through run_startup, logs at warning, "
            f"{r['repeat']} interleaved runs per variant",
            table(
                [
                    "variant",
                    "ms",
                    "us/phase",
                    "overhead us/phase",
                    "/ a",
                    "observer alone us/phase",
                    "note",
                ],
                rows,
            ),
            "   overhead: median of the per-round differences with (a); observer alone: the "
            f"run's {r['events']} events replayed through the observer only",
        ]
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n = 500 if args.quick else args.phases
    return {
        "benchmark": "observability",
        "machine": machine(),
        "repeat": args.repeat,
        "result": await measure(n, args.repeat),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--repeat", type=int, default=9, help="repetitions (median taken)")
    parser.add_argument("--phases", type=int, default=2000, help="no-op phases per run")
    parser.add_argument("--quick", action="store_true", help="500 phases, for a smoke run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.phases < 1:
        parser.error("--phases must be >= 1")
    data = anyio.run(main_async, args)
    print_result(args.format, data, render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
