"""Timeout quality: false failures vs time to detect a dead database.

Replays traces of startups through timeout policies. Before each start a
policy gives a deadline T from the history so far:

- a healthy start with time-to-ready L <= T succeeds; the policy learns L;
- a healthy start with L > T is a *false failure*; the policy learns only
  "at least T" (a censored sample), which is all a real process learns;
- a dead start (never ready) costs T: its detection time; the policy learns
  "at least T" too -- it cannot tell a dead database from a slow one.

Policies: fixed 600 s (what the original system shipped), fixed 30 s,
fixed 5 s, RFC 6298 (SRTT + 4 RTTVAR, 1 s minimum, doubling back-off on a
timeout), smd's adaptive policy through its public API (``smd.timeouts``,
production defaults: default 30 s, floor 1 s, ceiling 120 s, 8 samples
before learning), and the hindsight oracle (the fixed deadline equal to the
healthy q99 of each environment, known only after the fact).

Goal for smd: false failures <= 1% AND mean detection <= max(2 x oracle, 1 s)
in every environment.

    python benchmarks/timeout_quality.py                  # synthetic suites
    python benchmarks/timeout_quality.py --format json
    python benchmarks/timeout_quality.py --trace mine.jsonl   # your own data
    python benchmarks/timeout_quality.py --ablation       # estimator variants
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _traces import DEAD_RATE, ENVIRONMENTS, Trace, generate, read_trace

from smd import ManualClock
from smd._settings import Environment, TimeoutSettings
from smd.timeouts import AdaptiveTimeout, TimeoutContext, TimingHistory

OUT = Path(__file__).resolve().parent / "out"
GOAL_FF = 0.01
SPACING = 600.0  # seconds between starts on the replay clock


class Policy(Protocol):
    name: str

    def deadline(self) -> float: ...

    def success(self, seconds: float) -> None: ...

    def timeout(self, seconds: float) -> None: ...


class Fixed:
    def __init__(self, seconds: float, name: str | None = None) -> None:
        self.seconds = seconds
        self.name = name or f"fixed {seconds:g}s"

    def deadline(self) -> float:
        return self.seconds

    def success(self, seconds: float) -> None:
        pass

    def timeout(self, seconds: float) -> None:
        pass


class Rfc6298:
    """RFC 6298's retransmission timer applied to time-to-ready."""

    name = "RFC 6298"

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = 1.0  # (2.1) initial RTO

    def deadline(self) -> float:
        return self.rto

    def success(self, seconds: float) -> None:
        if self.srtt is None:  # (2.2)
            self.srtt, self.rttvar = seconds, seconds / 2
        else:  # (2.3), alpha 1/8, beta 1/4
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
            self.srtt = 0.875 * self.srtt + 0.125 * seconds
        self.rto = min(max(self.srtt + 4 * self.rttvar, 1.0), 60.0)  # (2.4) min 1 s, (2.5) max

    def timeout(self, seconds: float) -> None:
        self.rto = min(self.rto * 2, 60.0)  # (5.5) back off


class Smd:
    """smd's adaptive timeout, driven only through the public ``smd.timeouts`` API."""

    def __init__(self, name: str = "smd adaptive", **params: float) -> None:
        self.name = name
        self.clock = ManualClock()
        self.history = TimingHistory(clock=self.clock)
        bounds = TimeoutSettings().for_env(Environment.PRODUCTION)
        self.context = TimeoutContext(environment="production", bounds=bounds)
        self.policy = AdaptiveTimeout(
            clock=self.clock,
            min_samples=TimeoutSettings().min_samples,
            **params,  # type: ignore[arg-type]
        )

    def deadline(self) -> float:
        self.clock.advance(SPACING)
        return self.policy.compute(self.history, self.context).seconds

    def success(self, seconds: float) -> None:
        self.history.record_success(seconds)

    def timeout(self, seconds: float) -> None:
        self.history.record_timeout(seconds)


@dataclass
class Tally:
    healthy: int = 0
    false_failures: int = 0
    dead: int = 0
    detection: float = 0.0
    dead_warm: int = 0  # dead starts after the first 8 (warm-up) starts
    detection_warm: float = 0.0
    deadlines: list[float] = field(default_factory=list)


def replay(policy: Policy, trace: Trace, tally: Tally, keep: bool = False) -> None:
    for i, latency in enumerate(trace):
        t = policy.deadline()
        if keep:
            tally.deadlines.append(t)
        if latency is None:
            tally.dead += 1
            tally.detection += t
            if i >= 8:
                tally.dead_warm += 1
                tally.detection_warm += t
            policy.timeout(t)
        elif latency <= t:
            tally.healthy += 1
            policy.success(latency)
        else:
            tally.healthy += 1
            tally.false_failures += 1
            policy.timeout(t)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def quantile(values: Sequence[float], q: float) -> float:
    """Smallest value v with at least q of the values <= v (what a fixed deadline needs)."""
    s = sorted(values)
    k = max(0, math.ceil(q * len(s)) - 1)
    return s[k]


PolicyFactory = Callable[[], Policy]


def policies(
    oracle: float, extra: dict[str, PolicyFactory] | None = None
) -> dict[str, PolicyFactory]:
    out: dict[str, PolicyFactory] = {
        "fixed 600s": lambda: Fixed(600.0),
        "fixed 30s": lambda: Fixed(30.0),
        "fixed 5s": lambda: Fixed(5.0),
        "RFC 6298": Rfc6298,
        "smd adaptive": Smd,
        "oracle q99": lambda: Fixed(oracle, "oracle q99"),
    }
    out.update(extra or {})
    return out


def evaluate(
    suites: dict[str, list[Trace]], extra: dict[str, PolicyFactory] | None = None
) -> tuple[list[dict[str, object]], dict[str, dict[str, list[float]]]]:
    rows: list[dict[str, object]] = []
    curves: dict[str, dict[str, list[float]]] = {}
    for env, traces in suites.items():
        healthy = [x for tr in traces for x in tr if x is not None]
        oracle = quantile(healthy, 0.99)
        results: dict[str, Tally] = {}
        for name, factory in policies(oracle, extra).items():
            tally = Tally()
            for k, trace in enumerate(traces):
                if k == 0:
                    one = Tally()
                    replay(factory(), trace, one, keep=True)
                    curves.setdefault(env, {})[name] = one.deadlines
                    for f in ("healthy", "false_failures", "dead", "detection", "dead_warm"):
                        setattr(tally, f, getattr(tally, f) + getattr(one, f))
                    tally.detection_warm += one.detection_warm
                else:
                    replay(factory(), trace, tally)
            results[name] = tally
        oracle_det = results["oracle q99"].detection / max(1, results["oracle q99"].dead)
        bound = max(2 * oracle_det, 1.0)
        for name, t in results.items():
            ff = t.false_failures / t.healthy if t.healthy else 0.0
            lo, hi = wilson(t.false_failures, t.healthy)
            det = t.detection / t.dead if t.dead else float("nan")
            det_warm = t.detection_warm / t.dead_warm if t.dead_warm else float("nan")
            rows.append(
                {
                    "environment": env,
                    "policy": name,
                    "starts": t.healthy + t.dead,
                    "healthy": t.healthy,
                    "false_failures": t.false_failures,
                    "ff_rate": ff,
                    "ff_ci95": [lo, hi],
                    "dead": t.dead,
                    "mean_detection_s": det,
                    "mean_detection_after_warmup_s": det_warm,
                    "detection_vs_oracle": det / oracle_det if oracle_det else float("nan"),
                    "oracle_s": oracle,
                    "detection_bound_s": bound,
                    "meets_goal": ff <= GOAL_FF and det <= bound + 1e-9,
                    # The same, counting only dead starts after the first 8
                    # (while smd has too little history it uses the default).
                    "meets_goal_after_warmup": ff <= GOAL_FF and det_warm <= bound + 1e-9,
                }
            )
    return rows, curves


def fixed_sweep(suites: dict[str, list[Trace]]) -> dict[str, object]:
    """For a fixed deadline T the goal holds in an env iff q99 <= T <= max(2 q99, 1 s)."""
    ranges: dict[str, list[float]] = {}
    for env, traces in suites.items():
        healthy = [x for tr in traces for x in tr if x is not None]
        low = quantile(healthy, 1 - GOAL_FF)  # FF <= 1% needs T >= this
        high = max(2 * quantile(healthy, 0.99), 1.0)  # detection bound
        ranges[env] = [low, high]
    lo = max(r[0] for r in ranges.values())
    hi = min(r[1] for r in ranges.values())
    return {"ranges": ranges, "intersection": [lo, hi], "exists": lo <= hi}


def _fmt_s(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def table(rows: list[dict[str, object]], sweep: dict[str, object] | None) -> str:
    head = (
        f"{'environment':<13} {'policy':<22} {'false failures (95% CI)':<27} "
        f"{'mean detection':>14} {'after warm-up':>13} {'÷ oracle':>9} {'bound':>8}  goal"
    )
    lines = [head, "-" * len(head)]
    prev = None
    for r in rows:
        if prev is not None and r["environment"] != prev:
            lines.append("")
        prev = r["environment"]
        ci = cast(list[float], r["ff_ci95"])
        rate = cast(float, r["ff_rate"])
        ff = f"{rate:.2%} [{ci[0]:.2%}, {ci[1]:.2%}]"
        det = cast(float, r["mean_detection_s"])
        warm = cast(float, r["mean_detection_after_warmup_s"])
        ratio = cast(float, r["detection_vs_oracle"])
        lines.append(
            f"{r['environment']!s:<13} {r['policy']!s:<22} {ff:<27} "
            f"{_fmt_s(det):>14} {_fmt_s(warm):>13} "
            f"{ratio:>8.2f}x {_fmt_s(cast(float, r['detection_bound_s'])):>8}  "
            f"{'yes' if r['meets_goal'] else 'no'}"
        )
    lines.append("")
    by_policy: dict[str, bool] = {}
    for r in rows:
        by_policy[str(r["policy"])] = by_policy.get(str(r["policy"]), True) and bool(
            r["meets_goal"]
        )
    lines.append("Goal (FF <= 1% and mean detection <= max(2x oracle, 1 s)) in every environment:")
    after: dict[str, bool] = {}
    for r in rows:
        name = str(r["policy"])
        after[name] = after.get(name, True) and bool(r["meets_goal_after_warmup"])
    for name, ok in by_policy.items():
        if name != "oracle q99":
            misses = [
                f"{r['environment']} ({_fmt_s(cast(float, r['mean_detection_s']))} > "
                f"{_fmt_s(cast(float, r['detection_bound_s']))})"
                if cast(float, r["ff_rate"]) <= GOAL_FF
                else f"{r['environment']} (FF {cast(float, r['ff_rate']):.2%})"
                for r in rows
                if r["policy"] == name and not r["meets_goal"]
            ]
            verdict = "MET" if ok else "not met: " + ", ".join(misses)
            if not ok and after[name]:
                verdict += "; met counting dead starts after the 8-start warm-up"
            lines.append(f"  {name:<22} {verdict}")
    if sweep is not None:
        lines.append("")
        lines.append("Fixed deadlines that would meet the goal, per environment:")
        for env, (lo, hi) in sweep["ranges"].items():  # type: ignore[attr-defined]
            lines.append(f"  {env:<13} {_fmt_s(lo)} .. {_fmt_s(hi)}")
        lo, hi = sweep["intersection"]  # type: ignore[misc]
        verdict = (
            f"a fixed deadline in {_fmt_s(lo)} .. {_fmt_s(hi)} would meet it everywhere"
            if sweep["exists"]
            else f"no single fixed deadline meets it everywhere (needs >= {_fmt_s(lo)} "
            f"and <= {_fmt_s(hi)})"
        )
        lines.append(f"  => {verdict}")
    return "\n".join(lines)


def plot(
    suites: dict[str, list[Trace]], curves: dict[str, dict[str, list[float]]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [e for e in ("serverless", "regime-shift") if e in curves]
    if not envs:
        return
    fig, axes = plt.subplots(len(envs), 1, figsize=(11, 4.2 * len(envs)), squeeze=False)
    for ax, env in zip(axes[:, 0], envs, strict=True):
        trace = suites[env][0]
        smd = curves[env]["smd adaptive"]
        xs_ok = [i for i, x in enumerate(trace) if x is not None and x <= smd[i]]
        xs_ff = [i for i, x in enumerate(trace) if x is not None and x > smd[i]]
        xs_dead = [i for i, x in enumerate(trace) if x is None]
        ax.scatter(xs_ok, [trace[i] for i in xs_ok], s=5, c="0.55", label="time to ready")
        ax.scatter(
            xs_ff, [trace[i] for i in xs_ff], s=28, c="red", marker="x", label="false failure (smd)"
        )
        ax.scatter(
            xs_dead,
            [smd[i] for i in xs_dead],
            s=24,
            c="black",
            marker="v",
            label="dead start (detected at smd deadline)",
        )
        ax.step(
            range(len(smd)), smd, where="post", c="tab:blue", lw=1.4, label="smd adaptive deadline"
        )
        ax.step(
            range(len(smd)),
            curves[env]["RFC 6298"],
            where="post",
            c="tab:orange",
            lw=0.8,
            alpha=0.8,
            label="RFC 6298 deadline",
        )
        ax.axhline(
            curves[env]["oracle q99"][0], c="tab:green", ls="--", lw=1, label="oracle (healthy q99)"
        )
        ax.set_yscale("log")
        ax.set_title(f"{env} (seed 0): deadline over time vs time to ready")
        ax.set_xlabel("start #")
        ax.set_ylabel("seconds")
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


ABLATION: dict[str, dict[str, float]] = {
    "no dead allowance": {"dead_allowance": 0.0},
    "no small-n factor": {"small_n": 0.0},
    "no recency (hl 1e9)": {"half_life": 1e9},
    "half-life 32": {"half_life": 32.0},
    "half-life 128": {"half_life": 128.0},
    "margin 1.0": {"margin": 1.0},
    "dead allowance 2%": {"dead_allowance": 0.02},
    "plausible 5x": {"plausible": 5.0},
    "q95 x margin 1.5": {"quantile": 0.95, "margin": 1.5},
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--trace", type=Path, help="replay this JSON-lines trace instead of the synthetic suites"
    )
    ap.add_argument(
        "--seeds", type=int, default=5, help="seeds per synthetic environment (default 5)"
    )
    ap.add_argument(
        "--starts", type=int, default=1000, help="starts per synthetic trace (default 1000)"
    )
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    ap.add_argument("--ablation", action="store_true", help="also run variants of smd's estimator")
    ap.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    ap.add_argument("--out", type=Path, default=OUT, help="where the PNG and JSON go")
    args = ap.parse_args(argv)

    began = time.perf_counter()
    if args.trace:
        try:
            suites = {args.trace.name: [read_trace(args.trace)]}
        except (OSError, ValueError) as err:
            ap.error(str(err))
    else:
        suites = {
            env: [
                generate(env, s, args.starts)
                for s in range(args.first_seed, args.first_seed + args.seeds)
            ]
            for env in ENVIRONMENTS
        }
    extra: dict[str, PolicyFactory] = {}
    if args.ablation:
        for label, params in ABLATION.items():
            extra[f"smd: {label}"] = partial(Smd, f"smd: {label}", **params)
    rows, curves = evaluate(suites, extra)
    sweep = None if args.trace else fixed_sweep(suites)
    elapsed = time.perf_counter() - began
    doc = {
        "benchmark": "timeout_quality",
        "version": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
        "settings": "smd adaptive with production defaults: default 30 s, floor 1 s, ceiling 120 s, min_samples 8",
        "suite": {"trace": str(args.trace)}
        if args.trace
        else {
            "environments": list(ENVIRONMENTS),
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "starts": args.starts,
            "dead_rate": DEAD_RATE,
        },
        "rows": rows,
        "fixed_sweep": sweep,
        "elapsed_s": round(elapsed, 2),
    }
    if not args.no_plot and not args.trace:
        plot(suites, curves, args.out / "timeout_quality.png")
    if not args.trace:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "timeout_quality.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    else:
        src = (
            f"trace {args.trace}"
            if args.trace
            else (
                f"{args.seeds} seeds x {args.starts} starts per environment, {DEAD_RATE:.0%} dead starts"
            )
        )
        print(
            f"Timeout quality: {src}; smd uses production defaults "
            "(default 30 s, floor 1 s, ceiling 120 s, 8 samples)."
        )
        print(table(rows, sweep))
        print(f"\n({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
