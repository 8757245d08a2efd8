"""The adaptive timeout: target rate, bound, censoring, warm-up, asymmetry, clamps (no sleeping).

Every history is built on a :class:`~smd.clock.ManualClock`; replays decide,
then record what a real start would have learnt (a success after ``L`` when
``L <= T``, else a timeout at ``T``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smd import Environment, Settings
from smd._deadline import policy_from_spec
from smd._survival import (
    backoff_from,
    kaplan_meier,
    lognormal_prediction_bound,
    quantile_bound,
    student_t_quantile,
)
from smd.clock import ManualClock
from smd.phases._settings import PROFILES
from smd.plugins import profile as resolve_profile
from smd.plugins import profiles
from smd.settings import EnvTimeouts, TimeoutSettings
from smd.timeouts import (
    AdaptiveTimeout,
    FixedTimeout,
    InfrastructureProfile,
    TimeoutContext,
    TimeoutDecision,
    TimeoutPolicy,
    TimingHistory,
)

PROD = TimeoutContext("production", TimeoutSettings().for_env(Environment.PRODUCTION))
DEV = TimeoutContext("development", TimeoutSettings().for_env(Environment.DEVELOPMENT))


def history(*ready: float | None, clock: ManualClock | None = None) -> TimingHistory:
    """A history of starts: a number is a success after that long, None a timeout at 30 s."""
    clock = clock or ManualClock()
    h = TimingHistory(clock=clock)
    for value in ready:
        clock.advance(60)
        if value is None:
            h.record_timeout(30.0)
        else:
            h.record_success(value)
    return h


def fast(n: int, seed: int = 1, median: float = 0.2, sigma: float = 0.2) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0, sigma)) for _ in range(n)]


def decide(h: TimingHistory, ctx: TimeoutContext | None = PROD, **kw: object) -> TimeoutDecision:
    return AdaptiveTimeout(clock=h.clock, **kw).compute(h, ctx)  # type: ignore[arg-type]


Draw = Callable[[random.Random], float | None]


def replay(
    draw: Draw, starts: int, seed: int, ctx: TimeoutContext = PROD, **kw: object
) -> tuple[int, int, list[float]]:
    """Replay ``starts`` starts: (healthy starts, false failures, deadlines)."""
    rng = random.Random(seed)
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    policy = AdaptiveTimeout(clock=clock, **kw)  # type: ignore[arg-type]
    healthy = failures = 0
    deadlines = []
    for _ in range(starts):
        clock.advance(600)
        t = policy.compute(h, ctx).seconds
        deadlines.append(t)
        latency = draw(rng)
        if latency is not None:
            healthy += 1
        if latency is not None and latency <= t:
            h.record_success(latency)
        else:
            failures += latency is not None
            h.record_timeout(t)
    return healthy, failures, deadlines


def lognormal(median: float, sigma: float, dead: float = 0.0) -> Draw:
    def draw(rng: random.Random) -> float | None:
        x = median * math.exp(rng.gauss(0, sigma))
        return None if rng.random() < dead else x

    return draw


def pareto(x_min: float, alpha: float, dead: float = 0.0) -> Draw:
    def draw(rng: random.Random) -> float | None:
        x = x_min * (1.0 - rng.random()) ** (-1.0 / alpha)
        return None if rng.random() < dead else x

    return draw


# -- the no-data path and the graded warm-up ---------------------------------


def test_no_history_uses_the_environments_default() -> None:
    d = decide(history())
    assert (d.seconds, d.source) == (30.0, "default")
    assert "0 ready samples, no sample yet" in d.explanation
    assert "production default 30s" in d.explanation
    assert d.attempt_seconds == 30.0  # always a number: one attempt may use it all
    assert decide(history(), DEV).seconds == 10.0
    assert decide(history(), None).seconds == 30.0  # built-in production-like bounds


def test_warm_up_shrinks_gradually_from_the_default() -> None:
    """1-7 samples: a Student-t predictive bound, wide with few samples, never above the default."""
    samples = fast(7, median=0.5, sigma=0.3)
    seen = [decide(history(*samples[:n])) for n in range(8)]
    seconds = [d.seconds for d in seen]
    assert seconds[0] == seconds[1] == 30.0  # one sample cannot talk it down
    assert seen[1].source == "default"
    assert all(a >= b for a, b in pairwise(seconds))  # only shrinks
    assert seconds[4] < 30.0
    assert seen[4].source == "adaptive"
    assert 2.0 < seconds[5] < 15.0  # shrinking: neither the default nor the samples
    assert 1.0 <= seconds[7] < 6.0
    # The safety factor (deadline / largest sample) narrows as the samples agree.
    factors = [s / max(samples[:n]) for n, s in enumerate(seconds) if n >= 4]
    assert all(a > b for a, b in pairwise(factors))
    assert "warm-up: log-normal predictive q99.5 of 5 successes" in seen[5].explanation


def test_warm_up_uses_what_the_samples_show() -> None:
    # Same count, slower or more spread samples: a longer deadline.
    narrow = decide(history(*fast(5, median=0.5, sigma=0.1))).seconds
    slow = decide(history(*fast(5, median=2.0, sigma=0.1))).seconds
    spread = decide(history(*fast(5, median=0.5, sigma=0.8))).seconds
    assert narrow < slow
    assert narrow < spread
    # The context decides the default it starts from, and explicit beats context.
    assert decide(history(*fast(1)), DEV).seconds == 10.0
    assert decide(history(*fast(1)), DEV, default=12.0).seconds == 12.0


def test_a_timeout_during_warm_up_keeps_it_long() -> None:
    h = history(*fast(5, median=0.5, sigma=0.1))
    before = decide(h)
    assert before.source == "adaptive"
    assert before.seconds < 10.0
    h.record_timeout(before.seconds)
    after = decide(h)
    # growth x the timeout: dead or slow cannot be told apart from six starts
    assert after.seconds == pytest.approx(2 * before.seconds)
    assert "during warm-up" in after.explanation


def test_warm_up_cost_is_a_fraction_of_all_or_nothing() -> None:
    # The mean deadline over the first 20 starts of a fast target: the old
    # all-or-nothing rule paid the 30 s default for 8 starts (12.6 s).
    _, failures, deadlines = replay(lognormal(0.05, 0.3), 20, seed=3)
    assert failures == 0
    assert sum(deadlines) / 20 < 8.0


def test_lognormal_prediction_bound_is_the_student_t_formula() -> None:
    # One sample: dof = prior_dof = 1, scale = prior_sigma * sqrt(2).
    one = lognormal_prediction_bound([2.0], 0.995, prior_sigma=1.0, prior_dof=1.0)
    assert one == pytest.approx(2.0 * math.exp(63.6567 * math.sqrt(2)), rel=1e-4)
    xs = [1.0, math.e, math.e**2]  # logs 0, 1, 2: mean 1, sum of squares 2
    dof = 1.0 + 2
    scale = math.sqrt((1.0 * 0.5**2 + 2.0) / dof) * math.sqrt(1 + 1 / 3)
    expected = math.exp(1.0 + student_t_quantile(0.995, dof) * scale)
    got = lognormal_prediction_bound(xs, 0.995, prior_sigma=0.5, prior_dof=1.0)
    assert got == pytest.approx(expected)


def test_student_t_quantiles() -> None:
    # Tabulated values (two-sided 99% and 95%).
    for dof, q995, q975 in ((1, 63.657, 12.706), (2, 9.925, 4.303), (7, 3.499, 2.365)):
        assert student_t_quantile(0.995, dof) == pytest.approx(q995, abs=1e-3)
        assert student_t_quantile(0.975, dof) == pytest.approx(q975, abs=1e-3)
    assert student_t_quantile(0.995, 1e6) == pytest.approx(2.5758, abs=1e-3)
    assert student_t_quantile(0.025, 2) == pytest.approx(-4.303, abs=1e-3)


# -- the stated target ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("log-normal 2 s, sigma 0.5, 1% dead", lognormal(2.0, 0.5, dead=0.01)),
        ("log-normal 0.8 s, sigma 1.0", lognormal(0.8, 1.0)),
        ("Pareto alpha 2.5 from 0.5 s, 3% dead", pareto(0.5, 2.5, dead=0.03)),
    ],
)
def test_the_target_false_failure_rate_is_met_on_stationary_traces(name: str, draw: Draw) -> None:
    """2,000 starts of a stationary distribution: false failures near the 0.5% target."""
    healthy, failures, deadlines = replay(draw, 2000, seed=11)
    rate = failures / healthy
    assert rate <= 0.01, (name, rate)
    # ... and not by waiting for ever: the deadline stays near the quantile.
    steady = deadlines[50:]
    assert sum(steady) / len(steady) < 120.0 * 0.5, name


def test_the_target_is_what_it_aims_at() -> None:
    """The stated rate moves the result: 5% gives ~5%, 0.5% gives well under 1%."""
    draw = lognormal(2.0, 0.5)
    loose = replay(draw, 3000, seed=5, target=0.05)
    tight = replay(draw, 3000, seed=5)
    loose_rate = loose[1] / loose[0]
    tight_rate = tight[1] / tight[0]
    assert 0.02 < loose_rate < 0.08
    assert tight_rate < 0.01
    assert sum(loose[2]) < sum(tight[2])  # a looser target, shorter deadlines


# -- the bound -----------------------------------------------------------------


def test_the_bound_is_hand_computed_on_a_small_case() -> None:
    """Ten successes, the two-sample tail above u = 1 s (tail_samples=2), target 1%.

    Hill: gamma = (ln 4 + ln 2) / 2; Kaplan-Meier mass above u: phi = 2/10;
    Weissman: q = u * (phi / target) ** gamma; log-error
    sd = gamma * sqrt((1 + ln(phi/target)^2) / k), k = 2; bound = q * exp(z(0.75) * sd).
    """
    values = [1.0] * 8 + [2.0, 4.0]
    est = quantile_bound(
        values,
        [False] * 10,
        [1.0] * 10,
        target=0.01,
        confidence=0.75,
        tail_samples=2,
        agreement=3.0,
    )
    assert est is not None
    gamma = (math.log(4) + math.log(2)) / 2
    ratio = math.log(0.2 / 0.01)
    q = 1.0 * math.exp(gamma * ratio)
    sd = gamma * math.sqrt((1 + ratio**2) / 2)
    assert est.method == "pareto tail"
    assert est.threshold == 1.0
    assert est.tail_k == 2.0
    assert est.tail_mass == pytest.approx(0.2)
    assert est.gamma == pytest.approx(gamma)
    assert est.point == pytest.approx(q)
    assert est.seconds == pytest.approx(q * math.exp(0.6744898 * sd), rel=1e-6)
    assert est.n_eff == pytest.approx(10.0)


def test_the_bound_widens_with_confidence_and_narrows_with_samples() -> None:
    samples = fast(200, seed=4, median=1.0, sigma=0.5)

    def bound(n: int, confidence: float = 0.75) -> tuple[float, float]:
        est = quantile_bound(
            samples[-n:],
            [False] * n,
            [1.0] * n,
            target=0.005,
            confidence=confidence,
            tail_samples=48,
            agreement=3.0,
        )
        assert est is not None
        assert est.method == "pareto tail"
        return est.seconds, est.point

    widen = {n: (lambda b: b[0] / b[1])(bound(n)) for n in (20, 50, 200)}
    assert widen[20] > widen[50] > widen[200] > 1.0  # fewer samples, a wider bound
    assert bound(200, 0.95)[0] > bound(200)[0] > bound(200, 0.5)[0]
    assert bound(200, 0.5)[0] == pytest.approx(bound(200, 0.5)[1])  # at 0.5: the estimate
    # Through the policy, with recency weights: never below the point estimate.
    d = decide(history(*samples))
    assert d.details["bound"] >= d.details["estimate"]  # type: ignore[operator]
    assert decide(history(*samples), confidence=0.95).seconds > d.seconds


def test_explanation_names_quantile_bound_and_effective_samples() -> None:
    h = history(*fast(40, median=3.0))
    h.record_timeout(1.0)
    h.record_success(3.0)
    d = decide(h)
    assert d.explanation.startswith(f"adaptive {d.seconds:.3g}s from 42 ready samples (1 censored")
    assert "n_eff " in d.explanation
    assert "upper 75% bound of q99.5 (target 0.5% false failures)" in d.explanation
    assert "effective successes" in d.explanation
    assert "clamp: none" in d.explanation
    for key in ("samples", "censored", "statistic", "raw", "clamp", "profile_allowance", "n_eff"):
        assert key in d.details
    assert d.details["quantile"] == pytest.approx(0.995)
    assert d.details["confidence"] == 0.75
    assert 30 < d.details["n_eff"] < 42  # type: ignore[operator]  # recency weights
    json.dumps(d.to_dict())  # details are plain data for reports


def test_implements_the_policy_protocol_and_round_trips_its_spec() -> None:
    policy = AdaptiveTimeout(floor=0.5, target=0.01, confidence=0.9, half_life=32, patience=2)
    assert isinstance(policy, TimeoutPolicy)
    spec = policy.spec()
    assert spec["type"] == "adaptive"
    rebuilt = policy_from_spec(json.loads(json.dumps(spec)))
    assert isinstance(rebuilt, AdaptiveTimeout)
    assert rebuilt.spec() == spec
    # Every constructor parameter but the clock is in the spec.
    import inspect

    names = set(inspect.signature(AdaptiveTimeout).parameters) - {"clock", "profile"}
    assert names <= set(AdaptiveTimeout(min_samples=3, default=5, ceiling=9, floor=1).spec())


# -- censoring -------------------------------------------------------------------


def test_kaplan_meier_hand_computed() -> None:
    # 1, 2+, 3, 4+, 5 (+: censored). S: 4/5 after 1; 3 at risk at 3 -> 0.8*2/3;
    # 1 at risk at 5 -> 0.
    times, surv = kaplan_meier([1, 2, 3, 4, 5], [False, True, False, True, False], [1.0] * 5)
    assert times == [1, 3, 5]
    assert surv == pytest.approx([0.8, 0.8 * 2 / 3, 0.0])
    # A timeout at t is "at least t": the success at the same t comes first.
    times, surv = kaplan_meier([2, 2, 3], [True, False, False], [1.0] * 3)
    assert (times, surv) == ([2, 3], [pytest.approx(2 / 3), 0.0])
    # Weights: a success weighing 3 among 4 units.
    times, surv = kaplan_meier([1, 2], [False, False], [3.0, 1.0])
    assert surv == pytest.approx([0.25, 0.0])


def test_timeouts_within_the_observed_range_push_the_deadline_up() -> None:
    # A timeout at 1 s among successes up to ~3 s is "at least 1 s": its mass
    # moves to the slower successes instead of vanishing.
    base = fast(100, seed=8, median=0.5, sigma=0.5)
    without = decide(history(*base))
    h = history(*base[:50])
    for value in base[50:]:
        h.record_success(value)
        if value > 0.6:
            h.record_timeout(1.0)
    h.record_success(0.5)
    with_timeouts = decide(h)
    assert max(base) > 1.0
    assert with_timeouts.details["dead_timeouts"] == 0  # inside the range: slow, not dead
    assert with_timeouts.seconds > without.seconds


def test_a_lone_timeout_far_beyond_every_start_is_taken_for_a_dead_database() -> None:
    h = history(*fast(50, median=0.005))
    h.record_timeout(1.0)  # 1 s when every start took ~5 ms: the database was down
    d = decide(h)
    assert d.seconds == 1.0
    assert d.details["dead_timeouts"] == pytest.approx(1.0)
    assert d.details["backoff"] is None  # far beyond the bound: no back-off either
    assert "taken for dead starts" in d.explanation


def test_the_cure_split_reads_near_timeouts_as_slow_and_far_ones_as_dead() -> None:
    samples = fast(80, seed=6, median=1.0, sigma=0.5)
    top = max(samples)

    def with_timeout(at: float) -> TimeoutDecision:
        h = history(*samples)
        h.record_timeout(at)
        h.record_success(1.0)  # no back-off: only the estimate is compared
        return decide(h)

    near = with_timeout(1.05 * top)
    far = with_timeout(100 * top)
    assert far.details["dead_timeouts"] == pytest.approx(1.0, abs=0.01)
    assert 0.0 < near.details["dead_timeouts"] < 0.9  # type: ignore[operator]
    assert near.details["bound"] > far.details["bound"]  # type: ignore[operator]
    plain = decide(history(*samples, 1.0)).details["bound"]
    assert far.details["bound"] == pytest.approx(plain, rel=1e-3)  # a dead start teaches nothing


def test_a_timeout_near_the_tail_is_a_slow_start_and_backs_off() -> None:
    h = history(*fast(60, median=2.0, sigma=0.4))
    before = decide(h)
    h.record_timeout(before.seconds)
    after = decide(h)
    assert after.details["backoff"] == pytest.approx(2 * before.seconds)
    assert after.seconds >= 2 * before.seconds  # explores beyond the deadline that was too short
    assert "back-off after a timeout" in after.explanation
    # The next start succeeded: the back-off is over, the timeout stays in the tail.
    h.record_success(2.0)
    assert decide(h).seconds < after.seconds


def test_dead_starts_do_not_inflate_it() -> None:
    """3% of the starts dead, each a timeout at the deadline: the deadline moves little.

    (It moves some: the cure-fraction split keeps a share of each timeout as
    a possible slow start, and the start after one backs off.)
    """
    _, _, alive = replay(lognormal(2.0, 0.4), 800, seed=21)
    healthy, failures, dead = replay(lognormal(2.0, 0.4, dead=0.03), 800, seed=21)

    def mean(xs: list[float]) -> float:
        return sum(xs[100:]) / len(xs[100:])

    assert failures / healthy < 0.01
    assert mean(dead) < 1.3 * mean(alive)


def test_a_run_of_far_timeouts_backs_off_and_fast_successes_end_it() -> None:
    h = history(*fast(50, median=0.005))
    for _ in range(2):
        h.record_timeout(1.0)
    assert decide(h).seconds == 1.0  # two dead starts in a row: still nothing to learn
    h.record_timeout(1.0)
    third = decide(h)
    assert third.seconds == 2.0  # three: an outage or a slower regime, back off
    h.record_timeout(2.0)
    assert decide(h).seconds == 4.0  # ... climbing while it lasts
    h.record_success(0.005)
    assert decide(h).seconds == 1.0  # fast again: it was an outage


def test_timeouts_alone_only_lengthen_it_geometrically_up_to_the_ceiling() -> None:
    h = TimingHistory(clock=ManualClock())
    seen = []
    for _ in range(12):
        d = decide(h)
        seen.append(d.seconds)
        h.record_timeout(d.seconds)
    assert seen[:8] == [30.0] * 8  # no success yet: the default
    assert seen[8:10] == [60.0, 120.0]  # then growth x the last timeout, to the ceiling
    assert seen[-1] == 120.0
    assert "clamp: ceiling 120s" in decide(h).explanation
    for censored_at in (0.001, 1.0, 4.0):  # however short they are
        h2 = TimingHistory()
        for i in range(12):
            h2.record_timeout(censored_at, at=1000.0 + i)
        d = AdaptiveTimeout(default=10, floor=0.5, ceiling=60).compute(h2)
        assert d.source == "adaptive"
        assert d.seconds >= 10.0, (censored_at, d.explanation)


def test_backoff_rule() -> None:
    # Near the bound (within growth x): counts; far: only at the end of a run.
    assert backoff_from([1.0, 3.0], [False, True], 2.0, 2.0, 1, 3) == 3.0
    assert backoff_from([1.0, 5.0], [False, True], 2.0, 2.0, 1, 3) is None
    assert backoff_from([5.0, 5.0, 5.0], [True] * 3, 2.0, 2.0, 1, 3) == 5.0
    assert backoff_from([5.0, 5.0, 1.0], [True, True, False], 2.0, 2.0, 1, 3) is None
    assert backoff_from([3.0, 1.0, 1.0], [True, False, False], 2.0, 2.0, 3, 3) == 3.0
    assert backoff_from([3.0, 1.0], [True, False], 2.0, 2.0, 0, 3) is None  # patience 0
    # A timeout at a backed-off deadline climbs on, however far it is.
    assert backoff_from([1.0, 3.0, 6.0], [False, True, True], 2.0, 2.0, 1, 3) == 6.0


def test_a_slow_mode_just_beyond_the_deadline_is_found() -> None:
    """6% slow starts at ~3x the body, never seen: the back-off finds them and they stay covered."""

    def draw(rng: random.Random) -> float:
        if rng.random() < 0.06:
            return 2.4 * math.exp(rng.gauss(0, 0.2))
        return 0.8 * math.exp(rng.gauss(0, 0.3))

    healthy, failures, deadlines = replay(draw, 1500, seed=2)
    assert failures / healthy < 0.01
    assert sum(deadlines[-200:]) / 200 > 2.4  # the slow mode is covered at the end


def test_bimodal_cold_starts_seen_are_covered() -> None:
    # A fast body around 0.3 s and a cold start of ~8 s every 20th start (5%).
    rng = random.Random(3)
    samples = [
        8.0 * math.exp(rng.gauss(0, 0.1)) if i % 20 == 7 else 0.3 * math.exp(rng.gauss(0, 0.3))
        for i in range(200)
    ]
    d = decide(history(*samples))
    assert d.seconds >= max(s for s in samples[-100:])
    assert d.seconds < 4 * max(samples)  # the mode is fitted by itself, not with the body


# -- it grows faster than it shrinks ------------------------------------------


def test_it_grows_faster_than_it_shrinks() -> None:
    def steps(first: float, then: float) -> tuple[int, list[float]]:
        rng = random.Random(1)
        clock = ManualClock()
        h = TimingHistory(clock=clock)
        policy = AdaptiveTimeout(clock=clock)
        deadlines = []
        failures = 0
        for i in range(600):
            clock.advance(600)
            t = policy.compute(h, PROD).seconds
            deadlines.append(t)
            x = (first if i < 300 else then) * math.exp(rng.gauss(0, 0.3))
            if x <= t:
                h.record_success(x)
            else:
                h.record_timeout(t)
                failures += i >= 300
        return failures, deadlines

    # Up: 0.5 s -> 5 s. The back-off climbs, then the new successes are covered.
    failures_up, up = steps(0.5, 5.0)
    grow = next(i for i in range(300, 600) if up[i] >= 5.0 * math.exp(0.3 * 2.33)) - 300
    # Down: 5 s -> 0.5 s. The old regime weighs more than the target for long.
    _, down = steps(5.0, 0.5)
    shrink = next(i for i in range(300, 600) if down[i] <= 0.5 * math.exp(0.3 * 2.576) * 3) - 300
    assert grow <= 12
    assert failures_up <= 10
    assert shrink >= 200
    assert shrink > 10 * grow


def test_wall_time_half_life_forgets_old_regimes() -> None:
    clock = ManualClock()
    h = history(*fast(50, median=3.0), clock=clock)
    clock.advance(30 * 86400)  # a month later the database is fast
    for value in fast(10, seed=2, median=0.05):
        clock.advance(60)
        h.record_success(value)
    by_count = decide(h)
    by_time = decide(h, half_life_seconds=86400.0)
    assert by_count.seconds > 3.0  # 10 fast starts are too few to outweigh 50 slow ones
    assert by_time.seconds == 1.0  # a month-old regime weighs 2^-30


# -- shrinking with fast history, clamps ---------------------------------------


def test_fast_healthy_history_shortens_it() -> None:
    samples = fast(40, median=2.0)
    d = decide(history(*samples))
    assert d.source == "adaptive"
    assert max(samples) < d.seconds < 30.0
    assert d.details["clamp"] == "none"


def test_milliseconds_history_is_clamped_at_the_floor() -> None:
    d = decide(history(*fast(50, median=0.004)))
    assert d.seconds == 1.0
    assert d.details["clamp"] == "floor 1s"
    assert "clamp: floor 1s" in d.explanation
    assert decide(history(*fast(50, median=0.004)), DEV).seconds == 0.5


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.floats(min_value=0.0, max_value=30.0, allow_nan=False), min_size=1, max_size=80
    ),
    profile=st.sampled_from(sorted(profiles())),
)
def test_never_longer_than_the_no_data_default_when_every_start_was_within_it(
    samples: list[float], profile: str
) -> None:
    h = history(*samples)
    policy = AdaptiveTimeout(profile=profile, clock=h.clock)
    no_data = policy.compute(TimingHistory(), PROD).seconds
    d = policy.compute(h, PROD)
    assert 1.0 <= d.seconds <= no_data
    assert d.attempt_seconds is not None
    assert d.attempt_seconds <= d.seconds


def test_settings_bounds_clamp_and_explicit_values_win() -> None:
    ctx = TimeoutContext("staging", EnvTimeouts(default=20.0, floor=3.0, ceiling=40.0))
    h = history(*fast(30, median=0.01))
    assert decide(h, ctx).seconds == 3.0
    assert decide(h, ctx, floor=0.25).seconds == 0.25
    slow = history(*fast(30, median=12.0, sigma=0.15))
    assert max(s.seconds or 0.0 for s in slow.ready) < 20.0
    assert decide(slow, ctx).details["raw"] > 20.0  # type: ignore[operator]
    assert decide(slow, ctx).seconds == 20.0  # capped at the no-data default
    assert "no-data default 20s" in decide(slow, ctx).explanation
    h2 = TimingHistory(clock=ManualClock())
    for _ in range(10):
        h2.record_timeout(38.0)
    assert decide(h2, ctx).seconds == 40.0


@pytest.mark.parametrize("kind", ["configuration", "application"])
def test_configuration_and_application_failures_teach_nothing(kind: str) -> None:
    samples = fast(30)
    plain = decide(history(*samples))
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    for i, value in enumerate(samples):
        clock.advance(60)
        h.record_success(value)
        if i % 3 == 0:
            h.record_failure(kind)
    d = AdaptiveTimeout(clock=clock).compute(h, PROD)
    assert d.seconds == plain.seconds
    assert d.details["samples"] == 30


def test_invalid_parameters_are_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="default must be a finite number of seconds > 0"):
        AdaptiveTimeout(default=-1)
    with pytest.raises(ValueError, match="floor must be a finite number of seconds"):
        AdaptiveTimeout(floor=math.nan)
    with pytest.raises(ValueError, match=r"floor \(5s\) is above ceiling \(2s\)"):
        AdaptiveTimeout(floor=5, ceiling=2)
    with pytest.raises(TypeError, match="ceiling must be a number of seconds"):
        AdaptiveTimeout(ceiling=True)
    with pytest.raises(ValueError, match="min_samples must be an integer >= 1"):
        AdaptiveTimeout(min_samples=0)
    with pytest.raises(ValueError, match=r"target must be a number > 0 and < 0\.5"):
        AdaptiveTimeout(target=0.0)
    with pytest.raises(ValueError, match="confidence must be in"):
        AdaptiveTimeout(confidence=0.3)
    with pytest.raises(ValueError, match="confidence must be a number"):
        AdaptiveTimeout(confidence=1.0)
    with pytest.raises(ValueError, match="half_life must be a number > 0"):
        AdaptiveTimeout(half_life=0)
    with pytest.raises(ValueError, match="tail_samples must be a number >= 4"):
        AdaptiveTimeout(tail_samples=2)
    with pytest.raises(ValueError, match="growth must be a number >= 1"):
        AdaptiveTimeout(growth=0.5)
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        AdaptiveTimeout(patience=-1)
    with pytest.raises(ValueError, match="run must be an integer >= 1"):
        AdaptiveTimeout(run=0)
    with pytest.raises(TypeError, match="prior_sigma must be a number"):
        AdaptiveTimeout(prior_sigma="1")  # type: ignore[arg-type]
    ctx = TimeoutContext("production", EnvTimeouts(default=30.0, floor=1.0, ceiling=120.0))
    with pytest.raises(ValueError, match="above ceiling"):
        AdaptiveTimeout(floor=200).compute(TimingHistory(), ctx)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, -math.inf])
def test_history_rejects_negative_or_nan_seconds(bad: float) -> None:
    h = TimingHistory(clock=ManualClock())
    for record in (h.record_success, h.record_timeout, h.record_attempt):
        with pytest.raises(ValueError, match="finite number of seconds >= 0"):
            record(bad)
    assert len(h) == 0


# -- infrastructure profiles ---------------------------------------------------


def test_the_cloud_profiles_come_from_the_database_plugin() -> None:
    names = [p.name for p in PROFILES]
    assert "cloudsql-vpc-connector" in names
    assert next(iter(profiles())) == "none"
    assert set(names) <= set(profiles())


def test_profile_adds_its_cold_start_allowance() -> None:
    vpc = resolve_profile("cloudsql-vpc-connector")
    assert vpc.cold_start > 0
    assert vpc.description
    empty = decide(history(), profile="cloudsql-vpc-connector")
    assert empty.seconds == 30.0 + vpc.cold_start
    assert "profile cloudsql-vpc-connector" in empty.explanation
    samples = fast(40, median=2.0)
    plain = decide(history(*samples))
    with_profile = decide(history(*samples), profile="cloudsql-vpc-connector")
    assert with_profile.seconds == pytest.approx(plain.seconds + vpc.cold_start)
    assert with_profile.details["profile_allowance"] == vpc.cold_start


def test_profile_comes_from_the_context_and_unknown_names_are_refused() -> None:
    ctx = TimeoutContext("production", PROD.bounds, profile="aurora-serverless")
    assert decide(history(), ctx).seconds == 60.0
    custom = InfrastructureProfile("mine", cold_start=2.0, attempt=1.0, description="ours")
    assert decide(history(), ctx, profile=custom).seconds == 32.0
    with pytest.raises(ValueError, match="unknown infrastructure profile 'vpc'; accepted: none"):
        AdaptiveTimeout(profile="vpc")
    with pytest.raises(ValueError, match="unknown infrastructure profile"):
        decide(history(), TimeoutContext("production", PROD.bounds, profile="nope"))
    with pytest.raises(ValueError, match="cold_start must be a finite number >= 0"):
        InfrastructureProfile("bad", cold_start=-1.0, attempt=0.0, description="")


# -- the per-attempt deadline --------------------------------------------------


def test_attempt_deadline_comes_from_the_attempt_series() -> None:
    clock = ManualClock()
    h = history(*fast(20, median=5.0), clock=clock)
    no_attempts = decide(h)
    assert no_attempts.attempt_seconds == no_attempts.seconds
    for value in fast(20, median=2.0):
        h.record_attempt(value)
    d = decide(h)
    assert d.seconds == no_attempts.seconds  # attempts do not change the overall deadline
    assert d.attempt_seconds is not None
    assert 2.0 < d.attempt_seconds < d.seconds
    assert "bound of q99.5" in str(d.details["attempt_statistic"])
    with_profile = decide(h, profile="cloudsql-connector")
    assert with_profile.attempt_seconds == pytest.approx(d.attempt_seconds + 3.0)


def test_attempt_deadline_never_exceeds_the_overall_one() -> None:
    clock = ManualClock()
    h = history(*fast(20, median=0.01), clock=clock)
    for _ in range(20):
        h.record_attempt(5.0)
    d = decide(h)
    assert d.attempt_seconds == d.seconds == 1.0


# -- settings and the public module -------------------------------------------


def test_from_settings_uses_the_environment_bounds_and_profile() -> None:
    s = Settings(
        environment=Environment.DEVELOPMENT,
        timeouts=TimeoutSettings(profile="proxy-sidecar", min_samples=4),
    )
    policy = AdaptiveTimeout.from_settings(s)
    assert (policy.default, policy.floor, policy.ceiling, policy.min_samples) == (
        10.0,
        0.5,
        60.0,
        4,
    )
    assert policy.compute(TimingHistory()).seconds == 15.0
    # 1 ms starts: the profile's 5 s is added to the learned value, then clamped.
    learned = policy.compute(history(*fast(4, median=0.001)))
    assert 5.0 < learned.seconds < 5.1


def test_fixed_timeout_is_re_exported_and_ignores_history() -> None:
    d = FixedTimeout(5).compute(history(*fast(30)))
    assert (d.seconds, d.source) == (5.0, "fixed")


# -- exploration: timeouts beyond every success, dead or a slow mode not reached yet --


def _doubtful(clock: ManualClock | None = None) -> TimingHistory:
    """A 1 s body with 10% of its starts timed out at 2 s: dead, or a slow mode beyond 2 s."""
    clock = clock or ManualClock()
    h = TimingHistory(clock=clock)
    for i, x in enumerate(fast(200, seed=3, median=1.0, sigma=0.2)):
        clock.advance(60)
        h.record_success(x)
        if i % 10 == 0:
            clock.advance(60)
            h.record_timeout(2.0)
    return h


def test_exploration_spends_the_budget_on_a_share_of_starts_and_is_a_pure_function() -> None:
    policy = AdaptiveTimeout(explore_budget=2.0, explore_growth=4.0)
    plain = AdaptiveTimeout(explore_budget=0.0)
    explored = 0
    trials = 300
    shares = set()
    for i in range(trials):
        h = _doubtful()
        h.record_success(1.0 + i * 1e-6)  # a different newest sample: a different draw
        base = plain.compute(h, PROD)
        assert base.details["explore"] is False
        assert "explore_share" not in base.details
        d = policy.compute(h, PROD)
        assert policy.compute(h, PROD) == d  # the same history, the same decision
        share = float(d.details["explore_share"])  # type: ignore[arg-type]
        shares.add(round(share, 9))
        levels = [float(e) for e in d.details["explore_levels"]]  # type: ignore[attr-defined]
        parts = [float(x) for x in d.details["explore_shares"]]  # type: ignore[attr-defined]
        # A doubling search (x4 here) from the deadline up to the no-data default.
        assert levels[0] == pytest.approx(4.0 * base.seconds)
        assert levels[-1] == 30.0
        assert all(b == pytest.approx(4 * a) for a, b in pairwise(levels[:-1]))
        # The last step to the default is more than half a step (x2) and at most 1.5 (x8).
        assert 2 * levels[-2] < 30.0 <= 8 * levels[-2]
        assert sum(parts) == pytest.approx(share)
        # If the timeouts are dead, the mean deadline stays within the budget.
        budget = float(d.details["explore_budget_s"])  # type: ignore[arg-type]
        spent = sum(x * (e - base.seconds) for x, e in zip(parts, levels, strict=True))
        assert base.seconds + spent == pytest.approx(budget)
        if d.details["explore"]:
            explored += 1
            assert d.seconds in levels
            assert d.seconds == d.details["explore_seconds"]
            assert "exploring" in d.explanation
        else:
            assert d.seconds == base.seconds
            assert "exploring" not in d.explanation
    (share,) = shares  # the newest sample moves the draw, not the share
    assert 0.05 < share < 1.0
    assert abs(explored / trials - share) < 4 * math.sqrt(share * (1 - share) / trials)


def test_exploration_is_capped_at_the_no_data_default() -> None:
    ctx = TimeoutContext("production", EnvTimeouts(default=3.0, floor=0.1, ceiling=120.0))
    policy = AdaptiveTimeout(explore_budget=2.0, explore_growth=50.0)
    seen = set()
    for i in range(100):
        h = _doubtful()
        h.record_success(1.0 + i * 1e-6)
        d = policy.compute(h, ctx)
        if d.details["explore"]:
            seen.add(d.seconds)
    assert seen == {3.0}


def test_no_exploration_without_doubt_or_without_budget() -> None:
    clock = ManualClock()
    h = history(*fast(200, seed=4, median=1.0, sigma=0.2), clock=clock)
    policy = AdaptiveTimeout(clock=clock, explore_budget=2.0)
    d = policy.compute(h, PROD)
    assert d.details["explore"] is False
    assert "explore_share" not in d.details
    # A fast body at the floor with dead starts: nothing to spend, whatever the draw.
    for i in range(100):
        h = TimingHistory(clock=clock)
        for j, x in enumerate(fast(200, seed=5, median=0.01, sigma=0.3)):
            clock.advance(60)
            h.record_success(x)
            if j % 10 == 0:
                h.record_timeout(1.0)
        h.record_success(0.01 + i * 1e-7)
        d = policy.compute(h, PROD)
        assert d.details["explore_share"] == 0.0
        assert d.seconds == 1.0


def test_exploration_finds_a_slow_mode_that_looks_like_dead_starts() -> None:
    # A 1 s body and 10% slow starts around 8 s, never seen: every one of them
    # timed out at ~2 s, exactly like a dead start.
    def draw(rng: random.Random) -> float | None:
        return (
            8.0 * math.exp(rng.gauss(0, 0.1))
            if rng.random() < 0.1
            else 1.0 * math.exp(rng.gauss(0, 0.2))
        )

    def run(seed: int, **kw: object) -> tuple[float, bool]:
        """(false-failure rate, whether a slow start ever succeeded)."""
        clock = ManualClock()
        h = _doubtful(clock)
        policy = AdaptiveTimeout(clock=clock, **kw)  # type: ignore[arg-type]
        rng = random.Random(seed)
        failures = 0
        caught = False
        for _ in range(400):
            clock.advance(600)
            t = policy.compute(h, PROD).seconds
            x = draw(rng)
            assert x is not None
            if x <= t:
                h.record_success(x)
                caught = caught or x > 4.0
            else:
                failures += 1
                h.record_timeout(t)
        return failures / 400, caught

    seeds = range(11, 19)
    blind = [run(s, explore_budget=0.0) for s in seeds]
    exploring = [run(s, explore_budget=2.0, explore_growth=2.0) for s in seeds]
    # Blind, the mode stays written off as dead starts (the back-off's one
    # start at 2x the deadline rarely reaches 8 s); exploring, most runs catch it.
    assert sum(caught for _ff, caught in blind) <= 2
    assert sum(caught for _ff, caught in exploring) >= 6
    assert sum(ff for ff, _c in exploring) < 0.6 * sum(ff for ff, _c in blind)
