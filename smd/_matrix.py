"""The built-in bypass policy: an environment x failure-kind matrix.

Every cell is ``fail``, ``continue`` or ``conditional``. The environment's
mode supplies the default cells (``strict``: all fail, ``permissive``: all
continue, ``conditional``: all conditional); settings and code can override
single cells. The most specific word wins::

    code override  >  settings cell  >  forced mode (settings.bypass.mode)  >  environment default

A ``conditional`` cell continues only when every condition holds (each is
reported with its measured value):

- ``kind_allowed``: the failure kind is in ``allowed_kinds``;
- ``not_essential``: the phase is not marked essential;
- ``success_rate``: the lower bound of the target's recent success rate is at
  least ``min_success_rate`` (see :func:`success_rate`);
- ``consecutive_degraded``: fewer than ``max_consecutive_degraded`` degraded
  startups of this target since its last success.

**No history.** A target with no recorded start fails ``success_rate``
(value ``None``). The condition asks for *evidence* that the dependency is
normally healthy (a lower bound), and no data is no evidence: the Wilson
lower bound of zero observations is 0. Giving a fresh target the benefit of
the doubt would make smd trust a never-seen dependency more than one seen to
work once (one success only proves a lower bound of ~0.38), an inversion we
refuse. Consequence, stated plainly: on a first start, or with an ephemeral
history store (a container without a volume), conditional mode stops startup
for every failure; a service that wants to start degraded anyway sets the
cell to ``continue``.

**History.** ``context.history`` must hold the target's *past* starts: a
caller decides before recording the current start's failure, else every
decision would count the very failure it is judging against the target.

**Logging.** ``decide`` logs only the manual override (``smd.bypass.forced``,
``smd.bypass.force_refused``, as warnings). The sequencer logs every decision
of every policy once as ``smd.bypass.decided``, with the fields from
:func:`decision_event`, so user-supplied policies are logged the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import structlog

from smd._clock import Clock, ManualClock
from smd._failures import Failure, FailureKind
from smd._policy import Action, Condition, Decision, DecisionContext
from smd._samples import TimingHistory
from smd._settings import BypassMode, BypassSettings, Environment, Settings, SettingsError

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MODES",
    "BypassMatrix",
    "CellAction",
    "CellSource",
    "SuccessRate",
    "apply_force",
    "decision_event",
    "render_matrix_markdown",
    "success_rate",
    "wilson_lower_bound",
]

CellAction = Literal["fail", "continue", "conditional"]
CellSource = Literal["default", "mode", "settings", "code"]
_ACTIONS: tuple[CellAction, ...] = ("fail", "continue", "conditional")

DEFAULT_MODES: Mapping[Environment, BypassMode] = {
    Environment.PRODUCTION: BypassMode.STRICT,
    Environment.STAGING: BypassMode.CONDITIONAL,
    Environment.DEVELOPMENT: BypassMode.PERMISSIVE,
    Environment.TEST: BypassMode.STRICT,
}
"""The mode of each environment when ``settings.bypass.mode`` is not set."""

DEFAULT_CONFIDENCE = 0.90
"""One-sided confidence of the success-rate lower bound (z = 1.2816).

At 0.90 a perfect record clears a 0.5 threshold from 1.64 effective starts
on. Evidence decays with age, so this also bounds the restart cadence that
can qualify: with the 24 h half-life, a target whose starts all succeed
qualifies when it starts at least every ~16 h; a service restarted daily
should raise ``SMD_BYPASS__SUCCESS_HALF_LIFE_HOURS`` (72 h gives daily
restarts ~3.9 effective starts and a lower bound of 0.70).
"""

_MODE_CELL: Mapping[BypassMode, CellAction] = {
    BypassMode.STRICT: "fail",
    BypassMode.PERMISSIVE: "continue",
    BypassMode.CONDITIONAL: "conditional",
}

_ENV_ORDER = tuple(DEFAULT_MODES)  # production, staging, development, test

_log = structlog.get_logger("smd")


# --------------------------------------------------------------------------- success rate


@dataclass(frozen=True, slots=True)
class SuccessRate:
    """A target's recent success rate, decayed by age.

    ``successes``/``total`` are raw counts of past starts; ``effective_n`` is
    the sum of their decay weights; ``estimate`` the decay-weighted share of
    successes; ``lower_bound`` the Wilson lower bound on the weighted counts.
    ``estimate`` and ``lower_bound`` are ``None`` when there is no start.
    """

    successes: int
    total: int
    effective_n: float
    estimate: float | None
    lower_bound: float | None
    half_life_hours: float = 72.0
    confidence: float = DEFAULT_CONFIDENCE

    def to_dict(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "successes": self.successes,
            "total": self.total,
            "effective_n": round(self.effective_n, 4),
            "estimate": r(self.estimate),
            "lower_bound": r(self.lower_bound),
            "half_life_hours": self.half_life_hours,
            "confidence": self.confidence,
        }


def wilson_lower_bound(successes: float, n: float, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Wilson score lower bound for ``successes`` out of ``n`` (weights allowed).

    ``(s + z²/2 - z·sqrt(s·f/n + z²/4)) / (n + z²)`` with ``f = n - s`` and
    ``z`` the ``confidence`` quantile of the standard normal; this form stays
    finite as ``n`` approaches 0 (the bound then approaches 0). ``n = 0`` gives 0.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n <= 0.0:
        return 0.0
    s = min(max(successes, 0.0), n)
    f = n - s
    z = NormalDist().inv_cdf(confidence)
    z2 = z * z
    lower = (s + z2 / 2.0 - z * math.sqrt(s * f / n + z2 / 4.0)) / (n + z2)
    return min(max(lower, 0.0), 1.0)


def success_rate(
    history: TimingHistory | None,
    now: float,
    half_life_hours: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> SuccessRate:
    """The decayed success rate of a target's past starts.

    Each start in ``history.outcomes()`` (an uncensored ``ready`` sample is a
    success; a censored one or a ``failure`` sample is a failed start) gets
    the weight ``w = 0.5 ** (age / half_life)``, ``age = max(0, now - at)``
    (a sample from the future, e.g. clock skew between writers, counts as
    new). Then ``effective_n = Σw``, ``estimate = Σw·success / Σw`` and
    ``lower_bound = wilson_lower_bound(Σw·success, Σw, confidence)``.

    Decay is why a single old failure does not dominate recent successes, and
    why evidence fades: a target unseen for many half-lives has almost no
    effective starts left, and its lower bound falls towards 0.
    """
    if not (math.isfinite(half_life_hours) and half_life_hours > 0):
        raise ValueError(f"half_life_hours must be positive, got {half_life_hours!r}")
    outcomes = history.outcomes() if history is not None else []
    if not outcomes:
        return SuccessRate(0, 0, 0.0, None, None, half_life_hours, confidence)
    half_life = half_life_hours * 3600.0
    weight_ok = weight_all = 0.0
    ok_count = 0
    for at, ok in outcomes:
        w = 0.5 ** (max(0.0, now - at) / half_life)
        weight_all += w
        if ok:
            weight_ok += w
            ok_count += 1
    estimate = weight_ok / weight_all if weight_all > 0.0 else None
    lower = wilson_lower_bound(weight_ok, weight_all, confidence)
    return SuccessRate(
        ok_count, len(outcomes), weight_all, estimate, lower, half_life_hours, confidence
    )


# --------------------------------------------------------------------------- cells


def _parse_env(value: object, where: str) -> Environment:
    try:
        return Environment.parse(str(value))
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from None


def _parse_kind(value: object, where: str) -> FailureKind:
    if isinstance(value, FailureKind):
        return value
    try:
        return FailureKind.parse(str(value))
    except ValueError as err:
        raise SettingsError(f"{where}: {err}") from None


def _parse_action(value: object, where: str) -> CellAction:
    text = str(value.value if isinstance(value, Action) else value).strip().lower()
    if text not in _ACTIONS:
        raise SettingsError(
            f"{where}: unknown cell action {value!r}; accepted: fail, continue, conditional"
        )
    return text


def _normalize_overrides(
    overrides: Mapping[Any, Any] | None,
) -> dict[Environment, dict[FailureKind, CellAction]]:
    """Code overrides: ``{env: {kind: action}}``, ``{"*": {...}}`` or flat ``{kind: action}``."""
    out: dict[Environment, dict[FailureKind, CellAction]] = {e: {} for e in Environment}
    if not overrides:
        return out
    for key, value in overrides.items():
        if isinstance(value, str | Action):
            # Flat form: a kind for every environment (handy for a per-phase matrix).
            kind = _parse_kind(key, f"bypass override {key!r}")
            action = _parse_action(value, f"bypass override {kind.value}")
            for env in Environment:
                out[env][kind] = action
            continue
        if not isinstance(value, Mapping):
            raise SettingsError(
                f"bypass override {key!r}: expected a mapping of failure kind to action, "
                f"got {type(value).__name__}"
            )
        envs = (
            list(Environment)
            if str(key).strip() == "*"
            else [_parse_env(key, f"bypass override {key!r}")]
        )
        for kind_key, action_value in value.items():
            where = f"bypass override {key}.{kind_key}"
            kind = _parse_kind(kind_key, where)
            action = _parse_action(action_value, where)
            for env in envs:
                out[env][kind] = action
    return out


def _env_var(env: Environment, kind: FailureKind) -> str:
    return f"SMD_BYPASS__{env.value.upper()}__{kind.value.upper()}"


# --------------------------------------------------------------------------- force


def apply_force(
    decision: Decision,
    failure: Failure,
    context: DecisionContext,
    bypass: BypassSettings,
    *,
    log: Any = None,
) -> Decision:
    """Apply the manual override ``force_continue`` to any policy's decision.

    Outside production (or in production with ``allow_force_in_production``)
    the verdict becomes ``continue`` with ``forced=True`` and a loud
    ``smd.bypass.forced`` warning. In production without that second setting
    the force is refused: the policy's own verdict stands, a
    ``force_continue`` condition that does not hold is added, the reason says
    so, and ``smd.bypass.force_refused`` is logged as a warning.
    """
    if not bypass.force_continue:
        return decision
    logger = log if log is not None else _log
    try:
        env: Environment | None = Environment.parse(context.environment)
    except ValueError:
        env = None
    where = {"phase": context.phase, "kind": failure.kind.value, "environment": context.environment}
    if env is Environment.PRODUCTION and not bypass.allow_force_in_production:
        refused = Condition(
            "force_continue",
            False,
            True,
            "allow_force_in_production",
            "force continue was requested but is refused in production; "
            "set SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION=true to allow it",
        )
        logger.warning("smd.bypass.force_refused", action=decision.action.value, **where)
        return Decision(
            decision.action,
            f"{decision.reason} Force continue (SMD_BYPASS__FORCE_CONTINUE) was requested but "
            "refused in production because SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION is not set.",
            (*decision.conditions, refused),
            decision.mode,
            forced=False,
        )
    allowed = " with SMD_BYPASS__ALLOW_FORCE_IN_PRODUCTION" if env is Environment.PRODUCTION else ""
    detail = f"force continue is set (SMD_BYPASS__FORCE_CONTINUE){allowed}"
    forced = Condition("force_continue", True, True, None, detail)
    logger.warning(
        "smd.bypass.forced",
        overridden_action=decision.action.value,
        overridden_reason=decision.reason,
        **where,
    )
    return Decision(
        Action.CONTINUE,
        f"Startup continues degraded because {detail}. The policy's own verdict was "
        f"{decision.action.value}: {decision.reason}",
        (*decision.conditions, forced),
        decision.mode,
        forced=True,
    )


def decision_event(
    failure: Failure, context: DecisionContext, decision: Decision
) -> dict[str, object]:
    """The key/values of the ``smd.bypass.decided`` log event for any policy's decision."""
    return {
        "phase": context.phase,
        "environment": context.environment,
        "target": context.target,
        "mode": decision.mode,
        "kind": failure.kind.value,
        "action": decision.action.value,
        "forced": decision.forced,
        "reason": decision.reason,
        "conditions": [c.to_dict() for c in decision.conditions],
    }


# --------------------------------------------------------------------------- the matrix


class BypassMatrix:
    """The built-in :class:`~smd.BypassPolicy`: environment x failure-kind cells.

    Build it from settings with :meth:`from_settings`, or directly::

        BypassMatrix()                                         # defaults
        BypassMatrix(mode="permissive")                        # one mode everywhere
        BypassMatrix(overrides={"infrastructure": "continue"}) # every environment
        BypassMatrix(overrides={"production": {"timeout": "conditional"}, "*": {...}})

    A phase can pass its own matrix as ``bypass=``; :meth:`bind` layers its
    code overrides on the run's settings. ``confidence`` is the one-sided
    confidence of the success-rate lower bound.
    """

    __slots__ = ("_bound", "_bypass", "_clock", "_confidence", "_mode", "_overrides")

    def __init__(
        self,
        bypass: BypassSettings | None = None,
        *,
        mode: BypassMode | str | None = None,
        overrides: Mapping[Any, Any] | None = None,
        clock: Clock | None = None,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> None:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        if mode is not None and not isinstance(mode, BypassMode):
            try:
                mode = BypassMode(str(mode).strip().lower())
            except ValueError:
                raise SettingsError(
                    f"unknown bypass mode {mode!r}; accepted: strict, permissive, conditional"
                ) from None
        self._bound = bypass is not None
        self._bypass = bypass if bypass is not None else BypassSettings()
        self._mode: BypassMode | None = mode
        self._overrides = _normalize_overrides(overrides)
        self._clock = clock
        self._confidence = confidence

    @classmethod
    def from_settings(
        cls,
        settings: Settings | BypassSettings,
        *,
        overrides: Mapping[Any, Any] | None = None,
        clock: Clock | None = None,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> BypassMatrix:
        """The matrix the settings describe, plus optional code overrides."""
        bypass = settings.bypass if isinstance(settings, Settings) else settings
        return cls(bypass, overrides=overrides, clock=clock, confidence=confidence)

    def bind(self, settings: Settings | BypassSettings) -> BypassMatrix:
        """This matrix on the run's settings (a no-op copy if built with explicit settings).

        A per-phase matrix made in code at import time cannot see the settings
        loaded later; the sequencer binds it so that settings cells, the
        conditional thresholds and force continue apply, with this matrix's
        own mode and code overrides still on top.
        """
        if self._bound:
            return self
        bypass = settings.bypass if isinstance(settings, Settings) else settings
        clone = BypassMatrix(
            bypass, mode=self._mode, clock=self._clock, confidence=self._confidence
        )
        clone._overrides = {env: dict(cells) for env, cells in self._overrides.items()}
        return clone

    @property
    def settings(self) -> BypassSettings:
        """The bypass settings in force (thresholds, allowed kinds, force)."""
        return self._bypass

    def mode(self, environment: Environment | str) -> BypassMode:
        """The mode of an environment: the forced mode, else its default."""
        env = Environment.parse(environment)
        return self._mode or self._bypass.mode or DEFAULT_MODES[env]

    def explain_cell(
        self, environment: Environment | str, kind: FailureKind | str
    ) -> tuple[CellAction, CellSource]:
        """A cell and where it came from: ``default``, ``mode``, ``settings`` or ``code``."""
        env = Environment.parse(environment)
        k = kind if isinstance(kind, FailureKind) else FailureKind.parse(kind)
        if k in self._overrides[env]:
            return self._overrides[env][k], "code"
        cells = self._bypass.cells(env)
        if k in cells:
            return cells[k], "settings"
        source: CellSource = "mode" if (self._mode or self._bypass.mode) else "default"
        return _MODE_CELL[self.mode(env)], source

    def cell(self, environment: Environment | str, kind: FailureKind | str) -> CellAction:
        """``fail``, ``continue`` or ``conditional`` for one environment and failure kind."""
        return self.explain_cell(environment, kind)[0]

    def table(self) -> dict[Environment, dict[FailureKind, CellAction]]:
        """Every cell, environments in production, staging, development, test order."""
        return {env: {k: self.cell(env, k) for k in FailureKind} for env in _ENV_ORDER}

    # ---------------------------------------------------------------- deciding

    def decide(self, failure: Failure, context: DecisionContext) -> Decision:
        """The verdict for ``failure``; see the module docstring for the rules."""
        return apply_force(self._decide(failure, context), failure, context, self._bypass)

    def preview(
        self,
        environment: Environment | str,
        essential: bool = False,
        *,
        phase: str = "(any)",
        history: TimingHistory | None = None,
        now: float | None = None,
    ) -> dict[FailureKind, Decision]:
        """What would be decided for a failure of each kind (for ``smd plan``).

        Nothing is logged. Conditions that need history are evaluated against
        ``history`` when given; without it, against an empty history (a first
        start), and the reason says that they are evaluated at run time. The
        manual override is applied (silently) so the preview matches the run.
        """
        env = Environment.parse(environment)
        hist = history if history is not None else TimingHistory()
        out: dict[FailureKind, Decision] = {}
        for kind in FailureKind:
            failure = Failure(kind, f"a {kind.value} failure (preview)")
            ctx = DecisionContext(
                phase=phase,
                environment=env.value,
                essential=essential,
                history=hist,
                clock=ManualClock(now) if now is not None else self._clock,
            )
            decision = self._decide(failure, ctx)
            if history is None and self.cell(env, kind) == "conditional":
                decision = Decision(
                    decision.action,
                    f"{decision.reason} (Conditions that need history are evaluated at run "
                    "time; shown here for a target with no history.)",
                    decision.conditions,
                    decision.mode,
                    decision.forced,
                )
            out[kind] = apply_force(decision, failure, ctx, self._bypass, log=_NullLog())
        return out

    def _now(self, context: DecisionContext) -> float:
        clock = context.clock or self._clock
        if clock is not None:
            return clock.wall()
        if context.history is not None:
            return context.history.clock.wall()
        return time.time()

    def _decide(self, failure: Failure, context: DecisionContext) -> Decision:
        try:
            env = Environment.parse(context.environment)
        except ValueError as err:
            raise SettingsError(f"bypass decision for phase {context.phase!r}: {err}") from None
        mode = self.mode(env)
        kind = failure.kind
        action, source = self.explain_cell(env, kind)
        cell_text = f"the cell ({env.value}, {kind.value}) is '{action}' ({_source_text(source, env, kind, mode)})"
        what = f"the {kind.value} failure of phase {context.phase!r}"
        if action == "fail":
            return Decision(
                Action.FAIL,
                f"Startup stops: {cell_text} in {mode.value} mode, so {what} is not bypassed.",
                mode=mode.value,
            )
        if action == "continue":
            return Decision(
                Action.CONTINUE,
                f"Startup continues degraded: {cell_text} in {mode.value} mode, so {what} is bypassed.",
                mode=mode.value,
            )
        conditions = self.conditions(failure, context)
        failed = [c for c in conditions if not c.holds]
        if failed:
            because = "; ".join(c.detail for c in failed)
            return Decision(
                Action.FAIL,
                f"Startup stops: {cell_text} in {mode.value} mode, and {what} fails "
                f"{len(failed)} of its {len(conditions)} conditions: {because}.",
                conditions,
                mode.value,
            )
        holds = "; ".join(c.detail for c in conditions)
        return Decision(
            Action.CONTINUE,
            f"Startup continues degraded: {cell_text} in {mode.value} mode, and {what} "
            f"meets all {len(conditions)} conditions: {holds}.",
            conditions,
            mode.value,
        )

    def conditions(self, failure: Failure, context: DecisionContext) -> tuple[Condition, ...]:
        """The four conditions of a ``conditional`` cell, each with its measured value."""
        b = self._bypass
        allowed = sorted(k.value for k in b.allowed_kinds)
        allowed_text = ", ".join(allowed) or "none"
        kind_ok = failure.kind in b.allowed_kinds
        kind_allowed = Condition(
            "kind_allowed",
            kind_ok,
            failure.kind.value,
            allowed,
            f"kind {failure.kind.value} is {'' if kind_ok else 'not '}in the allowed kinds "
            f"({allowed_text})",
        )
        not_essential = Condition(
            "not_essential",
            not context.essential,
            context.essential,
            False,
            f"phase {context.phase!r} is {'marked essential' if context.essential else 'not essential'}",
        )
        rate = success_rate(
            context.history,
            self._now(context),
            b.success_half_life_hours,
            confidence=self._confidence,
        )
        threshold = b.min_success_rate
        if rate.lower_bound is None:
            rate_cond = Condition(
                "success_rate",
                False,
                None,
                threshold,
                "there is no history of this target, so no evidence that it is normally "
                "healthy (a first start is not bypassed in conditional mode)",
            )
        else:
            ok = rate.lower_bound >= threshold
            rate_cond = Condition(
                "success_rate",
                ok,
                round(rate.lower_bound, 4),
                threshold,
                f"the recent success rate's lower bound {rate.lower_bound:.2f} is "
                f"{'at least' if ok else 'below'} {threshold:.2f} "
                f"({rate.successes} of {rate.total} past starts succeeded, "
                f"{rate.effective_n:.2f} effective after decay with a "
                f"{b.success_half_life_hours:g} h half-life)",
            )
        streak = context.history.consecutive_bypasses() if context.history is not None else 0
        limit = b.max_consecutive_degraded
        streak_ok = streak < limit
        plural = "" if streak == 1 else "s"
        streak_cond = Condition(
            "consecutive_degraded",
            streak_ok,
            streak,
            limit,
            f"{streak} consecutive degraded startup{plural} since the last success "
            f"{'is below' if streak_ok else 'reached'} the limit of {limit}",
        )
        return (kind_allowed, not_essential, rate_cond, streak_cond)

    def __repr__(self) -> str:
        return f"BypassMatrix(mode={self._mode or self._bypass.mode}, bound={self._bound})"


def _source_text(source: CellSource, env: Environment, kind: FailureKind, mode: BypassMode) -> str:
    if source == "code":
        return "overridden in code"
    if source == "settings":
        return f"overridden in settings, {_env_var(env, kind)}"
    if source == "mode":
        return f"every cell of the forced {mode.value} mode, SMD_BYPASS__MODE"
    return f"the {env.value} default"


class _NullLog:
    """A logger that drops everything (previews must not log force warnings)."""

    def warning(self, *args: object, **kwargs: object) -> None:
        return None


# --------------------------------------------------------------------------- README


def render_matrix_markdown(settings: Settings | BypassSettings | None = None) -> str:
    """The README's matrix: environment x failure-kind cells and the conditions' defaults.

    With no argument, the built-in defaults (environment variables are not
    read), so the README and this function can be compared in a test.
    """
    if settings is None:
        bypass = BypassSettings()
    elif isinstance(settings, Settings):
        bypass = settings.bypass
    else:
        bypass = settings
    matrix = BypassMatrix(bypass)
    kinds = list(FailureKind)
    lines = [
        "| environment | mode | " + " | ".join(k.value for k in kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for env, cells in matrix.table().items():
        row = []
        for kind in kinds:
            action = cells[kind]
            if action == "conditional" and kind not in bypass.allowed_kinds:
                row.append("conditional → fail (kind not allowed)")
            else:
                row.append(action)
        lines.append(f"| {env.value} | {matrix.mode(env).value} | " + " | ".join(row) + " |")
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
