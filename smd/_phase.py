"""Phases, the context they run with, and the ``Startup`` that holds them."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload, runtime_checkable

import anyio

from smd._clock import Clock
from smd._policy import BypassPolicy
from smd._samples import TimingHistory
from smd._timeout_base import FixedTimeout, TimeoutDecision, TimeoutPolicy

if TYPE_CHECKING:
    from smd._plan import Plan
    from smd._report import Report
    from smd._settings import Settings

__all__ = ["Attempt", "InvalidPlan", "Phase", "PhaseContext", "PhaseLike", "Startup"]

PhaseFn = Callable[["PhaseContext"], Awaitable[Any]]
TeardownFn = Callable[[Any], Awaitable[None]]
F = TypeVar("F", bound=PhaseFn)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


class InvalidPlan(ValueError):
    """The declared phases do not form a valid plan; the message names the culprit."""


def _check_timeout(name: str, timeout: object) -> float | TimeoutPolicy | None:
    if timeout is None or isinstance(timeout, TimeoutPolicy):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidPlan(
            f"phase {name!r}: timeout must be a positive finite number of seconds "
            f"or a timeout policy, got {timeout!r}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidPlan(
            f"phase {name!r}: timeout must be a positive finite number of seconds, got {timeout!r}"
        )
    return float(timeout)


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True)
class Phase:
    """One named step of startup.

    ``run`` is an async callable taking a :class:`PhaseContext`; what it
    returns is handed to the phases that require this one. ``timeout`` is
    seconds, a timeout policy, or ``None`` for the settings' ``phase_timeout``.
    ``teardown`` is awaited with that value at shutdown (reverse order).
    ``target`` names the dependency whose history this phase learns from
    (default: the phase name). ``recovery``, for a bypassed phase, is
    probed in the background until it succeeds.
    """

    name: str
    run: PhaseFn
    requires: tuple[str, ...] = ()
    timeout: float | TimeoutPolicy | None = None
    essential: bool = False
    bypass: BypassPolicy | None = None
    teardown: TeardownFn | None = None
    target: str | Callable[[Settings], str | None] | None = None
    recovery: PhaseFn | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise InvalidPlan(
                f"invalid phase name {self.name!r}: use letters, digits, '_', '.', ':' or '-', "
                "starting with a letter or '_'"
            )
        if isinstance(self.requires, str):
            object.__setattr__(self, "requires", (self.requires,))
        else:
            object.__setattr__(self, "requires", tuple(self.requires))
        for req in self.requires:
            if not isinstance(req, str):
                raise InvalidPlan(f"phase {self.name!r}: requirement {req!r} is not a phase name")
        if len(set(self.requires)) != len(self.requires):
            raise InvalidPlan(f"phase {self.name!r} lists a requirement twice: {self.requires}")
        if not _is_async(self.run):
            raise InvalidPlan(
                f"phase {self.name!r}: {getattr(self.run, '__qualname__', self.run)!r} is not "
                "an async callable (declare it with 'async def')"
            )
        for what, fn in (("teardown", self.teardown), ("recovery", self.recovery)):
            if fn is not None and not _is_async(fn):
                raise InvalidPlan(f"phase {self.name!r}: {what} must be an async callable")
        if self.bypass is not None and not isinstance(self.bypass, BypassPolicy):
            raise InvalidPlan(
                f"phase {self.name!r}: bypass must have a decide(failure, context) method"
            )
        object.__setattr__(self, "timeout", _check_timeout(self.name, self.timeout))

    def timeout_policy(self) -> TimeoutPolicy | None:
        """The phase's timeout as a policy (``None``: the settings default)."""
        if isinstance(self.timeout, float):
            return FixedTimeout(self.timeout)
        return self.timeout

    def target_key(self, settings: Settings | None = None) -> str:
        """The history key of this phase's dependency (without the environment).

        ``target`` may be a callable of the settings, for dependencies only
        known once settings are loaded (a DSN from ``SMD_DATABASE_URL``).
        """
        target = self.target
        if callable(target):
            target = target(settings) if settings is not None else None
        return target or f"phase:{self.name}"


@runtime_checkable
class PhaseLike(Protocol):
    """Anything that can describe itself as a :class:`Phase` (e.g. ``DatabasePhase``)."""

    def to_phase(self) -> Phase:
        """The phase to add to a startup."""
        ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt a phase made (a connection try); times are seconds since startup began."""

    number: int
    start: float
    end: float
    ok: bool
    detail: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "ok": self.ok,
            "detail": dict(self.detail),
        }


class PhaseContext:
    """What a running phase gets: settings, a bound logger, its requirements'
    values (``ctx["config"]``), its deadline, and its target's history."""

    def __init__(
        self,
        *,
        phase: Phase,
        settings: Settings,
        log: Any,
        results: Mapping[str, Any],
        timeout: TimeoutDecision,
        deadline: float,
        history: TimingHistory,
        clock: Clock,
        origin: float = 0.0,
    ) -> None:
        self.phase = phase
        self.origin = origin
        self.name = phase.name
        self.settings = settings
        self.environment = settings.environment.value
        self.log = log
        self.results: Mapping[str, Any] = results
        self.timeout = timeout
        self.deadline = deadline
        self.history = history
        self.clock = clock
        self.attempts: list[Attempt] = []

    def __getitem__(self, name: str) -> Any:
        try:
            return self.results[name]
        except KeyError:
            raise KeyError(
                f"phase {self.name!r} has no value for {name!r}: it can only read the phases it "
                f"requires ({', '.join(self.results) or 'none'})"
            ) from None

    def remaining(self) -> float:
        """Seconds left before this phase's deadline."""
        return self.deadline - anyio.current_time()

    def record_attempt(self, start: float, end: float, ok: bool, **detail: object) -> Attempt:
        """Note one attempt (``time.monotonic()`` start/end) for the report and the trace.

        Stored relative to the startup's start, like phase times.
        """
        attempt = Attempt(
            len(self.attempts) + 1, start - self.origin, end - self.origin, ok, dict(detail)
        )
        self.attempts.append(attempt)
        return attempt


class Startup:
    """A named set of phases: declare them, get a :class:`Plan`, run them.

    ::

        startup = Startup("api")

        @startup.phase()
        async def config(ctx): return load_config()

        @startup.phase(requires=["config"], timeout=5)
        async def cache(ctx): return await warm(ctx["config"])
    """

    def __init__(self, name: str, *, bypass: BypassPolicy | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidPlan("a startup needs a non-empty name")
        self.name = name
        self.bypass = bypass
        self._phases: dict[str, Phase] = {}

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phases in declaration order."""
        return tuple(self._phases.values())

    def add(self, phase: Phase | PhaseLike) -> Phase:
        """Add a phase object; a duplicate name raises :class:`InvalidPlan`."""
        if not isinstance(phase, Phase):
            if not isinstance(phase, PhaseLike):
                raise InvalidPlan(f"{phase!r} is neither a Phase nor has to_phase()")
            phase = phase.to_phase()
        if phase.name in self._phases:
            raise InvalidPlan(f"duplicate phase name {phase.name!r} in startup {self.name!r}")
        self._phases[phase.name] = phase
        return phase

    @overload
    def phase(self, fn: F, /) -> F: ...

    @overload
    def phase(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        requires: Iterable[str] = (),
        timeout: float | TimeoutPolicy | None = None,
        essential: bool = False,
        bypass: BypassPolicy | None = None,
        teardown: TeardownFn | None = None,
        target: str | Callable[[Settings], str | None] | None = None,
        recovery: PhaseFn | None = None,
    ) -> Callable[[F], F]: ...

    def phase(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        requires: Iterable[str] = (),
        timeout: float | TimeoutPolicy | None = None,
        essential: bool = False,
        bypass: BypassPolicy | None = None,
        teardown: TeardownFn | None = None,
        target: str | Callable[[Settings], str | None] | None = None,
        recovery: PhaseFn | None = None,
    ) -> F | Callable[[F], F]:
        """Declare a phase by decorating an async function (name defaults to its name)."""

        def decorate(f: F) -> F:
            self.add(
                Phase(
                    name=name or str(getattr(f, "__name__", "")),
                    run=f,
                    requires=tuple(requires),
                    timeout=timeout,
                    essential=essential,
                    bypass=bypass,
                    teardown=teardown,
                    target=target,
                    recovery=recovery,
                    description=(inspect.getdoc(f) or "").split("\n", 1)[0],
                )
            )
            return f

        return decorate(fn) if fn is not None else decorate

    def plan(self) -> Plan:
        """Validate the graph and compute the order and waves (runs nothing)."""
        from smd._plan import build_plan

        return build_plan(self.name, self.phases)

    async def run(self, **options: Any) -> Report:
        """Run the startup; see :func:`smd.run_startup` for the options."""
        from smd._sequencer import run_startup

        return await run_startup(self, **options)

    def __repr__(self) -> str:
        return f"Startup({self.name!r}, phases={list(self._phases)})"
