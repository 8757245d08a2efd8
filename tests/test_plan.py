"""Validation errors, the stable order and the waves of a plan.

No phase runs, except to show that a callable object accepted as a phase is run.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smd import (
    Environment,
    FailureKind,
    InvalidPlan,
    Outcome,
    Phase,
    PhaseContext,
    Plan,
    Startup,
    lifecycle,
    load_settings,
)
from smd._cli_plan import plan_document, render_plan
from smd.bypass import BypassMatrix, PermissivePolicy, StrictPolicy
from smd.clock import ManualClock
from smd.history import MemoryHistoryStore
from smd.testing import test_settings


async def noop(ctx: PhaseContext) -> None:
    return None


def phase(name: str, *requires: str, **kw: Any) -> Phase:
    return Phase(name=name, run=noop, requires=requires, **kw)


def startup_of(*phases: Phase) -> Startup:
    s = Startup("app")
    for p in phases:
        s.add(p)
    return s


# -- validation: one clear error each, naming the culprit --------------------


def test_cycle_is_printed_as_a_path() -> None:
    s = startup_of(phase("a", "b"), phase("b", "c"), phase("c", "a"))
    with pytest.raises(InvalidPlan) as info:
        s.plan()
    assert str(info.value) == "cycle: a -> b -> c -> a"


def test_cycle_not_through_the_first_phase_is_printed_from_where_it_closes() -> None:
    s = startup_of(phase("root"), phase("x", "root", "z"), phase("y", "x"), phase("z", "y"))
    with pytest.raises(InvalidPlan) as info:
        s.plan()
    assert str(info.value) == "cycle: x -> z -> y -> x"


def test_self_requirement_is_a_cycle() -> None:
    s = startup_of(phase("a", "a"))
    with pytest.raises(InvalidPlan, match=r"^cycle: a -> a$"):
        s.plan()


def test_unknown_requirement_names_it_and_who_asked() -> None:
    s = startup_of(phase("config"), phase("cache", "config", "databse"))
    with pytest.raises(InvalidPlan) as info:
        s.plan()
    assert "'cache'" in str(info.value)
    assert "'databse'" in str(info.value)
    assert "unknown" in str(info.value)


def test_duplicate_name_by_decorator() -> None:
    s = Startup("api")

    @s.phase()
    async def config(ctx: PhaseContext) -> None: ...

    with pytest.raises(InvalidPlan) as info:

        @s.phase(name="config")
        async def other(ctx: PhaseContext) -> None: ...

    assert "duplicate" in str(info.value)
    assert "'config'" in str(info.value)
    assert "'api'" in str(info.value)


def test_duplicate_name_by_add() -> None:
    s = startup_of(phase("db"))
    with pytest.raises(InvalidPlan, match=r"duplicate phase name 'db'"):
        s.add(phase("db"))
    assert [p.name for p in s.phases] == ["db"]


def test_build_plan_rejects_duplicates_even_without_startup() -> None:
    from smd._plan import build_plan

    with pytest.raises(InvalidPlan, match=r"duplicate phase name 'x'"):
        build_plan("s", [phase("x"), phase("x")])


def test_non_async_callable_is_rejected_with_its_name() -> None:
    def load_config(ctx: PhaseContext) -> None: ...

    with pytest.raises(InvalidPlan) as info:
        Phase(name="config", run=load_config)  # type: ignore[arg-type]
    assert "'config'" in str(info.value)
    assert "load_config" in str(info.value)
    assert "async" in str(info.value)


def test_non_async_callable_by_decorator() -> None:
    s = Startup("api")

    def sync_one(ctx: PhaseContext) -> None: ...

    with pytest.raises(InvalidPlan, match=r"phase 'sync_one'.*not an async callable"):
        s.phase(sync_one)  # type: ignore[type-var]


async def test_object_with_async_call_is_accepted() -> None:
    # Accepted means run: the phase calls the object and publishes what it returned.
    made = object()

    class Probe:
        def __init__(self) -> None:
            self.calls: list[PhaseContext] = []

        async def __call__(self, ctx: PhaseContext) -> object:
            self.calls.append(ctx)
            return made

    probe = Probe()
    startup = startup_of(Phase(name="probe", run=probe))
    async with lifecycle(
        startup, settings=test_settings(), clock=ManualClock(), store=MemoryHistoryStore()
    ) as run:
        assert run.report is not None
        assert run.report.phase("probe").outcome is Outcome.OK
        assert run.values["probe"] is made
    assert len(probe.calls) == 1


def test_non_async_teardown_is_rejected() -> None:
    def close(value: object) -> None: ...

    with pytest.raises(InvalidPlan, match=r"phase 'db': teardown must be an async callable"):
        Phase(name="db", run=noop, teardown=close)  # type: ignore[arg-type]


def test_non_async_recovery_is_rejected() -> None:
    def probe(ctx: PhaseContext) -> None: ...

    with pytest.raises(InvalidPlan, match=r"phase 'db': recovery must be an async callable"):
        Phase(name="db", run=noop, recovery=probe)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "timeout", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "5", [5]]
)
def test_timeout_must_be_a_positive_finite_number(timeout: object) -> None:
    with pytest.raises(InvalidPlan) as info:
        Phase(name="cache", run=noop, timeout=timeout)  # type: ignore[arg-type]
    text = str(info.value)
    assert "'cache'" in text
    assert "positive finite number" in text
    assert repr(timeout) in text


def test_timeout_error_from_the_decorator_names_the_phase() -> None:
    s = Startup("api")
    with pytest.raises(InvalidPlan, match=r"phase 'warm': timeout must be a positive finite"):

        @s.phase(timeout=math.nan)
        async def warm(ctx: PhaseContext) -> None: ...

    assert s.phases == ()


@pytest.mark.parametrize("timeout", [0.001, 1, 2.5, 10**6])
def test_valid_timeouts_are_floats(timeout: float) -> None:
    p = Phase(name="x", run=noop, timeout=timeout)
    assert p.timeout == float(timeout)
    assert isinstance(p.timeout, float)


@pytest.mark.parametrize("name", ["", "1st", "has space", "a/b", "é", "-x"])
def test_bad_phase_names(name: str) -> None:
    with pytest.raises(InvalidPlan) as info:
        Phase(name=name, run=noop)
    assert repr(name) in str(info.value)
    assert "invalid phase name" in str(info.value)


def test_phase_name_must_be_a_string() -> None:
    with pytest.raises(InvalidPlan, match="invalid phase name 5"):
        Phase(name=5, run=noop)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["db", "_private", "cache.warm", "pg:primary", "x-1", "A9"])
def test_good_phase_names(name: str) -> None:
    assert Phase(name=name, run=noop).name == name


def test_requirement_listed_twice() -> None:
    with pytest.raises(InvalidPlan) as info:
        Phase(name="api", run=noop, requires=("db", "cache", "db"))
    assert "'api'" in str(info.value)
    assert "twice" in str(info.value)
    assert "'db'" in str(info.value)


def test_requirement_that_is_not_a_name() -> None:
    with pytest.raises(InvalidPlan, match=r"phase 'api': requirement 3 is not a phase name"):
        Phase(name="api", run=noop, requires=("db", 3))  # type: ignore[arg-type]


def test_single_string_requirement_is_one_name_not_letters() -> None:
    p = Phase(name="api", run=noop, requires="db")  # type: ignore[arg-type]
    assert p.requires == ("db",)


def test_bypass_without_decide_is_rejected() -> None:
    with pytest.raises(InvalidPlan, match=r"phase 'db': bypass must have a decide"):
        Phase(name="db", run=noop, bypass=object())  # type: ignore[arg-type]


def test_add_rejects_what_is_not_a_phase() -> None:
    with pytest.raises(InvalidPlan, match="neither a Phase"):
        Startup("s").add(object())  # type: ignore[arg-type]


def test_add_accepts_phase_like_objects() -> None:
    class Ready:
        def to_phase(self) -> Phase:
            return phase("ready")

    s = Startup("s")
    assert s.add(Ready()).name == "ready"
    assert s.plan().order == ("ready",)


def test_startup_needs_a_name() -> None:
    with pytest.raises(InvalidPlan, match="non-empty name"):
        Startup("  ")


def test_invalid_plan_is_one_exception_type() -> None:
    assert issubclass(InvalidPlan, ValueError)


# -- order and waves -----------------------------------------------------------


def test_independent_phases_keep_declaration_order() -> None:
    s = startup_of(phase("zeta"), phase("alpha"), phase("mid"))
    plan = s.plan()
    assert plan.order == ("zeta", "alpha", "mid")
    assert plan.waves == (("zeta", "alpha", "mid"),)


def test_ties_are_broken_by_declaration_order_not_by_name() -> None:
    # c is declared first but needs b; a and b are free. The earliest declared
    # ready phase always goes next.
    s = startup_of(phase("c", "b"), phase("b"), phase("a"), phase("d", "a"))
    plan = s.plan()
    assert plan.order == ("b", "c", "a", "d")
    assert plan.waves == (("b", "a"), ("c", "d"))


def test_diamond() -> None:
    s = startup_of(
        phase("api", "db", "cache"),
        phase("cache", "config"),
        phase("db", "config"),
        phase("config"),
    )
    plan = s.plan()
    assert plan.order == ("config", "cache", "db", "api")
    assert plan.waves == (("config",), ("cache", "db"), ("api",))
    assert plan.wave_of("api") == 2
    assert plan.dependents() == {
        "api": (),
        "cache": ("api",),
        "db": ("api",),
        "config": ("cache", "db"),
    }


def test_wave_is_one_past_the_deepest_requirement() -> None:
    # d needs a (wave 0) and c (wave 2): it lands in wave 3, not wave 1.
    s = startup_of(phase("a"), phase("b", "a"), phase("c", "b"), phase("d", "a", "c"))
    assert s.plan().waves == (("a",), ("b",), ("c",), ("d",))


def test_empty_startup_has_an_empty_plan() -> None:
    plan = Startup("empty").plan()
    assert plan.order == ()
    assert plan.waves == ()


def test_planning_runs_no_phase() -> None:
    ran: list[str] = []

    async def record(ctx: PhaseContext) -> None:
        ran.append(ctx.name)

    async def close(value: object) -> None:
        ran.append("teardown")

    s = Startup("s")
    s.add(Phase(name="a", run=record, teardown=close, recovery=record))
    s.add(Phase(name="b", run=record, requires=("a",)))
    s.plan()
    s.plan()
    assert ran == []


def test_plan_to_dict() -> None:
    plan = startup_of(phase("a"), phase("b", "a")).plan()
    assert plan.to_dict() == {
        "startup": "app",
        "order": ["a", "b"],
        "waves": [["a"], ["b"]],
        "requires": {"a": [], "b": ["a"]},
    }
    assert plan.phase("b").requires == ("a",)
    with pytest.raises(KeyError):
        plan.phase("nope")
    with pytest.raises(KeyError):
        plan.wave_of("nope")


# -- what `smd plan` says about each phase ----------------------------------------

_REASON_LINE = re.compile(
    r"^  (?P<kind>[a-z]+) \[(?P<name>[^\]]+)\]: (?P<reason>.*?)"
    r"(?: \(the same for (?P<same>[^()]+)\))?$"
)


@pytest.mark.parametrize("env", list(Environment), ids=str)
def test_plan_reasons_name_the_phase(
    env: Environment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 §5: every bypass reason `smd plan` prints names its phase (never a
    literal ``{phase}``), for the matrix and for other policies alike."""
    for name in list(os.environ):
        if name.startswith("SMD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    s = startup_of(
        phase("config"),
        phase("db", "config", essential=True),
        phase("cache", "config"),
        phase("warm", "cache"),
        phase("audit", bypass=StrictPolicy()),
        phase("metrics", bypass=PermissivePolicy()),
        phase("search", bypass=BypassMatrix(overrides={"*": {"timeout": "continue"}})),
    )
    settings = load_settings(environment=env.value, history_path=tmp_path / "h.sqlite3")
    doc = plan_document(s, settings)
    names = [p["name"] for p in doc["phases"]]
    assert names == list(s.plan().order)
    kinds = [k.value for k in FailureKind]
    for p in doc["phases"]:
        assert list(p["bypass"]) == kinds
        for decision in p["bypass"].values():
            assert f"phase {p['name']!r}" in decision["reason"]
            assert "{" not in decision["reason"]

    text = render_plan(doc)
    assert "{phase}" not in text
    assert "{" not in text
    reasons = text.split(
        "reasons (shown once for phases whose reason differs only by their name):\n"
    )
    assert len(reasons) == 2
    covered: dict[str, list[str]] = {k: [] for k in kinds}
    by_name = {p["name"]: p for p in doc["phases"]}
    for line in reasons[1].splitlines():
        m = _REASON_LINE.match(line)
        assert m is not None, f"unexpected reason line: {line!r}"
        kind, name, reason = m["kind"], m["name"], m["reason"]
        assert f"phase {name!r}" in reason  # the line names its own phase
        assert reason == by_name[name]["bypass"][kind]["reason"]
        covered[kind].append(name)
        same = m["same"].split(", ") if m["same"] else []
        for other in same:
            # Shown once: the same reason, with the other phase's name in it.
            theirs = by_name[other]["bypass"][kind]["reason"]
            assert theirs == reason.replace(repr(name), repr(other))
            covered[kind].append(other)
    # Every phase's reason is given for every kind, exactly once.
    assert {k: sorted(v) for k, v in covered.items()} == {k: sorted(names) for k in kinds}


# -- properties on random graphs ---------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[Phase]:
    """A random DAG declared in a random order (so requirements may come later)."""
    n = draw(st.integers(min_value=0, max_value=30))
    names = [f"p{i}" for i in range(n)]
    requires: list[tuple[str, ...]] = []
    for i in range(n):
        # Edges only point to lower topological ranks: acyclic by construction.
        reqs = draw(st.lists(st.sampled_from(names[:i]), unique=True) if i else st.just([]))
        requires.append(tuple(reqs))
    declared = draw(st.permutations(range(n)))
    return [phase(names[i], *requires[i]) for i in declared]


def reference_order(phases: Sequence[Phase]) -> tuple[str, ...]:
    """Slow and obvious: repeatedly take the first declared phase whose requirements are done."""
    done: list[str] = []
    left = list(phases)
    while left:
        nxt = next(p for p in left if all(r in done for r in p.requires))
        done.append(nxt.name)
        left.remove(nxt)
    return tuple(done)


@settings(max_examples=100, deadline=None)
@given(dags())
def test_every_requirement_comes_earlier(phases: list[Phase]) -> None:
    plan = startup_of(*phases).plan()
    assert sorted(plan.order) == sorted(p.name for p in phases)
    position = {name: i for i, name in enumerate(plan.order)}
    for p in phases:
        for r in p.requires:
            assert position[r] < position[p.name]


@settings(max_examples=100, deadline=None)
@given(dags())
def test_same_declarations_same_plan(phases: list[Phase]) -> None:
    first = startup_of(*phases).plan()
    # Fresh phase objects with the same declarations, in the same order.
    again = startup_of(*(phase(p.name, *p.requires) for p in phases)).plan()
    assert again.order == first.order
    assert again.waves == first.waves
    assert startup_of(*phases).plan().order == first.order


@settings(max_examples=100, deadline=None)
@given(dags())
def test_order_breaks_ties_by_declaration(phases: list[Phase]) -> None:
    assert startup_of(*phases).plan().order == reference_order(phases)


@settings(max_examples=100, deadline=None)
@given(dags())
def test_waves_are_minimal(phases: list[Phase]) -> None:
    plan: Plan = startup_of(*phases).plan()
    by_name = {p.name: p for p in phases}
    expected: dict[str, int] = {}
    for name in plan.order:  # requirements first, so their waves are known
        reqs = by_name[name].requires
        expected[name] = 1 + max(expected[r] for r in reqs) if reqs else 0
    assert {name: plan.wave_of(name) for name in by_name} == expected
    # Waves partition the phases, none is empty, each lists declaration order.
    flat = [name for wave in plan.waves for name in wave]
    assert sorted(flat) == sorted(by_name)
    declared = [p.name for p in phases]
    for wave in plan.waves:
        assert wave
        assert list(wave) == sorted(wave, key=declared.index)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_an_added_back_edge_is_reported_as_a_real_cycle(
    phases: list[Phase], data: st.DataObject
) -> None:
    # Take a path a <- ... <- b in the DAG and make a require b: the error's
    # path must follow real requirement edges and close on itself.
    edges = [(p.name, r) for p in phases for r in p.requires]
    if not edges:
        return
    dependent, requirement = data.draw(st.sampled_from(edges))
    rebuilt = [
        phase(p.name, *p.requires, dependent) if p.name == requirement else p for p in phases
    ]
    with pytest.raises(InvalidPlan) as info:
        startup_of(*rebuilt).plan()
    text = str(info.value)
    assert text.startswith("cycle: ")
    path = text.removeprefix("cycle: ").split(" -> ")
    assert path[0] == path[-1]
    assert len(path) >= 3
    reqs = {p.name: set(p.requires) for p in rebuilt}
    for a, b in itertools.pairwise(path):
        assert b in reqs[a], f"{a} -> {b} is not a requirement edge"
