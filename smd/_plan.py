"""The validated graph: a stable topological order and minimal waves."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from smd._phase import Phase
from smd.exceptions import InvalidPlan

__all__ = ["Plan", "build_plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Phases in a deterministic order, and the waves they fall into.

    ``order`` is a topological order with ties broken by declaration order.
    ``waves[i]`` holds the phases whose requirements all lie in earlier
    waves (each phase in the earliest such wave), in declaration order.
    """

    startup: str
    phases: tuple[Phase, ...]
    order: tuple[str, ...]
    waves: tuple[tuple[str, ...], ...]
    # Name indexes: the scheduler and the runner look phases up once per
    # phase, and a linear scan made a run quadratic in the number of phases.
    _by_name: dict[str, Phase] = field(default_factory=dict, init=False, repr=False, compare=False)
    _wave: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update((p.name, p) for p in self.phases)
        self._wave.update((name, i) for i, wave in enumerate(self.waves) for name in wave)

    def phase(self, name: str) -> Phase:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(name) from None

    def wave_of(self, name: str) -> int:
        try:
            return self._wave[name]
        except KeyError:
            raise KeyError(name) from None

    def dependents(self) -> dict[str, tuple[str, ...]]:
        """Who requires each phase."""
        out: dict[str, list[str]] = {p.name: [] for p in self.phases}
        for p in self.phases:
            for r in p.requires:
                out[r].append(p.name)
        return {k: tuple(v) for k, v in out.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "startup": self.startup,
            "order": list(self.order),
            "waves": [list(w) for w in self.waves],
            "requires": {p.name: list(p.requires) for p in self.phases},
        }


def _find_cycle(phases: Sequence[Phase]) -> list[str] | None:
    """A cycle as a path ``[a, b, c, a]`` (a requires b ...), or None."""
    by_name = {p.name: p for p in phases}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in by_name:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            reqs = by_name[node].requires
            if i < len(reqs):
                stack[-1] = (node, i + 1)
                nxt = reqs[i]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt) :], nxt]
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def build_plan(startup: str, phases: Sequence[Phase]) -> Plan:
    """Validate and order ``phases``; raise :class:`InvalidPlan` naming the culprit."""
    index: dict[str, int] = {}
    for i, p in enumerate(phases):
        if p.name in index:
            raise InvalidPlan(f"duplicate phase name {p.name!r} in startup {startup!r}")
        index[p.name] = i
    for p in phases:
        for req in p.requires:
            if req not in index:
                raise InvalidPlan(f"phase {p.name!r} requires unknown phase {req!r}")
            if req == p.name:
                raise InvalidPlan(f"cycle: {p.name} -> {p.name}")
    cycle = _find_cycle(phases)
    if cycle is not None:
        raise InvalidPlan("cycle: " + " -> ".join(cycle))

    # Kahn's algorithm with a heap keyed on declaration index: stable order.
    missing = [len(p.requires) for p in phases]
    dependents: list[list[int]] = [[] for _ in phases]
    for i, p in enumerate(phases):
        for req in p.requires:
            dependents[index[req]].append(i)
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    level = [0] * len(phases)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for d in dependents[i]:
            level[d] = max(level[d], level[i] + 1)
            missing[d] -= 1
            if missing[d] == 0:
                heapq.heappush(ready, d)
    waves: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for i, p in enumerate(phases):
        waves[level[i]].append(p.name)
    return Plan(
        startup=startup,
        phases=tuple(phases),
        order=tuple(phases[i].name for i in order),
        waves=tuple(tuple(w) for w in waves),
    )
