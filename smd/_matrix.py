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
Evidence is aged on ``context.clock`` (the run's clock), else on the
history's own clock.

**Logging and force.** The matrix logs nothing and knows nothing of the
manual override: :func:`smd.bypass.decide` applies ``force_continue`` to every
policy alike, and the run logs every decision once (``smd.bypass.decided``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from smd._failures import Failure, FailureKind
from smd._policy import Action, Condition, Decision, DecisionContext
from smd._settings import (
    BypassMode,
    BypassSettings,
    CellAction,
    Environment,
    Settings,
    SettingsError,
)
from smd._stats import DEFAULT_CONFIDENCE, success_rate

__all__ = ["DEFAULT_MODES", "BypassMatrix", "CellSource"]

CellSource = Literal["default", "mode", "settings", "code"]
_ACTIONS: tuple[CellAction, ...] = ("fail", "continue", "conditional")

DEFAULT_MODES: Mapping[Environment, BypassMode] = {
    Environment.PRODUCTION: BypassMode.STRICT,
    Environment.STAGING: BypassMode.CONDITIONAL,
    Environment.DEVELOPMENT: BypassMode.PERMISSIVE,
    Environment.TEST: BypassMode.STRICT,
}
"""The mode of each environment when ``settings.bypass.mode`` is not set."""

_MODE_CELL: Mapping[BypassMode, CellAction] = {
    BypassMode.STRICT: "fail",
    BypassMode.PERMISSIVE: "continue",
    BypassMode.CONDITIONAL: "conditional",
}

_ENV_ORDER = tuple(DEFAULT_MODES)  # production, staging, development, test

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


# --------------------------------------------------------------------------- the matrix


class BypassMatrix:
    """The built-in :class:`~smd.bypass.BypassPolicy`: environment x failure-kind cells.

    Build it from settings with :meth:`from_settings`, or directly::

        BypassMatrix()                                         # the run's settings
        BypassMatrix(mode="permissive")                        # one mode everywhere
        BypassMatrix(overrides={"infrastructure": "continue"}) # every environment
        BypassMatrix(overrides={"production": {"timeout": "conditional"}, "*": {...}})

    Without explicit ``bypass`` settings, the matrix reads the run's bypass
    settings from the :class:`~smd.bypass.DecisionContext` (so a per-phase
    matrix made at import time still honours the settings loaded later);
    its own ``mode`` and code ``overrides`` stay on top. ``confidence`` is
    the one-sided confidence of the success-rate lower bound.
    """

    __slots__ = ("_bypass", "_confidence", "_mode", "_overrides")

    def __init__(
        self,
        bypass: BypassSettings | None = None,
        *,
        mode: BypassMode | str | None = None,
        overrides: Mapping[Any, Any] | None = None,
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
        self._bypass = bypass
        self._mode: BypassMode | None = mode
        self._overrides = _normalize_overrides(overrides)
        self._confidence = confidence

    @classmethod
    def from_settings(
        cls,
        settings: Settings | BypassSettings,
        *,
        overrides: Mapping[Any, Any] | None = None,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> BypassMatrix:
        """The matrix the settings describe, plus optional code overrides."""
        bypass = settings.bypass if isinstance(settings, Settings) else settings
        return cls(bypass, overrides=overrides, confidence=confidence)

    def _settings(self, given: BypassSettings | None) -> BypassSettings:
        if self._bypass is not None:
            return self._bypass
        return given if given is not None else BypassSettings()

    def mode(
        self, environment: Environment | str, settings: BypassSettings | None = None
    ) -> BypassMode:
        """The mode of an environment: this matrix's mode, the forced mode, else its default."""
        env = Environment.parse(environment)
        return self._mode or self._settings(settings).mode or DEFAULT_MODES[env]

    def explain_cell(
        self,
        environment: Environment | str,
        kind: FailureKind | str,
        settings: BypassSettings | None = None,
    ) -> tuple[CellAction, CellSource]:
        """A cell and where it came from: ``default``, ``mode``, ``settings`` or ``code``."""
        env = Environment.parse(environment)
        k = FailureKind.parse(kind)
        if k in self._overrides[env]:
            return self._overrides[env][k], "code"
        bypass = self._settings(settings)
        cells = bypass.cells(env)
        if k in cells:
            return cells[k], "settings"
        source: CellSource = "mode" if (self._mode or bypass.mode) else "default"
        return _MODE_CELL[self.mode(env, settings)], source

    def cell(
        self,
        environment: Environment | str,
        kind: FailureKind | str,
        settings: BypassSettings | None = None,
    ) -> CellAction:
        """``fail``, ``continue`` or ``conditional`` for one environment and failure kind."""
        return self.explain_cell(environment, kind, settings)[0]

    def table(
        self, settings: BypassSettings | None = None
    ) -> dict[Environment, dict[FailureKind, CellAction]]:
        """Every cell, environments in production, staging, development, test order."""
        return {env: {k: self.cell(env, k, settings) for k in FailureKind} for env in _ENV_ORDER}

    # ---------------------------------------------------------------- deciding

    def decide(self, failure: Failure, context: DecisionContext) -> Decision:
        """The verdict for ``failure``; see the module docstring for the rules."""
        bypass = self._settings(context.settings)
        try:
            env = Environment.parse(context.environment)
        except ValueError as err:
            raise SettingsError(f"bypass decision for phase {context.phase!r}: {err}") from None
        mode = self.mode(env, bypass)
        kind = failure.kind
        action, source = self.explain_cell(env, kind, bypass)
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
        b = self._settings(context.settings)
        allowed = tuple(sorted(k.value for k in b.allowed_kinds))
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
        now = _now(context)
        rate = success_rate(
            context.history, now, b.success_half_life_hours, confidence=self._confidence
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
        return f"BypassMatrix(mode={self._mode}, settings={'explicit' if self._bypass else 'run'})"


def _now(context: DecisionContext) -> float:
    # The context's clock (the run's), else the clock the evidence was
    # recorded on: a history kept on an injected clock is judged on that
    # clock, never against the machine's time.
    if context.clock is not None:
        return context.clock.wall()
    if context.history is not None:
        return context.history.clock.wall()
    return time.time()


def _source_text(source: CellSource, env: Environment, kind: FailureKind, mode: BypassMode) -> str:
    if source == "code":
        return "overridden in code"
    if source == "settings":
        return f"overridden in settings, {_env_var(env, kind)}"
    if source == "mode":
        return f"every cell of the forced {mode.value} mode, SMD_BYPASS__MODE"
    return f"the {env.value} default"
