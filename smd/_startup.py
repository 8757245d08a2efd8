"""The ``Startup``: a named set of phases, the long-lived definition a run is made from."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar, overload

from smd._phase import Phase, PhaseFn, PhaseLike, TeardownFn
from smd._plan import Plan, build_plan
from smd._policy import BypassPolicy
from smd._timeout_base import TimeoutPolicy
from smd.exceptions import InvalidPlan

if TYPE_CHECKING:
    from smd._settings import Settings
    from smd.events import Observer

__all__ = ["Startup"]

F = TypeVar("F", bound=PhaseFn)


class Startup:
    """A named set of phases: declare them, get a :class:`Plan`, run them.

    ::

        startup = Startup("api")

        @startup.phase()
        async def config(ctx): return load_config()

        @startup.phase(requires=["config"], timeout=5)
        async def cache(ctx): return await warm(ctx["config"])
    """

    def __init__(
        self,
        name: str,
        *,
        bypass: BypassPolicy | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidPlan("a startup needs a non-empty name")
        if bypass is not None and not isinstance(bypass, BypassPolicy):
            raise InvalidPlan(
                f"startup {name!r}: bypass must have a decide(failure, context) method"
            )
        self.name = name
        self.bypass = bypass
        self.observers: tuple[Observer, ...] = tuple(observers)
        for observer in self.observers:
            if not callable(observer):
                raise InvalidPlan(f"startup {name!r}: observer {observer!r} is not callable")
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
        once: bool = False,
        once_key: str | None = None,
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
        once: bool = False,
        once_key: str | None = None,
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
                    once=once,
                    once_key=once_key,
                    description=(inspect.getdoc(f) or "").split("\n", 1)[0],
                )
            )
            return f

        return decorate(fn) if fn is not None else decorate

    def plan(self) -> Plan:
        """Validate the graph and compute the order and waves (runs nothing)."""
        return build_plan(self.name, self.phases)

    def __repr__(self) -> str:
        return f"Startup({self.name!r}, phases={list(self._phases)})"
