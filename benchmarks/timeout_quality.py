"""Timeout quality: false failures vs deadline, on traces the defaults were not tuned on.

Replays traces of startups through timeout policies. Before each start a
policy gives a deadline T from the history so far:

- a healthy start with time-to-ready L <= T succeeds; the policy learns L;
- a healthy start with L > T is a *false failure*; the policy learns only
  "at least T" (a censored sample), which is all a real process learns;
- a dead start (never ready) costs T; the policy learns "at least T" too:
  it cannot tell a dead database from a slow one.

Two disjoint sets of trace families (``_traces.py``): the *training* set,
the only one used to choose the defaults of smd's adaptive timeout, and the
*held-out* set (other shapes, other parameters) that judges them. Goals, in
every held-out family:

- false failures <= 1% of healthy starts (95% Wilson interval beside it);
- steady-state mean deadline (starts after the first 50) <= max(2 x the
  hindsight q99 of the family's healthy starts, the environment's floor);

and the warm-up cost (mean deadline over the first 20 starts) is reported.
Each family runs 5 seeds (more for short families, so that every family has
at least 4,000 starts); rates are pooled over seeds with a 95% Wilson
interval, deadlines have a 95% t-interval over the seeds' means.

The defaults were chosen on the training set only, in this order: most
families meeting both goals, then the largest worst-case margin
``min(1 - FF/1%, 1 - deadline/bound)`` (see :func:`margin`), then the lowest
worst false-failure rate, then the lowest warm-up cost. ``--ablation`` moves
each remaining constant both ways and reports both sets (2 seeds).

Families that are a body plus a slow mode also get an *identifiability
bound* (``_identifiability.py``): the expected false-failure rate that no
policy can beat while it keeps the deadline goal on the family's twin (the
same body, its slow starts dead instead), which the policy cannot tell from
the family until a deadline reaches the slow mode.

Policies: fixed 600 s (what the original system shipped), fixed 30 s,
fixed 5 s, RFC 6298 (SRTT + 4 RTTVAR, 1 s minimum, doubling back-off on a
timeout), smd's adaptive policy through its public API (``smd.timeouts``,
production bounds: default 30 s, floor 1 s, ceiling 120 s, 8 samples), and
the hindsight oracle (the fixed deadline equal to the family's healthy q99,
known only after the fact).

    python benchmarks/timeout_quality.py                  # both sets
    python benchmarks/timeout_quality.py --format json
    python benchmarks/timeout_quality.py --trace mine.jsonl   # your own data
    python benchmarks/timeout_quality.py --ablation       # vary each constant
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _identifiability import MIXTURES
from _identifiability import bound as identifiability_bound
from _identifiability import table as identifiability_table
from _traces import FAMILIES, Family, Trace, generate, read_trace

from smd import Environment
from smd.clock import ManualClock
from smd.settings import TimeoutSettings
from smd.timeouts import AdaptiveTimeout, Rfc6298Timeout, TimeoutContext, TimingHistory

OUT = Path(__file__).resolve().parent / "out"
GOAL_FF = 0.01
STEADY_AFTER = 50  # the steady-state deadline counts starts after these
WARMUP_STARTS = 20  # the warm-up cost: mean deadline over these first starts
SPACING = 600.0  # seconds between starts on the replay clock
MIN_TOTAL_STARTS = 4000  # short families get more seeds, so that their rates mean something
BOUNDS = TimeoutSettings().for_env(Environment.PRODUCTION)
MIN_SAMPLES = TimeoutSettings().min_samples
POLICIES = ("smd adaptive", "fixed 600s", "fixed 30s", "fixed 5s", "RFC 6298", "oracle q99")

#: The ablation: each remaining constant of AdaptiveTimeout moved both ways.
ABLATION: dict[str, dict[str, float]] = {
    "confidence 0.6": {"confidence": 0.6},
    "confidence 0.9": {"confidence": 0.9},
    "half_life 64": {"half_life": 64.0},
    "half_life 256": {"half_life": 256.0},
    "tail_samples 24": {"tail_samples": 24.0},
    "tail_samples 96": {"tail_samples": 96.0},
    "agreement 2": {"agreement": 2.0},
    "agreement 4": {"agreement": 4.0},
    "growth 1 (no back-off)": {"growth": 1.0},
    "growth 3": {"growth": 3.0},
    "patience 0": {"patience": 0},
    "patience 2": {"patience": 2},
    "run 2": {"run": 2},
    "run 4": {"run": 4},
    "prior_sigma 0.5": {"prior_sigma": 0.5},
    "prior_sigma 2": {"prior_sigma": 2.0},
    "prior_dof 4": {"prior_dof": 4.0},
    "prior_dof 16": {"prior_dof": 16.0},
    "target 1%": {"target": 0.01},
    "explore_budget 0 (off)": {"explore_budget": 0.0},
    "explore_budget 1.5": {"explore_budget": 1.5},
    "explore_growth 1.5": {"explore_growth": 1.5},
    "explore_growth 3": {"explore_growth": 3.0},
}


class Policy(Protocol):
    def deadline(self) -> float: ...

    def success(self, seconds: float) -> None: ...

    def timeout(self, seconds: float) -> None: ...


class Fixed:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def deadline(self) -> float:
        return self.seconds

    def success(self, seconds: float) -> None:
        pass

    def timeout(self, seconds: float) -> None:
        pass


class Rfc6298:
    """RFC 6298's retransmission timer applied to time-to-ready (smd's own
    ``Rfc6298Timeout``, run live: the baseline ``smd history replay`` prints)."""

    def __init__(self) -> None:
        self.timer = Rfc6298Timeout().timer()

    def deadline(self) -> float:
        return self.timer.rto

    def success(self, seconds: float) -> None:
        self.timer.success(seconds)

    def timeout(self, seconds: float) -> None:
        self.timer.timeout()


class Smd:
    """smd's adaptive timeout, driven only through the public ``smd.timeouts`` API."""

    def __init__(self, **params: float) -> None:
        self.clock = ManualClock()
        self.history = TimingHistory(clock=self.clock)
        self.context = TimeoutContext(environment="production", bounds=BOUNDS)
        self.policy = AdaptiveTimeout(
            clock=self.clock,
            min_samples=MIN_SAMPLES,
            **params,  # type: ignore[arg-type]
        )

    def deadline(self) -> float:
        self.clock.advance(SPACING)
        return self.policy.compute(self.history, self.context).seconds

    def success(self, seconds: float) -> None:
        self.history.record_success(seconds)

    def timeout(self, seconds: float) -> None:
        self.history.record_timeout(seconds)


def make_policy(name: str, oracle: float, params: dict[str, float]) -> Policy:
    if name.startswith("smd"):
        return Smd(**params)
    if name == "RFC 6298":
        return Rfc6298()
    if name == "oracle q99":
        return Fixed(oracle)
    return Fixed(float(name.split()[1].rstrip("s")))


@dataclass
class Replay:
    """One trace through one policy."""

    healthy: int = 0
    false_failures: int = 0
    dead: int = 0
    detection: float = 0.0
    steady_sum: float = 0.0
    steady_n: int = 0
    warm_sum: float = 0.0
    warm_n: int = 0
    deadlines: list[float] = field(default_factory=list)


def replay(policy: Policy, trace: Trace, keep: bool = False) -> Replay:
    r = Replay()
    for i, latency in enumerate(trace):
        t = policy.deadline()
        if keep:
            r.deadlines.append(t)
        if i >= STEADY_AFTER:
            r.steady_sum += t
            r.steady_n += 1
        if i < WARMUP_STARTS:
            r.warm_sum += t
            r.warm_n += 1
        if latency is None:
            r.dead += 1
            r.detection += t
            policy.timeout(t)
        elif latency <= t:
            r.healthy += 1
            policy.success(latency)
        else:
            r.healthy += 1
            r.false_failures += 1
            policy.timeout(t)
    return r


def _task(args: tuple[str, Trace, float, dict[str, float], bool]) -> Replay:
    name, trace, oracle, params, keep = args
    return replay(make_policy(name, oracle, params), trace, keep)


# -- statistics ----------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of per-seed means (the seeds are the independent units)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan, math.nan
    t = _T975.get(len(values) - 1, 1.96 + 2.4 / (len(values) - 1))
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return m, max(0.0, m - half), m + half  # a deadline is never negative


def hindsight_quantile(values: Sequence[float], q: float) -> float:
    """Smallest value v with at least q of the values <= v (what a fixed deadline needs)."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


# -- evaluation ----------------------------------------------------------------


@dataclass
class Suite:
    name: str
    set: str
    description: str
    traces: list[Trace]

    @property
    def q99(self) -> float:
        return hindsight_quantile([x for tr in self.traces for x in tr if x is not None], 0.99)

    @property
    def bound(self) -> float:
        return max(2 * self.q99, BOUNDS.floor)


def suites_for(families: Sequence[Family], seeds: int, first_seed: int) -> list[Suite]:
    out = []
    for f in families:
        k = max(seeds, math.ceil(MIN_TOTAL_STARTS / f.starts))
        traces = [generate(f, s) for s in range(first_seed, first_seed + k)]
        out.append(Suite(f.name, f.set, f.description, traces))
    return out


def evaluate(
    suites: Sequence[Suite],
    policies: dict[str, dict[str, float]],
    jobs: int,
    keep_first: bool = True,
) -> list[dict[str, Any]]:
    """Every policy over every suite: one row per (suite, policy)."""
    tasks: list[tuple[str, Trace, float, dict[str, float], bool]] = []
    index: list[tuple[int, str]] = []
    for si, suite in enumerate(suites):
        oracle = suite.q99
        for name, params in policies.items():
            for k, trace in enumerate(suite.traces):
                tasks.append((name, trace, oracle, params, keep_first and k == 0))
                index.append((si, name))
    # Longest traces first, so that the pool's last task is a short one.
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i][1]))
    results: list[Replay | None] = [None] * len(tasks)
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            done = pool.map(_task, [tasks[i] for i in order], chunksize=4)
            for i, r in zip(order, done, strict=True):
                results[i] = r
    else:
        for i in order:
            results[i] = _task(tasks[i])
    grouped: dict[tuple[int, str], list[Replay]] = {}
    for key, got in zip(index, results, strict=True):
        assert got is not None
        grouped.setdefault(key, []).append(got)
    rows = []
    for (si, name), runs in grouped.items():
        suite = suites[si]
        rows.append(summarize(suite, name, runs))
    return rows


def summarize(suite: Suite, policy: str, runs: list[Replay]) -> dict[str, Any]:
    healthy = sum(r.healthy for r in runs)
    ff = sum(r.false_failures for r in runs)
    lo, hi = wilson(ff, healthy)
    per_seed_ff = [r.false_failures / r.healthy for r in runs if r.healthy]
    steady = [r.steady_sum / r.steady_n for r in runs if r.steady_n]
    warm = [r.warm_sum / r.warm_n for r in runs if r.warm_n]
    steady_n = sum(r.steady_n for r in runs)
    steady_mean = sum(r.steady_sum for r in runs) / steady_n if steady_n else math.nan
    _, s_lo, s_hi = mean_ci(steady) if steady else (math.nan, math.nan, math.nan)
    warm_mean, w_lo, w_hi = mean_ci(warm)
    dead = sum(r.dead for r in runs)
    bound = suite.bound
    ratio = steady_mean / bound if steady_n else math.nan
    ff_rate = ff / healthy if healthy else 0.0
    meets_ff = ff_rate <= GOAL_FF
    meets_deadline = (not steady_n) or steady_mean <= bound
    return {
        "family": suite.name,
        "set": suite.set,
        "policy": policy,
        "seeds": len(runs),
        "starts": sum(r.healthy + r.dead for r in runs),
        "healthy": healthy,
        "false_failures": ff,
        "ff_rate": ff_rate,
        "ff_ci95": [lo, hi],
        "ff_worst_seed": max(per_seed_ff) if per_seed_ff else 0.0,
        "q99_s": suite.q99,
        "bound_s": bound,
        "steady_deadline_s": steady_mean,
        "steady_deadline_ci95": [s_lo, s_hi],
        "steady_vs_bound": ratio,
        "steady_vs_bound_ci95": [s_lo / bound, s_hi / bound],
        "warmup_cost_s": warm_mean,
        "warmup_cost_ci95": [w_lo, w_hi],
        "dead": dead,
        "mean_detection_s": sum(r.detection for r in runs) / dead if dead else math.nan,
        "meets_ff": meets_ff,
        "meets_deadline": meets_deadline,
        "meets_goal": meets_ff and meets_deadline,
        "_deadlines": runs[0].deadlines,
    }


# -- output --------------------------------------------------------------------


def _s(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def _pct(x: float) -> str:
    return f"{x:.2%}"


def smd_table(rows: list[dict[str, Any]], title: str) -> str:
    rows = [r for r in rows if r["policy"] == "smd adaptive"]
    head = (
        f"{'family':<17}{'starts':>12}  {'false failures [95% CI]':<25}{'worst seed':>11}"
        f"{'q99':>10}{'bound':>10}  {'steady deadline [95% CI]':<28}{'÷ bound':>8}"
        f"  {'warm-up (first 20)':<18}  goal"
    )
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lo, hi = r["ff_ci95"]
        s_lo, s_hi = r["steady_deadline_ci95"]
        if math.isnan(r["steady_deadline_s"]):
            steady = f"- (shorter than {STEADY_AFTER})"
        elif math.isnan(s_lo):
            steady = _s(r["steady_deadline_s"])
        else:
            steady = f"{_s(r['steady_deadline_s'])} [{_s(s_lo)}, {_s(s_hi)}]"
        ratio = "-" if math.isnan(r["steady_vs_bound"]) else f"{r['steady_vs_bound']:.2f}"
        seeds = f"{r['starts'] // r['seeds']}x{r['seeds']}"
        misses = []
        if not r["meets_ff"]:
            misses.append("FF")
        if not r["meets_deadline"]:
            misses.append("deadline")
        goal = "yes" if not misses else "NO (" + ", ".join(misses) + ")"
        lines.append(
            f"{r['family']:<17}{seeds:>12}  "
            f"{_pct(r['ff_rate']) + ' [' + _pct(lo) + ', ' + _pct(hi) + ']':<25}"
            f"{_pct(r['ff_worst_seed']):>11}{_s(r['q99_s']):>10}{_s(r['bound_s']):>10}  "
            f"{steady:<28}{ratio:>8}  {_s(r['warmup_cost_s']):<18}  {goal}"
        )
    lines.append(worst_line(rows))
    return "\n".join(lines)


def worst_line(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    by_ff = max(rows, key=lambda r: r["ff_rate"])
    with_steady = [r for r in rows if not math.isnan(r["steady_vs_bound"])]
    lo, hi = by_ff["ff_ci95"]
    text = (
        f"worst family: false failures {by_ff['family']} {_pct(by_ff['ff_rate'])} "
        f"[{_pct(lo)}, {_pct(hi)}]"
    )
    if with_steady:
        by_d = max(with_steady, key=lambda r: r["steady_vs_bound"])
        d_lo, d_hi = by_d["steady_vs_bound_ci95"]
        ci = "" if math.isnan(d_lo) else f" [{d_lo:.2f}, {d_hi:.2f}]"
        text += f"; deadline {by_d['family']} {by_d['steady_vs_bound']:.2f}x the bound{ci}"
    met = sum(1 for r in rows if r["meets_goal"])
    return text + f"; goal met in {met}/{len(rows)} families"


def baseline_table(rows: list[dict[str, Any]], title: str) -> str:
    names = [p for p in POLICIES if any(r["policy"] == p for r in rows)]
    families = list(dict.fromkeys(r["family"] for r in rows))
    cell = 19
    head = f"{'family':<17}" + "".join(f"{n:>{cell}}" for n in names)
    lines = [title + " (false failures / steady-state deadline ÷ bound)", head, "-" * len(head)]
    for fam in families:
        parts = []
        for n in names:
            r = next(x for x in rows if x["family"] == fam and x["policy"] == n)
            ratio = "-" if math.isnan(r["steady_vs_bound"]) else f"{r['steady_vs_bound']:.2f}"
            mark = "" if r["meets_goal"] else "*"
            parts.append(f"{_pct(r['ff_rate'])} / {ratio}{mark}".rjust(cell))
        lines.append(f"{fam:<17}" + "".join(parts))
    goal = "in every family" if len(families) > 1 else "on this trace"
    verdicts = []
    for n in names:
        mine = [r for r in rows if r["policy"] == n]
        ok = sum(1 for r in mine if r["meets_goal"])
        verdicts.append(f"{n} {ok}/{len(mine)}")
    lines.append(f"(* misses a goal) goal met {goal}? " + ", ".join(verdicts))
    return "\n".join(lines)


def margin(rows: Sequence[dict[str, Any]]) -> float:
    """The worst margin over families that meet both goals: min(1 - FF/1%, 1 - deadline/bound).

    How defaults are chosen on the training set: most families meeting the
    goals first, then the largest worst-case margin (so neither goal is
    bought at the other's edge).
    """
    values = [
        min(
            1.0 - r["ff_rate"] / GOAL_FF,
            # At the floor the deadline cannot do better: only its rate counts.
            1.0 if 2 * r["q99_s"] < BOUNDS.floor else 1.0 - r["steady_vs_bound"],
        )
        for r in rows
        if r["meets_goal"] and not math.isnan(r["steady_vs_bound"])
    ]
    return min(values) if values else math.nan


def ablation_table(results: dict[str, list[dict[str, Any]]]) -> str:
    head = (
        f"{'variant':<24}"
        f"{'training: met':>14}{'margin':>8}{'worst FF':>10}{'worst ÷':>9}{'warm-up':>9}"
        f"{'held-out: met':>15}{'margin':>8}{'worst FF':>10}{'worst ÷':>9}{'warm-up':>9}"
    )
    lines = [
        "Ablation (smd adaptive, each constant moved; fewer seeds). margin = worst "
        "min(1 - FF/1%, 1 - deadline/bound) over the families meeting both goals",
        head,
        "-" * len(head),
    ]
    for variant, rows in results.items():
        parts = [f"{variant:<24}"]
        for which in ("training", "held-out"):
            mine = [r for r in rows if r["set"] == which]
            if not mine:
                parts.append(" " * 50)
                continue
            met = sum(1 for r in mine if r["meets_goal"])
            ff = max(r["ff_rate"] for r in mine)
            ratios = [r["steady_vs_bound"] for r in mine if not math.isnan(r["steady_vs_bound"])]
            warm = statistics.fmean(r["warmup_cost_s"] for r in mine)
            width = 14 if which == "training" else 15
            parts.append(
                f"{f'{met}/{len(mine)}':>{width}}{margin(mine):>8.2f}{_pct(ff):>10}"
                f"{max(ratios):>9.2f}{_s(warm):>9}"
            )
        lines.append("".join(parts))
    return "\n".join(lines)


def plot(suites: Sequence[Suite], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = ("cold-4%-10s", "slow-drift", "maintenance", "pareto-1.5")
    chosen = [s for s in suites if s.name in wanted]
    if not chosen:
        return
    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 3.8 * len(chosen)), squeeze=False)
    for ax, suite in zip(axes[:, 0], chosen, strict=True):
        trace = suite.traces[0]

        def curve(policy: str, name: str = suite.name) -> list[float]:
            row = next(r for r in rows if r["family"] == name and r["policy"] == policy)
            deadlines: list[float] = row["_deadlines"]
            return deadlines

        smd = curve("smd adaptive")
        ok = [i for i, x in enumerate(trace) if x is not None and x <= smd[i]]
        ff = [i for i, x in enumerate(trace) if x is not None and x > smd[i]]
        dead = [i for i, x in enumerate(trace) if x is None]
        ax.scatter(ok, [trace[i] for i in ok], s=4, c="0.6", label="time to ready")
        ax.scatter(ff, [trace[i] for i in ff], s=26, c="red", marker="x", label="false failure")
        ax.scatter(dead, [smd[i] for i in dead], s=16, c="black", marker="v", label="dead start")
        ax.step(range(len(smd)), smd, where="post", c="tab:blue", lw=1.2, label="smd deadline")
        ax.step(
            range(len(smd)),
            curve("RFC 6298"),
            where="post",
            c="tab:orange",
            lw=0.7,
            alpha=0.7,
            label="RFC 6298",
        )
        ax.axhline(suite.bound, c="tab:green", ls="--", lw=1, label="goal: max(2 x q99, floor)")
        ax.set_yscale("log")
        ax.set_title(f"held-out {suite.name} (seed 0): {suite.description}", fontsize=9)
        ax.set_xlabel("start #")
        ax.set_ylabel("seconds")
        ax.legend(loc="upper left", fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return [{k: clean(v) for k, v in r.items() if not k.startswith("_")} for r in rows]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--trace", type=Path, help="replay this JSON-lines trace instead")
    ap.add_argument(
        "--set", choices=("both", "training", "held-out"), default="both", help="which families"
    )
    ap.add_argument("--seeds", type=int, default=5, help="seeds per family (default 5)")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--format", choices=("text", "json"), default="text")
    ap.add_argument("--ablation", action="store_true", help="also vary each estimator constant")
    ap.add_argument("--ablation-seeds", type=int, default=2, help="seeds per family there")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    ap.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    ap.add_argument("--out", type=Path, default=OUT, help="where the PNG and JSON go")
    args = ap.parse_args(argv)

    began = time.perf_counter()
    if args.trace:
        try:
            trace = read_trace(args.trace)
        except (OSError, ValueError) as err:
            ap.error(str(err))
        if not any(x is not None for x in trace):
            ap.error(f"{args.trace}: no healthy start to compare against")
        suites = [Suite(args.trace.name, "trace", str(args.trace), [trace])]
    else:
        families = [
            f
            for f in FAMILIES
            if args.set == "both" or f.set == args.set  # training first, then held-out
        ]
        suites = suites_for(families, args.seeds, args.first_seed)
    policies: dict[str, dict[str, float]] = {p: {} for p in POLICIES}
    rows = evaluate(suites, policies, args.jobs)
    ablation: dict[str, list[dict[str, Any]]] = {}
    if args.ablation and not args.trace:
        small = suites_for(
            [f for f in FAMILIES if args.set == "both" or f.set == args.set],
            args.ablation_seeds,
            args.first_seed,
        )
        variants = {"defaults": {}, **ABLATION}
        tasks = {f"smd: {k}": v for k, v in variants.items()}
        got = evaluate(small, tasks, args.jobs, keep_first=False)
        for k in variants:
            ablation[k] = [r for r in got if r["policy"] == f"smd: {k}"]
    mixtures = [] if args.trace else [f for f in families if f.name in MIXTURES]
    limits = {
        f.name: identifiability_bound(
            f,
            MIXTURES[f.name],
            floor=BOUNDS.floor,
            default=BOUNDS.default,
            free=STEADY_AFTER,
            warm_up=MIN_SAMPLES,
        )
        for f in mixtures
    }
    elapsed = time.perf_counter() - began
    doc: dict[str, Any] = {
        "benchmark": "timeout_quality",
        "version": 2,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()} "
        f"({os.cpu_count()} cpus)",
        "settings": (
            f"smd adaptive with production bounds: default {BOUNDS.default:g} s, floor "
            f"{BOUNDS.floor:g} s, ceiling {BOUNDS.ceiling:g} s, min_samples {MIN_SAMPLES}; "
            f"estimator defaults {AdaptiveTimeout().spec()}"
        ),
        "goals": {
            "false_failures": GOAL_FF,
            "steady_deadline": "mean deadline after the first 50 starts <= max(2 x hindsight q99, floor)",
            "warmup_cost": "mean deadline over the first 20 starts (reported)",
        },
        "families": {
            s.name: {"set": s.set, "description": s.description, "seeds": len(s.traces)}
            for s in suites
        },
        "rows": _public(rows),
        "ablation": {k: _public(v) for k, v in ablation.items()},
        "identifiability": limits,
        "elapsed_s": round(elapsed, 2),
    }
    if not args.trace:
        if not args.no_plot:
            plot(suites, rows, args.out / "timeout_quality.png")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "timeout_quality.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"Timeout quality ({doc['date']}, {doc['machine']}): smd adaptive with production bounds "
        f"(default {BOUNDS.default:g} s, floor {BOUNDS.floor:g} s, ceiling {BOUNDS.ceiling:g} s, "
        f"{MIN_SAMPLES} samples), target {AdaptiveTimeout().target:.1%} false failures."
    )
    print(
        "Goals per family: false failures <= 1%; steady-state mean deadline (after the first "
        f"{STEADY_AFTER} starts) <= max(2 x hindsight q99, floor); warm-up = mean deadline "
        f"over the first {WARMUP_STARTS} starts. CIs: Wilson (rates), t over seeds (deadlines)."
    )
    sets = (
        [("trace", f"TRACE {args.trace}")]
        if args.trace
        else [
            ("held-out", "HELD-OUT SET (never used to choose defaults)"),
            ("training", "TRAINING SET (the only one used to choose defaults)"),
        ]
    )
    for which, title in sets:
        mine = [r for r in rows if r["set"] == which]
        if not mine:
            continue
        print()
        print(smd_table(mine, title))
        print()
        print(baseline_table(mine, f"{which} baselines"))
    if mixtures:
        print()
        print(
            identifiability_table(
                mixtures,
                floor=BOUNDS.floor,
                default=BOUNDS.default,
                free=STEADY_AFTER,
                warm_up=MIN_SAMPLES,
            )
        )
    if ablation:
        print()
        print(ablation_table(ablation))
    print(f"\n({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
