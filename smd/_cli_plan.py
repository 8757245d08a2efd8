"""``smd plan``: the order, the waves, every timeout and what each failure would mean.

A dry run: no network I/O, the history store is read (never written), and
every number comes from the functions ``smd run`` uses
(:func:`smd.timeouts.phase_timeout`, :func:`smd.bypass.decide`), so the
plan shows what the run will do.
"""

from __future__ import annotations

from typing import Any

from smd._deadline import phase_timeout
from smd._encode import encode
from smd._failures import Failure, FailureKind
from smd._history_handles import Histories
from smd._matrix import BypassMatrix
from smd._open_store import open_store
from smd._policy import DecisionContext, decide
from smd._settings import Settings
from smd._startup import Startup
from smd.clock import SystemClock

__all__ = ["plan_document", "render_plan"]


def plan_document(startup: Startup, settings: Settings) -> dict[str, Any]:
    """Everything ``smd plan`` shows, as data (rounded and redacted)."""
    store = open_store(settings, readonly=True, shared=False)  # no network I/O
    plan = startup.plan()
    clock = SystemClock()
    histories = Histories(
        store, startup=startup.name, phases=plan.phases, settings=settings, clock=clock
    )
    loaded = store.load_many(list(dict.fromkeys(histories.keys.values())), clock=clock)
    env = settings.environment.value
    phases: list[dict[str, Any]] = []
    for name in plan.order:
        phase = plan.phase(name)
        key = histories.keys[name]
        history = loaded[key]
        timeout = phase_timeout(phase.timeout_policy(), history, settings)
        policy = phase.bypass or startup.bypass or BypassMatrix()
        context = DecisionContext(
            phase=name,
            environment=env,
            essential=phase.essential,
            target=key,
            history=history,
            clock=clock,
            settings=settings.bypass,
        )
        decisions = {
            k.value: decide(policy, Failure(k, f"dry run: a {k.value} failure"), context)
            for k in FailureKind
        }
        phases.append(
            {
                "name": name,
                "wave": plan.wave_of(name),
                "requires": list(phase.requires),
                "essential": phase.essential,
                "target": key,
                "timeout": timeout,
                "bypass": decisions,
                "recovery_probe": phase.recovery is not None,
                "once_key": (phase.once_key or f"{startup.name}/{name}") if phase.once else None,
            }
        )
    doc: dict[str, Any] = encode(
        {
            "startup": startup.name,
            "environment": env,
            "budget": settings.startup_budget,
            "order": plan.order,
            "waves": plan.waves,
            "phases": phases,
        }
    )
    return doc


def render_plan(doc: dict[str, Any]) -> str:
    """The text rendering of :func:`plan_document`."""
    lines = [
        f"startup {doc['startup']!r}: {len(doc['order'])} phases in {len(doc['waves'])} waves "
        f"(environment {doc['environment']}, budget {doc['budget']:g}s; dry run, no network I/O)",
        "order: " + " -> ".join(doc["order"]),
    ]
    for i, wave in enumerate(doc["waves"]):
        lines.append(f"wave {i}: {', '.join(wave)}")
    lines.append("")
    lines.append("timeouts:")
    for p in doc["phases"]:
        t = p["timeout"]
        lines.append(
            f"  {p['name']}: {t['seconds']:.3g}s, per attempt {t['attempt_seconds']:.3g}s "
            f"[{t['source']}] {t['explanation']}"
        )
    once = [p for p in doc["phases"] if p.get("once_key")]
    if once:
        lines.append("")
        lines.append("once per fleet (one replica at a time, skipped once one completed it):")
        lines.extend(f"  {p['name']}: key {p['once_key']!r}" for p in once)
    kinds = [k.value for k in FailureKind]
    lines.append("")
    lines.append("bypass decisions (fail = startup stops, continue = degraded):")
    width = max((len(p["name"]) for p in doc["phases"]), default=5)
    lines.append("  " + "phase".ljust(width) + "  " + "  ".join(k[:14].ljust(14) for k in kinds))
    for p in doc["phases"]:
        cells = [p["bypass"][k]["action"].ljust(14) for k in kinds]
        lines.append("  " + p["name"].ljust(width) + "  " + "  ".join(cells))
    lines.append("")
    lines.append("reasons (shown once for phases whose reason differs only by their name):")
    for k in kinds:
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in doc["phases"]:
            generic = p["bypass"][k]["reason"].replace(repr(p["name"]), "\0")
            groups.setdefault(generic, []).append(p)
        for members in groups.values():
            first = members[0]
            same = [m["name"] for m in members[1:]]
            tail = f" (the same for {', '.join(same)})" if same else ""
            lines.append(f"  {k} [{first['name']}]: {first['bypass'][k]['reason']}{tail}")
    return "\n".join(lines)
