"""The bypass matrix: every cell, every condition on both sides, overrides, force, docs."""

from __future__ import annotations

import math
import time
from collections.abc import MutableMapping
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from structlog.testing import capture_logs

from smd import (
    Environment,
    Failure,
    FailureKind,
    PhaseContext,
    PhaseError,
    Report,
    SettingsError,
    Startup,
    StartupFailed,
    load_settings,
    run_startup,
)
from smd._cli_plan import plan_document
from smd.bypass import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MODES,
    Action,
    BypassMatrix,
    BypassMode,
    BypassPolicy,
    Condition,
    Decision,
    DecisionContext,
    StrictPolicy,
    apply_force,
    decide,
    success_rate,
    wilson_lower_bound,
)
from smd.clock import ManualClock
from smd.history import MemoryHistoryStore, SQLiteHistoryStore, target_key
from smd.settings import BypassSettings, Settings
from smd.timeouts import TimingHistory

HOUR = 3600.0
ENVS = list(Environment)
KINDS = list(FailureKind)
DEFAULT_CELL = {
    Environment.PRODUCTION: "fail",
    Environment.STAGING: "conditional",
    Environment.DEVELOPMENT: "continue",
    Environment.TEST: "fail",
}
MODE_CELL = {
    BypassMode.STRICT: "fail",
    BypassMode.PERMISSIVE: "continue",
    BypassMode.CONDITIONAL: "conditional",
}
HEALING = {FailureKind.INFRASTRUCTURE, FailureKind.TIMEOUT}


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray SMD_* variable, .env, smd.toml or pyproject.toml may leak in."""
    import os

    for name in list(os.environ):
        if name.startswith("SMD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def healthy(clock: ManualClock, n: int = 8, spacing: float = HOUR) -> TimingHistory:
    """``n`` successful starts, ``spacing`` apart, the last one ``spacing`` ago."""
    h = TimingHistory(clock=clock)
    for _ in range(n):
        h.record_success(0.5)
        clock.advance(spacing)
    return h


def ctx(
    env: Environment | str,
    history: TimingHistory | None = None,
    *,
    essential: bool = False,
    clock: ManualClock | None = None,
    settings: BypassSettings | None = None,
) -> DecisionContext:
    env_name = env.value if isinstance(env, Environment) else env
    return DecisionContext(
        phase="db",
        environment=env_name,
        essential=essential,
        target="db@x",
        history=history,
        clock=clock,
        settings=settings if settings is not None else BypassSettings(),
    )


def failure(kind: FailureKind) -> Failure:
    return Failure(kind, f"synthetic {kind.value} failure")


def cond(decision: Decision, name: str) -> Condition:
    for c in decision.conditions:
        if c.name == name:
            return c
    raise AssertionError(f"no condition {name!r} in {decision!r}")


def failing_startup(kind: FailureKind, **phase: Any) -> Startup:
    """A startup ``svc`` whose one phase ``db`` fails with ``kind``."""
    startup = Startup("svc")

    @startup.phase(name="db", **phase)
    async def db(ctx: PhaseContext) -> None:
        raise PhaseError(failure(kind))

    return startup


async def real_run(
    startup: Startup, settings: Settings, store: MemoryHistoryStore | None = None
) -> tuple[Report, list[MutableMapping[str, Any]]]:
    """Run ``startup`` for real; its report (failed or not) and the bypass log lines."""
    with capture_logs() as logs:
        try:
            report = await run_startup(
                startup, settings=settings, store=store or MemoryHistoryStore()
            )
        except StartupFailed as err:
            report = err.report
    return report, [e for e in logs if str(e["event"]).startswith("smd.bypass.")]


# ------------------------------------------------------------------ every cell


def test_matrix_is_a_bypass_policy() -> None:
    assert isinstance(BypassMatrix(), BypassPolicy)


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("env", ENVS, ids=str)
def test_default_cell_and_decision(env: Environment, kind: FailureKind) -> None:
    clock = ManualClock()
    history = healthy(clock)
    matrix = BypassMatrix()
    assert matrix.cell(env, kind) == DEFAULT_CELL[env]
    assert matrix.explain_cell(env, kind) == (DEFAULT_CELL[env], "default")
    assert matrix.mode(env) is DEFAULT_MODES[env]

    d = matrix.decide(failure(kind), ctx(env, history, clock=clock))

    cell = DEFAULT_CELL[env]
    expected = (
        Action.CONTINUE
        if cell == "continue" or (cell == "conditional" and kind in HEALING)
        else Action.FAIL
    )
    assert d.action is expected
    assert d.mode == DEFAULT_MODES[env].value
    assert not d.forced
    # A complete sentence naming the mode, the cell and the verdict.
    assert f"({env.value}, {kind.value}) is '{cell}'" in d.reason
    assert f"{d.mode} mode" in d.reason
    assert d.reason.startswith("Startup stops" if expected is Action.FAIL else "Startup continues")
    assert d.reason.endswith(".")
    if cell == "conditional":
        assert [c.name for c in d.conditions] == [
            "kind_allowed",
            "not_essential",
            "success_rate",
            "consecutive_degraded",
        ]
        assert cond(d, "kind_allowed").holds is (kind in HEALING)
    else:
        assert d.conditions == ()


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("env", ENVS, ids=str)
@pytest.mark.parametrize("mode", list(BypassMode), ids=str)
def test_forced_mode_sets_every_cell(mode: BypassMode, env: Environment, kind: FailureKind) -> None:
    matrix = BypassMatrix.from_settings(load_settings(bypass={"mode": mode.value}))
    assert matrix.mode(env) is mode
    assert matrix.explain_cell(env, kind) == (MODE_CELL[mode], "mode")
    clock = ManualClock()
    d = matrix.decide(failure(kind), ctx(env, healthy(clock), clock=clock))
    assert d.mode == mode.value
    if mode is BypassMode.STRICT:
        assert d.action is Action.FAIL
    elif mode is BypassMode.PERMISSIVE:
        assert d.action is Action.CONTINUE
    else:
        assert d.action is (Action.CONTINUE if kind in HEALING else Action.FAIL)
    assert "SMD_BYPASS__MODE" in d.reason


def test_forced_mode_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__MODE", "Permissive")
    matrix = BypassMatrix.from_settings(load_settings())
    assert all(matrix.cell(e, k) == "continue" for e in ENVS for k in KINDS)


def test_mode_argument_in_code() -> None:
    matrix = BypassMatrix(mode="strict")
    assert matrix.cell("development", "infrastructure") == "fail"
    with pytest.raises(SettingsError, match="unknown bypass mode 'lenient'"):
        BypassMatrix(mode="lenient")


# ------------------------------------------------------------------ force


FORCE = BypassSettings(force_continue=True)


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize("env", ENVS, ids=str)
def test_force_continue(env: Environment, kind: FailureKind) -> None:
    with capture_logs() as logs:
        d = decide(BypassMatrix(), failure(kind), ctx(env, settings=FORCE))
    assert logs == []  # deciding logs nothing; the run's log observer does
    normal = decide(BypassMatrix(), failure(kind), ctx(env))
    assert not normal.forced
    # The matrix itself knows nothing of the override: decide() applies it.
    assert BypassMatrix().decide(failure(kind), ctx(env, settings=FORCE)) == normal
    if env is Environment.PRODUCTION:
        assert d.action is normal.action is Action.FAIL
        assert not d.forced
        refused = cond(d, "force_continue")
        assert refused.holds is False
        assert "refused in production" in d.reason
        assert "SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION" in d.reason
    else:
        assert d.action is Action.CONTINUE
        assert d.forced
        assert cond(d, "force_continue").holds is True
        assert d.reason.startswith("Startup continues degraded because force continue is set")
        assert f"own verdict was {normal.action.value}" in d.reason


@pytest.mark.parametrize("env", ENVS, ids=str)
async def test_force_continue_is_logged_by_a_real_run(env: Environment) -> None:
    kind = FailureKind.CONFIGURATION  # only development bypasses it without the override
    settings = load_settings(environment=env.value, bypass={"force_continue": True})
    report, logs = await real_run(failing_startup(kind), settings)
    normal = decide(BypassMatrix(), failure(kind), ctx(env))
    events = [(e["event"], e["log_level"]) for e in logs]
    decided = logs[-1]
    assert decided["event"] == "smd.bypass.decided"
    assert (decided["phase"], decided["kind"], decided["environment"]) == (
        "db",
        kind.value,
        env.value,
    )
    if env is Environment.PRODUCTION:
        assert events == [("smd.bypass.force_refused", "warning"), ("smd.bypass.decided", "info")]
        assert logs[0]["action"] == "fail"
        assert (decided["action"], decided["forced"]) == ("fail", False)
        assert report.phase("db").outcome.value == "failed"
    else:
        assert events == [("smd.bypass.forced", "warning"), ("smd.bypass.decided", "info")]
        # The warning says what the override overrode.
        assert f"own verdict was {normal.action.value}" in logs[0]["reason"]
        assert (decided["action"], decided["forced"]) == ("continue", True)
        assert report.phase("db").outcome.value == "bypassed"
        decision = report.phase("db").decision
        assert decision is not None
        assert decision.forced


async def test_force_in_production_with_the_second_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMD_BYPASS__FORCE_CONTINUE", "true")
    monkeypatch.setenv("SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION", "true")
    settings = load_settings(environment="production")
    d = decide(
        BypassMatrix(),
        failure(FailureKind.CONFIGURATION),
        ctx("production", settings=settings.bypass),
    )
    assert d.action is Action.CONTINUE
    assert d.forced
    assert "SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION" in d.reason
    report, logs = await real_run(failing_startup(FailureKind.CONFIGURATION), settings)
    assert [e["event"] for e in logs] == ["smd.bypass.forced", "smd.bypass.decided"]
    assert report.phase("db").outcome.value == "bypassed"
    assert report.state.value == "degraded"


def test_apply_force_wraps_any_policy() -> None:
    c = ctx("staging", settings=FORCE)
    f = failure(FailureKind.APPLICATION)
    with capture_logs() as logs:
        d = apply_force(StrictPolicy().decide(f, c), c)
        via_decide = decide(StrictPolicy(), f, c)
    assert logs == []
    assert d.action is via_decide.action is Action.CONTINUE
    assert d.forced
    assert via_decide.forced
    plain = ctx("staging")
    assert apply_force(StrictPolicy().decide(f, plain), plain).action is Action.FAIL
    assert decide(StrictPolicy(), f, plain).action is Action.FAIL


def test_a_policy_that_raises_fails_safe() -> None:
    class Broken:
        def decide(self, failure: Failure, context: DecisionContext) -> Decision:
            raise RuntimeError("policy bug")

    d = decide(Broken(), failure(FailureKind.INFRASTRUCTURE), ctx("development"))
    assert d.action is Action.FAIL
    assert "raised RuntimeError: policy bug; failing safe" in d.reason
    # The manual override still applies to a broken policy (it exists for emergencies).
    forced = decide(Broken(), failure(FailureKind.INFRASTRUCTURE), ctx("staging", settings=FORCE))
    assert forced.action is Action.CONTINUE
    assert forced.forced


def test_deciding_logs_nothing() -> None:
    """The run logs smd.bypass.decided once for every policy; deciding itself must not log."""
    clock = ManualClock()
    with capture_logs() as logs:
        for env in ENVS:
            for settings in (BypassSettings(), FORCE):
                c = ctx(env, healthy(clock), clock=clock, settings=settings)
                BypassMatrix().decide(failure(FailureKind.TIMEOUT), c)
                decide(BypassMatrix(), failure(FailureKind.TIMEOUT), c)
    assert logs == []


async def test_decided_log_fields_from_a_real_run() -> None:
    # A healthy past (eight good starts, the last an hour ago) under the key the run uses.
    store = MemoryHistoryStore()
    clock = ManualClock(start=time.time() - 8 * HOUR)
    store.append(target_key("svc", "phase:db", "staging"), healthy(clock).all_samples())
    settings = load_settings(environment="staging")
    report, logs = await real_run(failing_startup(FailureKind.TIMEOUT), settings, store)
    (decided,) = logs
    assert decided["event"] == "smd.bypass.decided"
    assert decided["log_level"] == "info"
    assert decided["phase"] == "db"
    assert decided["environment"] == "staging"
    assert decided["target"] == "svc/phase:db@staging"
    assert decided["mode"] == "conditional"
    assert decided["kind"] == "timeout"
    assert decided["action"] == "continue"
    assert decided["forced"] is False
    decision = report.phase("db").decision
    assert decision is not None
    assert decided["reason"] == decision.reason
    conditions = decided["conditions"]
    assert isinstance(conditions, list)
    assert [c["name"] for c in conditions] == [
        "kind_allowed",
        "not_essential",
        "success_rate",
        "consecutive_degraded",
    ]
    assert all(c["holds"] is True for c in conditions)
    assert [c["detail"] for c in conditions] == [c.detail for c in decision.conditions]
    assert report.phase("db").outcome.value == "bypassed"


# ------------------------------------------------------------------ conditions


def test_kind_allowed_both_sides_and_custom_set() -> None:
    clock = ManualClock()
    h = healthy(clock)
    c = ctx("staging", h, clock=clock)
    m = BypassMatrix()
    ok = m.decide(failure(FailureKind.INFRASTRUCTURE), c)
    bad = m.decide(failure(FailureKind.CONFIGURATION), c)
    assert ok.action is Action.CONTINUE
    assert bad.action is Action.FAIL
    k = cond(bad, "kind_allowed")
    # Frozen values hold a tuple; the serialised decision a list.
    assert (k.holds, k.value, k.threshold) == (
        False,
        "configuration",
        ("infrastructure", "timeout"),
    )
    encoded_conditions = bad.to_dict()["conditions"]
    assert isinstance(encoded_conditions, list)
    (encoded,) = [c for c in encoded_conditions if c["name"] == "kind_allowed"]
    assert encoded["threshold"] == ["infrastructure", "timeout"]
    assert "kind configuration is not in the allowed kinds" in bad.reason
    # Only kind_allowed failed, so the reason names exactly one failed condition.
    assert "fails 1 of its 4 conditions" in bad.reason

    custom = BypassMatrix(BypassSettings(allowed_kinds=frozenset({FailureKind.CONFIGURATION})))
    assert custom.decide(failure(FailureKind.CONFIGURATION), c).action is Action.CONTINUE
    assert custom.decide(failure(FailureKind.INFRASTRUCTURE), c).action is Action.FAIL


def test_not_essential_both_sides() -> None:
    clock = ManualClock()
    h = healthy(clock)
    m = BypassMatrix()
    f = failure(FailureKind.INFRASTRUCTURE)
    assert m.decide(f, ctx("staging", h, clock=clock)).action is Action.CONTINUE
    d = m.decide(f, ctx("staging", h, clock=clock, essential=True))
    assert d.action is Action.FAIL
    e = cond(d, "not_essential")
    assert (e.holds, e.value) == (False, True)
    assert "phase 'db' is marked essential" in d.reason


def test_success_rate_both_sides_of_the_threshold() -> None:
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    for ok in (True, True, False, True, True, True, False, True):
        h.record_success(1.0) if ok else h.record_timeout(5.0)
        clock.advance(60)
    rate = success_rate(h, clock.wall(), BypassSettings().success_half_life_hours)
    assert rate.lower_bound is not None
    lb = rate.lower_bound
    assert 0.3 < lb < 0.9
    f = failure(FailureKind.INFRASTRUCTURE)
    above = BypassMatrix(BypassSettings(min_success_rate=round(lb - 0.01, 4)))
    below = BypassMatrix(BypassSettings(min_success_rate=round(lb + 0.01, 4)))
    d_ok = above.decide(f, ctx("staging", h, clock=clock))
    d_bad = below.decide(f, ctx("staging", h, clock=clock))
    assert d_ok.action is Action.CONTINUE
    assert d_bad.action is Action.FAIL
    c = cond(d_bad, "success_rate")
    assert c.holds is False
    assert c.value == round(lb, 4)
    assert c.threshold == round(lb + 0.01, 4)
    assert f"lower bound {lb:.2f} is below" in d_bad.reason
    assert "6 of 8 past starts succeeded" in d_bad.reason


def test_recent_failures_fail_the_success_rate() -> None:
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    for _ in range(6):
        h.record_failure("infrastructure")
        clock.advance(60)
    h.record_success(1.0)
    d = BypassMatrix().decide(failure(FailureKind.TIMEOUT), ctx("staging", h, clock=clock))
    assert d.action is Action.FAIL
    assert cond(d, "success_rate").holds is False


def test_consecutive_degraded_both_sides_and_reset_by_a_success() -> None:
    clock = ManualClock()
    h = healthy(clock, n=12, spacing=60)
    f = failure(FailureKind.INFRASTRUCTURE)
    m = BypassMatrix()
    for _ in range(2):
        h.record_bypass()
        clock.advance(60)
    d = m.decide(f, ctx("staging", h, clock=clock))
    assert d.action is Action.CONTINUE
    assert (cond(d, "consecutive_degraded").value, cond(d, "consecutive_degraded").holds) == (
        2,
        True,
    )
    h.record_bypass()
    clock.advance(60)
    d = m.decide(f, ctx("staging", h, clock=clock))
    assert d.action is Action.FAIL
    c = cond(d, "consecutive_degraded")
    assert (c.value, c.threshold, c.holds) == (3, 3, False)
    assert (
        "3 consecutive degraded startups since the last success reached the limit of 3" in d.reason
    )
    h.record_success(2.0)  # e.g. a recovery: the streak starts over
    clock.advance(60)
    assert m.decide(f, ctx("staging", h, clock=clock)).action is Action.CONTINUE


def test_limit_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__MAX_CONSECUTIVE_DEGRADED", "1")
    m = BypassMatrix.from_settings(load_settings())
    clock = ManualClock()
    h = healthy(clock)
    h.record_bypass()
    d = m.decide(failure(FailureKind.INFRASTRUCTURE), ctx("staging", h, clock=clock))
    assert d.action is Action.FAIL


# ------------------------------------------------------------------ no data, decay


@pytest.mark.parametrize("history", [None, "empty"])
def test_no_history_is_no_evidence(history: str | None) -> None:
    clock = ManualClock()
    h = TimingHistory(clock=clock) if history == "empty" else None
    d = BypassMatrix().decide(failure(FailureKind.INFRASTRUCTURE), ctx("staging", h, clock=clock))
    assert d.action is Action.FAIL
    c = cond(d, "success_rate")
    assert (c.holds, c.value, c.threshold) == (False, None, 0.5)
    assert "no history" in c.detail
    # The other three conditions hold: the no-data rule alone decided.
    assert "fails 1 of its 4 conditions" in d.reason
    rate = success_rate(h, clock.wall(), 24.0)
    assert (rate.total, rate.estimate, rate.lower_bound, rate.effective_n) == (0, None, None, 0.0)


def test_one_success_proves_less_than_no_data_would_need() -> None:
    """The documented reason for refusing the benefit of the doubt: one success is weak evidence."""
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    h.record_success(1.0)
    rate = success_rate(h, clock.wall(), 24.0)
    assert rate.lower_bound == pytest.approx(1 / (1 + 1.2815515655446004**2))
    assert rate.lower_bound is not None
    assert rate.lower_bound < 0.5


def test_an_old_failure_does_not_dominate_recent_successes() -> None:
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    h.record_failure("infrastructure")
    clock.advance(10 * 24 * HOUR)  # ten half-lives later
    for _ in range(3):
        h.record_success(1.0)
        clock.advance(600)
    f = failure(FailureKind.INFRASTRUCTURE)
    decayed = BypassMatrix().decide(f, ctx("staging", h, clock=clock))
    assert decayed.action is Action.CONTINUE
    rate = success_rate(h, clock.wall(), 24.0)
    assert rate.total == 4
    assert rate.successes == 3
    assert rate.estimate is not None
    assert rate.estimate > 0.999
    # Without decay (a half-life far longer than the history) the same
    # failure drags the bound below the threshold: decay is what decides.
    flat = BypassMatrix(BypassSettings(success_half_life_hours=1e9))
    assert flat.decide(f, ctx("staging", h, clock=clock)).action is Action.FAIL


def test_decay_weights_and_future_samples() -> None:
    clock = ManualClock()
    h = TimingHistory(clock=clock)
    now = clock.wall()
    h.record_success(1.0, at=now - 24 * HOUR)  # one half-life: weight 0.5
    h.record_timeout(5.0, at=now - 48 * HOUR)  # two: weight 0.25
    h.record_success(1.0, at=now + 3600)  # clock skew: counts as new (1.0), not more
    rate = success_rate(h, now, 24.0)
    assert rate.effective_n == pytest.approx(1.75)
    assert rate.estimate == pytest.approx(1.5 / 1.75)
    assert rate.lower_bound == pytest.approx(wilson_lower_bound(1.5, 1.75))


@pytest.mark.parametrize(
    ("half_life", "every_hours", "qualifies"),
    [(24, 16, True), (24, 24, False), (72, 24, True), (168, 168, False)],
)
def test_documented_restart_cadence(half_life: float, every_hours: float, qualifies: bool) -> None:
    """DEFAULT_CONFIDENCE's docstring: which cadences a perfect record qualifies at."""
    clock = ManualClock()
    h = healthy(clock, n=60, spacing=every_hours * HOUR)
    m = BypassMatrix(BypassSettings(success_half_life_hours=half_life))
    d = m.decide(failure(FailureKind.INFRASTRUCTURE), ctx("staging", h, clock=clock))
    assert cond(d, "success_rate").holds is qualifies


def test_wilson_lower_bound_matches_the_textbook_form() -> None:
    z = 1.2815515655446004
    for s, n in [(8, 10), (1, 1), (0, 5), (50, 50), (3, 7)]:
        p = s / n
        textbook = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (
            1 + z * z / n
        )
        assert wilson_lower_bound(s, n) == pytest.approx(max(0.0, textbook))
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(1e-300, 1e-300) == pytest.approx(0.0, abs=1e-12)
    assert wilson_lower_bound(8, 10, 0.99) < wilson_lower_bound(8, 10, 0.8)
    with pytest.raises(ValueError, match="confidence"):
        wilson_lower_bound(1, 2, 1.0)


def test_now_comes_from_the_context_clock_else_the_history_clock() -> None:
    clock = ManualClock()
    h = healthy(clock, n=4, spacing=60)
    f = failure(FailureKind.INFRASTRUCTURE)
    fresh = BypassMatrix().decide(f, ctx("staging", h))  # history clock: recent
    assert fresh.action is Action.CONTINUE
    later = ManualClock(start=clock.wall() + 30 * 24 * HOUR)  # a month on: evidence faded
    stale = BypassMatrix().decide(f, ctx("staging", h, clock=later))
    assert stale.action is Action.FAIL
    assert cond(stale, "success_rate").holds is False


# ------------------------------------------------------------------ overrides


def test_cell_override_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__PRODUCTION__INFRASTRUCTURE", "continue")
    monkeypatch.setenv("SMD_BYPASS__DEVELOPMENT__CONFIGURATION", "fail")
    monkeypatch.setenv("SMD_BYPASS__TEST__TIMEOUT", "conditional")
    m = BypassMatrix.from_settings(load_settings())
    assert m.explain_cell("production", "infrastructure") == ("continue", "settings")
    assert m.cell("production", "timeout") == "fail"  # neighbours untouched
    assert m.cell("development", "configuration") == "fail"
    assert m.cell("test", "timeout") == "conditional"
    d = m.decide(failure(FailureKind.INFRASTRUCTURE), ctx("production"))
    assert d.action is Action.CONTINUE
    assert d.mode == "strict"
    assert "SMD_BYPASS__PRODUCTION__INFRASTRUCTURE" in d.reason
    d = m.decide(failure(FailureKind.CONFIGURATION), ctx("development"))
    assert d.action is Action.FAIL


def test_cell_override_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.smd.bypass]\nmode = "permissive"\n[tool.smd.bypass.staging]\nunknown = "fail"\n'
    )
    m = BypassMatrix.from_settings(load_settings())
    assert m.cell("staging", "unknown") == "fail"
    assert m.explain_cell("staging", "timeout") == ("continue", "mode")


def test_cell_override_in_code_and_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__MODE", "strict")
    monkeypatch.setenv("SMD_BYPASS__STAGING__TIMEOUT", "continue")
    settings = load_settings()
    m = BypassMatrix.from_settings(
        settings,
        overrides={
            "staging": {"timeout": "fail", "unknown": "continue"},
            "*": {"application": "conditional"},
        },
    )
    assert m.explain_cell("staging", "timeout") == ("fail", "code")  # code beats settings
    assert m.explain_cell("staging", "unknown") == ("continue", "code")
    assert m.explain_cell("production", "infrastructure") == ("fail", "mode")
    assert all(m.explain_cell(e, "application") == ("conditional", "code") for e in ENVS)
    assert BypassMatrix.from_settings(settings).explain_cell("staging", "timeout") == (
        "continue",
        "settings",
    )
    d = m.decide(failure(FailureKind.UNKNOWN), ctx("staging"))
    assert d.action is Action.CONTINUE
    assert "overridden in code" in d.reason


def test_flat_override_applies_to_every_environment() -> None:
    m = BypassMatrix(overrides={"infrastructure": "continue", FailureKind.TIMEOUT: Action.CONTINUE})
    assert all(m.cell(e, "infrastructure") == "continue" for e in ENVS)
    assert all(m.cell(e, "timeout") == "continue" for e in ENVS)
    assert m.cell("production", "configuration") == "fail"


def test_unknown_kind_override_in_settings_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMD_BYPASS__PRODUCTION__INFRA", "continue")
    with pytest.raises(SettingsError, match="SMD_BYPASS__PRODUCTION__INFRA") as err:
        load_settings()
    assert "infrastructure" in str(err.value)  # says what it accepts


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"production": {"infra": "continue"}}, "unknown failure kind 'infra'"),
        ({"infra": "continue"}, "unknown failure kind 'infra'"),
        ({"prod": {"timeout": "continue"}}, "unknown environment 'prod'"),
        ({"production": {"timeout": "maybe"}}, "unknown cell action 'maybe'"),
        ({"production": 3}, "expected a mapping"),
    ],
)
def test_bad_override_in_code_names_it(overrides: dict[object, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        BypassMatrix(overrides=overrides)


def test_unknown_environment_in_context() -> None:
    with pytest.raises(SettingsError, match="unknown environment 'moon'"):
        BypassMatrix().decide(failure(FailureKind.UNKNOWN), ctx("moon"))


async def test_per_phase_matrix_reads_the_run_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    phase_matrix = BypassMatrix(overrides={"production": {"timeout": "continue"}})
    monkeypatch.setenv("SMD_BYPASS__FORCE_CONTINUE", "true")
    monkeypatch.setenv("SMD_BYPASS__STAGING__UNKNOWN", "continue")
    run_bypass = load_settings().bypass  # loaded after the matrix was made
    assert phase_matrix.cell("production", "timeout", run_bypass) == "continue"  # its own override
    assert phase_matrix.cell("staging", "unknown", run_bypass) == "continue"  # settings cells apply
    assert phase_matrix.cell("staging", "unknown") == "conditional"  # not without them
    with capture_logs() as logs:
        d = decide(
            phase_matrix, failure(FailureKind.APPLICATION), ctx("development", settings=run_bypass)
        )
    assert d.forced  # and so does force continue
    assert logs == []
    # A matrix built with explicit settings keeps them (force still applies to every policy).
    explicit = BypassMatrix(BypassSettings())
    assert explicit.cell("staging", "unknown", run_bypass) == "conditional"
    monkeypatch.delenv("SMD_BYPASS__FORCE_CONTINUE")
    # Through a real run: the phase's matrix is asked with the run's settings.
    settings = load_settings(environment="staging")
    report, _ = await real_run(failing_startup(FailureKind.UNKNOWN, bypass=phase_matrix), settings)
    db = report.phase("db")
    assert db.outcome.value == "bypassed"
    assert db.decision is not None
    assert "SMD_BYPASS__STAGING__UNKNOWN" in db.decision.reason
    explicit_run, _ = await real_run(
        failing_startup(FailureKind.UNKNOWN, bypass=explicit), settings
    )
    assert explicit_run.phase("db").outcome.value == "failed"


# ------------------------------------------------------------------ what smd plan shows, table


def plan_of(settings: Settings, *, essential: bool = False) -> dict[str, Any]:
    startup = Startup("svc")

    @startup.phase(essential=essential)
    async def db(ctx: PhaseContext) -> None:
        raise AssertionError("smd plan must not run a phase")

    doc = plan_document(startup, settings)
    (phase,) = doc["phases"]
    assert phase["name"] == "db"
    bypass: dict[str, Any] = phase["bypass"]
    assert set(bypass) == {k.value for k in KINDS}
    return bypass


def plan_settings(tmp_path: Path, env: str, **kw: Any) -> Settings:
    return load_settings(environment=env, history_path=tmp_path / "history.sqlite3", **kw)


def test_plan_decisions_without_history(tmp_path: Path) -> None:
    dev = plan_of(plan_settings(tmp_path, "development"))
    assert all(d["action"] == "continue" for d in dev.values())
    staging = plan_of(plan_settings(tmp_path, "staging"))
    for kind, d in staging.items():
        assert d["action"] == "fail"  # a first start has no evidence
        assert "phase 'db'" in d["reason"]
        conditions = {c["name"]: c for c in d["conditions"]}
        assert conditions["kind_allowed"]["holds"] is (FailureKind(kind) in HEALING)
        assert conditions["success_rate"]["holds"] is False
        assert conditions["success_rate"]["value"] is None
    assert all(
        d["action"] == "fail" for d in plan_of(plan_settings(tmp_path, "production")).values()
    )
    assert not (tmp_path / "history.sqlite3").exists()  # a dry run creates nothing


def test_plan_decisions_with_history_and_essential(tmp_path: Path) -> None:
    settings = plan_settings(tmp_path, "staging")
    store = SQLiteHistoryStore(settings.history_file())
    clock = ManualClock(start=time.time() - 8 * HOUR)
    key = target_key("svc", "phase:db", "staging")
    store.append(key, healthy(clock).all_samples())
    before = store.load(key).all_samples()
    p = plan_of(settings)
    assert p["infrastructure"]["action"] == "continue"
    assert p["configuration"]["action"] == "fail"
    essential = plan_of(settings, essential=True)
    assert essential["infrastructure"]["action"] == "fail"
    assert "phase 'db' is marked essential" in essential["infrastructure"]["reason"]
    assert store.load(key).all_samples() == before  # a plan records nothing


def test_plan_applies_force_silently(tmp_path: Path) -> None:
    force = {"force_continue": True}
    with capture_logs() as logs:
        p = plan_of(plan_settings(tmp_path, "test", bypass=force))
        prod = plan_of(plan_settings(tmp_path, "production", bypass=force))
    assert logs == []
    assert all(d["forced"] and d["action"] == "continue" for d in p.values())
    assert all(not d["forced"] and d["action"] == "fail" for d in prod.values())


def test_table_lists_every_cell() -> None:
    table = BypassMatrix().table()
    assert list(table) == [
        Environment.PRODUCTION,
        Environment.STAGING,
        Environment.DEVELOPMENT,
        Environment.TEST,
    ]
    for env, cells in table.items():
        assert cells == dict.fromkeys(KINDS, DEFAULT_CELL[env])


def render_matrix_markdown(bypass: BypassSettings | None = None) -> str:
    """The documented matrix: environment x failure-kind cells and the conditions' defaults.

    Built from the public matrix API; with no argument, the built-in defaults
    (environment variables are not read), so it can be compared to the docs.
    """
    bypass = bypass if bypass is not None else BypassSettings()
    matrix = BypassMatrix()
    kinds = list(FailureKind)
    lines = [
        "| environment | mode | " + " | ".join(k.value for k in kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for env, cells in matrix.table(bypass).items():
        row = []
        for kind in kinds:
            action = cells[kind]
            if action == "conditional" and kind not in bypass.allowed_kinds:
                row.append("conditional → fail (kind not allowed)")
            else:
                row.append(action)
        lines.append(
            f"| {env.value} | {matrix.mode(env, bypass).value} | " + " | ".join(row) + " |"
        )
    allowed = ", ".join(sorted(k.value for k in bypass.allowed_kinds)) or "none"
    z = NormalDist().inv_cdf(DEFAULT_CONFIDENCE)
    lines += [
        "",
        "A `conditional` cell continues only when every condition holds:",
        "",
        "| condition | holds when | default |",
        "|---|---|---|",
        f"| `kind_allowed` | the failure kind is in `SMD_BYPASS__ALLOWED_KINDS` | {allowed} |",
        "| `not_essential` | the phase is not declared `essential=True` | — |",
        "| `success_rate` | the Wilson lower bound "
        f"(one-sided {DEFAULT_CONFIDENCE:.0%}, z = {z:.4f}) of the target's decayed success "
        f"rate is at least `SMD_BYPASS__MIN_SUCCESS_RATE`; no history: does not hold | "
        f"{bypass.min_success_rate:g}, half-life `SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS` = "
        f"{bypass.success_half_life_hours:g} h |",
        "| `consecutive_degraded` | degraded startups of the target since its last success "
        "are fewer than `SMD_BYPASS__MAX_CONSECUTIVE_DEGRADED` | "
        f"{bypass.max_consecutive_degraded} |",
    ]
    return "\n".join(lines) + "\n"


def test_rendered_table_reflects_settings() -> None:
    text = render_matrix_markdown(
        BypassSettings(production={FailureKind.INFRASTRUCTURE: "continue"}, min_success_rate=0.8)
    )
    assert "| production | strict | continue | fail |" in text
    assert "| 0.8, half-life" in text
    forced = render_matrix_markdown(BypassSettings(mode=BypassMode.PERMISSIVE))
    assert "| staging | permissive | continue | continue | continue |" in forced
    default = render_matrix_markdown()
    assert (
        "| staging | conditional | conditional | conditional | conditional → fail (kind not allowed) |"
        in default
    )
    assert default.endswith("\n")


def _docs_hooks() -> Any:
    """docs/_hooks.py, which generates the docs' bypass tables at build time."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "_hooks.py"
    spec = importlib.util.spec_from_file_location("smd_docs_hooks_matrix", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(markdown: str) -> list[list[str]]:
    """Each table row's cells, code spans unquoted (the docs quote names, this file does not)."""
    return [
        [cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]


def test_docs_table_matches_the_code() -> None:
    """The docs' bypass page shows the matrix and the conditions' defaults asserted here.

    The page (docs/concepts/bypass.md) asks for both tables by marker; the build
    fills them in from the code. They must say what this file's rendering of the
    public matrix API says: every cell, and each condition with its default.
    """
    page = (Path(__file__).resolve().parents[1] / "docs" / "concepts" / "bypass.md").read_text(
        encoding="utf-8"
    )
    for marker in ("<!-- smd:bypass-matrix -->", "<!-- smd:bypass-conditions -->"):
        assert marker in page.splitlines(), f"docs/concepts/bypass.md lost its {marker} marker"
    hooks = _docs_hooks()
    expected_matrix, expected_conditions = render_matrix_markdown().split(
        "A `conditional` cell continues only when every condition holds:", 1
    )
    assert _table_rows(hooks.render_bypass_matrix()) == _table_rows(expected_matrix)
    shown = _table_rows(hooks.render_bypass_conditions())
    expected = _table_rows(expected_conditions)
    # The conditions' names and defaults; the prose between them is the page's own.
    assert [(row[0], row[-1]) for row in shown] == [(row[0], row[-1]) for row in expected]
    success = next(row for row in shown if row[0] == "success_rate")
    z = NormalDist().inv_cdf(DEFAULT_CONFIDENCE)
    assert f"z = {z:.4f}" in success[1]
    assert f"{DEFAULT_CONFIDENCE:.0%}" in success[1]
