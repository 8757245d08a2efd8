"""Phases and the context they run with."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload, runtime_checkable

from smd._policy import BypassPolicy
from smd._samples import TimingHistory
from smd._timeout_base import FixedTimeout, TimeoutDecision, TimeoutPolicy
from smd._units import seconds as _seconds
from smd.clock import Clock
from smd.exceptions import InvalidPlan

if TYPE_CHECKING:
    from smd._settings import Settings
    from smd.retry import Attempt

__all__ = ["Phase", "PhaseContext", "PhaseFn", "PhaseLike", "TeardownFn"]

PhaseFn = Callable[["PhaseContext"], Awaitable[Any]]
TeardownFn = Callable[[Any], Awaitable[None]]
T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


def _check_timeout(name: str, timeout: object) -> float | TimeoutPolicy | None:
    if timeout is None or isinstance(timeout, TimeoutPolicy):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidPlan(
            f"phase {name!r}: timeout must be a positive finite number of seconds "
            f"or a timeout policy, got {timeout!r}"
        )
    try:
        return _seconds("timeout", timeout)
    except ValueError:
        raise InvalidPlan(
            f"phase {name!r}: timeout must be a positive finite number of seconds, got {timeout!r}"
        ) from None


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
    probed in the background until it succeeds. ``once=True`` runs the phase
    in one replica of the fleet at a time, and only until one completed it
    (the coordinator a plugin offers, e.g. PostgreSQL advisory locks with
    ``SMD_FLEET_URL``); ``once_key`` names that work (default: the startup's
    name and the phase's), e.g. with the release version in it.
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
    once: bool = False
    once_key: str | None = None

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
        if not isinstance(self.once, bool):
            raise InvalidPlan(f"phase {self.name!r}: once must be True or False, got {self.once!r}")
        if self.once_key is not None:
            if not self.once:
                raise InvalidPlan(f"phase {self.name!r}: once_key is set but once is not True")
            if not isinstance(self.once_key, str) or not self.once_key.strip():
                raise InvalidPlan(
                    f"phase {self.name!r}: once_key must be a non-empty string, got {self.once_key!r}"
                )

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


class PhaseContext:
    """What a running phase gets: settings, a bound logger, its requirements'
    values (``ctx["config"]``), its deadline, its target's history and the clock.

    Times (``deadline``, attempt times) are on :attr:`clock`, the run's one
    time source.
    """

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
        on_attempt: Callable[[Attempt], None] | None = None,
        on_extend: Callable[[str, float, str], None] | None = None,
    ) -> None:
        self.phase = phase
        self.name = phase.name
        self.settings = settings
        self.environment = settings.environment.value
        self._log = log
        self._bound: Any = None
        self.results: Mapping[str, Any] = results
        self.timeout = timeout
        self.deadline = deadline
        self.history = history
        self.clock = clock
        self.origin = origin
        self.attempts: list[Attempt] = []
        self._on_attempt = on_attempt
        self._on_extend = on_extend

    @property
    def log(self) -> Any:
        """The run's structlog logger bound to ``phase=<name>`` (bound on first use:
        most phases never log, and binding costs on the startup's critical path)."""
        if self._bound is None:
            self._bound = self._log.bind(phase=self.name)
        return self._bound

    def __getitem__(self, name: str) -> Any:
        try:
            return self.results[name]
        except KeyError:
            raise KeyError(
                f"phase {self.name!r} has no value for {name!r}: it can only read the phases it "
                f"requires ({', '.join(self.results) or 'none'})"
            ) from None

    @overload
    def get(self, name: str) -> Any: ...

    @overload
    def get(self, name: str, kind: type[T]) -> T: ...

    def get(self, name: str, kind: type[Any] | None = None) -> Any:
        """A required phase's value, checked against ``kind`` when given (typed access).

        ``ctx.get("database", Database)`` is a ``Database`` to the type
        checker, and a ``TypeError`` naming both types if the value is not one.
        """
        value = self[name]
        if kind is not None and not isinstance(value, kind):
            raise TypeError(
                f"phase {self.name!r}: the value of {name!r} is a {type(value).__name__}, "
                f"not a {kind.__name__}"
            )
        return value

    def remaining(self) -> float:
        """Seconds left before this phase's deadline (on the run's clock)."""
        return self.deadline - self.clock.monotonic()

    def extend_deadline(self, seconds: float, reason: str) -> float:
        """Let this phase run until ``seconds`` after it began; return the seconds now left.

        Only ever later, and never past the startup budget; the report's
        deadline and its source (with ``reason``) say so. For a phase whose
        dependency has shown it is up but busy: a learned deadline predicts
        how long a healthy start takes, not a wait for a free connection
        slot (:class:`~smd.phases.DatabasePhase` falls back to the deadline
        it would have had without history when PostgreSQL answers "too many
        connections"). Outside a run (no runner enforces a deadline) it
        changes nothing. In a ``once=True`` phase it does not reach the fleet
        coordinator, which fixed the work's deadline when the work began.
        """
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be positive and finite, got {seconds!r}")
        if self._on_extend is not None:
            self._on_extend(self.name, seconds, reason)
        return self.remaining()

    def record_attempt(self, start: float, end: float, ok: bool, /, **detail: object) -> Attempt:
        """Note one attempt (start/end on :attr:`clock`) for the report, the trace and observers.

        Stored relative to the startup's start, like phase times.
        """
        # The retry vocabulary is imported by the phases that make attempts,
        # not by every `smd plan` that only reads phase declarations.
        from smd._probe import Attempt

        attempt = Attempt(
            len(self.attempts) + 1, start - self.origin, end - self.origin, ok, dict(detail)
        )
        self.attempts.append(attempt)
        if self._on_attempt is not None:
            self._on_attempt(attempt)
        return attempt
