"""How far any deadline policy can get on a family with an unseen slow mode (for ``timeout_quality.py``).

A family whose healthy starts are a body plus a share ``c`` of slow starts,
with dead rate ``d``, has a *twin*: the same body with dead rate ``d + (1 -
d) c`` and no slow mode. As long as no deadline reaches the slow mode, a
slow start and a dead one both end as "timed out at T", so the two families
give histories with the same law, and a policy (a function of the history)
behaves the same on both. The twin's deadline goal -- steady-state mean
deadline <= ``beta = max(2 x q99 of the body, floor)`` -- then limits how
often the policy may wait long enough to see the mode: a constant share
``s`` of starts at ``E`` costs ``s (E - floor)`` over the floor, so ``s <=
(beta - floor) / (E - floor)``. Each slow start is seen with probability at
most ``max_E s(E) P(L <= E)``, and every slow start before the first one seen
is a false failure.

The bound printed is the expected false-failure rate of the best such
policy, generous to it everywhere: every non-explored deadline at the floor,
the first ``free`` starts (outside the steady-state window) all at the
no-data default, one slow success enough to cover the mode from then on,
and a constant share (a service that runs indefinitely cannot front-load a
budget over a history length it does not know). If that bound is near or
above the 1% goal, no estimator meets both goals on the family and its twin.
A second bound keeps the no-data default only for the warm-up's samples
(``warm_up``) and the twin's budget on every later start, as smd does.

The mixture parameters restate what ``_traces.py`` draws; :func:`check`
compares them with a generated trace so that the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from _traces import FAMILIES, Family, generate

_Z99 = NormalDist().inv_cdf(0.99)
_E_STEPS = 2000  # candidate E on a grid of 1% of the slow median: the optimum moves < 1%


@dataclass(frozen=True)
class Mixture:
    """A log-normal body plus a share of log-normal slow starts (medians in seconds)."""

    body_median: float
    body_sigma: float
    slow_share: float
    slow_median: float
    slow_sigma: float


#: The families of ``_traces.py`` that are such a mixture (their latency functions).
MIXTURES: dict[str, Mixture] = {
    "serverless": Mixture(0.3, 0.35, 0.05, 8.0, 0.2),
    "near-cold": Mixture(0.8, 0.3, 0.06, 2.4, 0.2),
    "cold-2%-40x": Mixture(0.5, 0.3, 0.02, 20.0, 0.25),
    "cold-4%-10s": Mixture(0.4, 0.4, 0.04, 10.0, 0.3),
    "spikes-2%-1.5s": Mixture(0.030, 0.4, 0.02, 1.5, 0.25),
    "cold-10%-5x": Mixture(1.5, 0.25, 0.10, 7.5, 0.2),
}


def check() -> None:
    """Fail loudly if a restated mixture no longer matches what ``_traces.py`` draws."""
    for family in FAMILIES:
        m = MIXTURES.get(family.name)
        if m is None:
            continue
        healthy = [x for s in range(4) for x in generate(family, s) if x is not None]
        norm = NormalDist()
        for cut in (m.body_median, math.sqrt(m.body_median * m.slow_median), m.slow_median):
            above = sum(1 for x in healthy if x > cut) / len(healthy)
            want = (1 - m.slow_share) * (
                1 - norm.cdf(math.log(cut / m.body_median) / m.body_sigma)
            ) + m.slow_share * (1 - norm.cdf(math.log(cut / m.slow_median) / m.slow_sigma))
            sd = math.sqrt(want * (1 - want) / len(healthy))
            if abs(above - want) > 5 * sd:  # 5 sd: a wrong restatement, not chance
                raise AssertionError(
                    f"{family.name}: {above:.3f} of healthy starts above {cut:.3g} s, "
                    f"the restated mixture says {want:.3f}"
                )


def bound(
    family: Family, m: Mixture, *, floor: float, default: float, free: int, warm_up: int
) -> dict[str, float]:
    """The twin's figures and the lower bound on expected false failures (see the module docstring)."""
    d = family.dead_rate
    slow = (1 - d) * m.slow_share  # a start is a slow healthy one
    beta = max(2 * m.body_median * math.exp(_Z99 * m.body_sigma), floor)
    norm = NormalDist()

    def seen(e: float) -> float:
        return norm.cdf(math.log(e / m.slow_median) / m.slow_sigma)

    best_rate, best_e, best_share = 0.0, math.nan, 0.0
    for k in range(1, _E_STEPS):
        e = floor + k * 0.01 * m.slow_median
        share = min(1.0, (beta - floor) / (e - floor))
        if share * seen(e) > best_rate:
            best_rate, best_e, best_share = share * seen(e), e, share
    q = slow * best_rate  # a start is the first slow one seen

    def lower_bound(long_starts: int) -> tuple[float, float]:
        """(P(unseen after the first long_starts at the default), the FF bound)."""
        unseen = (1 - slow * seen(default)) ** long_starts
        rest = family.starts - long_starts
        before = slow * (1 - best_rate) * (1 - (1 - q) ** rest) / q if q > 0 else slow * rest
        return unseen, unseen * before / (family.starts * (1 - d))

    unseen_free, ff_free = lower_bound(free)
    unseen_warm, ff_warm = lower_bound(warm_up)
    return {
        "twin_dead": d + slow,
        "twin_bound_s": beta,
        "best_explore_s": best_e,
        "best_share": best_share,
        "unseen_after_free": unseen_free,
        "ff_lower_bound": ff_free,
        "unseen_after_warm_up": unseen_warm,
        "ff_lower_bound_warm_up": ff_warm,
    }


def table(families: list[Family], *, floor: float, default: float, free: int, warm_up: int) -> str:
    """The bound for every mixture family among ``families``."""
    check()
    head = (
        f"{'family':<17}{'slow mode':>20}{'dead':>6}  {'twin: dead, bound':<19}"
        f"{'share <= at E':>18}{'unseen after ' + str(free):>18}{'FF >=':>8}"
        f"{'unseen after ' + str(warm_up):>17}{'FF >=':>8}"
    )
    lines = [
        "Identifiability bound (any policy; see benchmarks/_identifiability.py): a slow mode no "
        "deadline has reached looks like dead starts. The twin (same body, those starts dead) must "
        f"keep its deadline goal, so only a share of starts may wait until E; FF >= is the expected "
        f"false-failure rate of the best such policy, given every benefit (the first {free} "
        f"starts, outside the steady state, at the {default:g} s default; other deadlines at the "
        f"{floor:g} s floor); the last two columns: only the first {warm_up} (the warm-up's "
        "samples) at the default, the budget kept on every later start.",
        head,
        "-" * len(head),
    ]
    for f in families:
        m = MIXTURES.get(f.name)
        if m is None:
            continue
        b = bound(f, m, floor=floor, default=default, free=free, warm_up=warm_up)
        mode = f"{m.slow_share:.0%} at {m.slow_median:g} s"
        twin = f"{b['twin_dead']:.1%}, {b['twin_bound_s']:.2f} s"
        at = (
            "-" if b["best_share"] == 0 else f"{b['best_share']:.1%} at {b['best_explore_s']:.1f} s"
        )
        lines.append(
            f"{f.name:<17}{mode:>20}{f.dead_rate:>6.1%}  {twin:<19}{at:>18}"
            f"{b['unseen_after_free']:>18.2f}{b['ff_lower_bound']:>8.2%}"
            f"{b['unseen_after_warm_up']:>17.2f}{b['ff_lower_bound_warm_up']:>8.2%}"
        )
    return "\n".join(lines)
