"""Chrome trace-event output (opens in Perfetto / chrome://tracing).

One complete (``ph: X``) span per phase, its attempts nested inside it on
the same lane; concurrent phases get separate lanes so spans nest properly.
"""

from __future__ import annotations

import json
from typing import Any

from smd._redact import redact_value
from smd._report import Report

__all__ = ["trace_events", "write_trace"]


def _us(seconds: float) -> float:
    return round(seconds * 1_000_000, 3)


def trace_events(report: Report) -> dict[str, Any]:
    """The trace document for a report."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"smd {report.startup}"}},
    ]
    lanes: list[float] = []  # end time of the last span on each lane
    spans = sorted(
        (p for p in report.phases if p.start is not None and p.end is not None),
        key=lambda p: (p.start or 0.0, report.plan.order.index(p.name)),
    )
    origin = report.started_at
    for p in spans:
        start, end = p.start or 0.0, p.end or 0.0
        lane = next((i for i, busy in enumerate(lanes) if busy <= start), len(lanes))
        if lane == len(lanes):
            lanes.append(end)
            events.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": 1,
                    "tid": lane + 1,
                    "args": {"name": f"lane {lane + 1}"},
                }
            )
        else:
            lanes[lane] = end
        events.append(
            {
                "name": p.name,
                "cat": "phase",
                "ph": "X",
                "pid": 1,
                "tid": lane + 1,
                "ts": _us(start),
                "dur": _us(end - start),
                "args": {
                    "outcome": p.outcome.value,
                    "wave": p.wave,
                    "deadline": p.deadline,
                    "deadline_source": p.deadline_source,
                    "failure": p.failure.to_dict() if p.failure else None,
                    "decision": p.decision.to_dict() if p.decision else None,
                },
            }
        )
        for a in p.attempts:
            a_start = max(a.start, start)
            events.append(
                {
                    "name": f"{p.name} attempt {a.number}",
                    "cat": "attempt",
                    "ph": "X",
                    "pid": 1,
                    "tid": lane + 1,
                    "ts": _us(a_start),
                    "dur": _us(max(0.0, a.end - a.start)),
                    "args": {"ok": a.ok, **dict(a.detail)},
                }
            )
    doc = {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "startup": report.startup,
            "state": report.state.value,
            "environment": report.environment,
            "started_at": origin,
        },
    }
    redacted: dict[str, Any] = redact_value(doc)
    return redacted


def write_trace(report: Report, path: str) -> None:
    """Write the trace document for ``report`` to ``path``."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(trace_events(report), fh, indent=1, default=str)
