"""OpenTelemetry spans (smd.otel) on a real SDK TracerProvider with the in-memory exporter.

Real runs drive them: phases that succeed (with attempts), fail, are bypassed
(development: permissive), are skipped, are cancelled, recover in the
background, and tear down. The tests check the span tree, the attributes,
the status, that every time is the run clock's reading (exact nesting, with
an injected ManualClock so the expected nanoseconds are known), and that a
generated password appears in no attribute, event, link or status.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import smd.otel
from smd import (
    Failure,
    FailureKind,
    Phase,
    PhaseContext,
    PhaseError,
    Report,
    Startup,
    StartupFailed,
    lifecycle,
    load_settings,
    run_startup,
)
from smd.clock import ManualClock
from smd.events import Event, PhaseStarted, Recovered
from smd.history import MemoryHistoryStore

PASSWORD = secrets.token_urlsafe(18)
DSN = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/app"
MS = 1_000_000  # nanoseconds


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def tracing(provider: TracerProvider) -> smd.otel.SpanObserver:
    obs = smd.otel.observer(tracer_provider=provider)
    assert obs is not None
    return obs


class Recording:
    """Every event, plus an anyio event set on ``Recovered``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.recovered = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Recovered):
            self.recovered.set()

    def started(self, phase: str) -> PhaseStarted:
        (e,) = [e for e in self.events if isinstance(e, PhaseStarted) and e.phase == phase]
        return e


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = by_name(spans, name)
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ctx_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def start_end(span: ReadableSpan) -> tuple[int, int]:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.start_time, span.end_time


def nests(child: ReadableSpan, parent: ReadableSpan) -> bool:
    (cs, ce), (ps, pe) = start_end(child), start_end(parent)
    return ps <= cs <= ce <= pe


def everything_said(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, event, link and status text of every span."""
    parts: list[str] = []
    for s in spans:
        parts += [s.name, repr(attrs(s)), str(s.status.description)]
        parts += [repr((e.name, dict(e.attributes or {}))) for e in s.events]
        parts += [repr(dict(link.attributes or {})) for link in s.links]
    return "\n".join(parts)


# -- phases ------------------------------------------------------------------------------


async def config(ctx: PhaseContext) -> str:
    await ctx.clock.sleep(0.1)
    return "cfg"


async def db(ctx: PhaseContext) -> str:
    """Two refused attempts (the message names the DSN), then one that answers."""
    for n in range(3):
        start = ctx.clock.monotonic()
        await ctx.clock.sleep(0.05)
        ok = n == 2
        ctx.record_attempt(
            start,
            ctx.clock.monotonic(),
            ok,
            kind=None if ok else "infrastructure",
            message="answered" if ok else f"connection to {DSN} refused",
        )
    return "pool"


async def cache_down(ctx: PhaseContext) -> None:
    # No sleep: it runs beside config on the one ManualClock, whose times stay exact.
    raise PhaseError(
        Failure(
            FailureKind.INFRASTRUCTURE,
            f"redis at {DSN} refused (password={PASSWORD})",
            code="ECONNREFUSED",
        )
    )


async def cache_probe(ctx: PhaseContext) -> str:
    return "cache client"


async def search(ctx: PhaseContext) -> None:
    return None


async def close(value: object) -> None:
    return None


def degraded_startup() -> Startup:
    s = Startup("svc")
    s.add(Phase(name="config", run=config, teardown=close))
    s.add(Phase(name="db", run=db, requires=("config",), teardown=close, target=DSN))
    s.add(Phase(name="cache", run=cache_down, recovery=cache_probe))
    s.add(Phase(name="search", run=search, requires=("cache",)))
    return s


async def test_span_tree_attributes_status_timing_recovery_and_teardown(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter
    seen = Recording()
    async with lifecycle(
        degraded_startup(),
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=ManualClock(),
        observers=[tracing(provider), seen],
    ) as run:
        with anyio.fail_after(10):
            await seen.recovered.wait()
        report = run.report
        assert report is not None
    spans = memory.get_finished_spans()

    # The tree: one startup span; one child per phase, named after it.
    root = one(spans, "smd.startup")
    assert root.parent is None
    phases = {name: one(spans, name) for name in ("config", "db", "cache", "search")}
    for span in phases.values():
        assert parent_id(span) == ctx_id(root)
        assert trace_id(span) == trace_id(root)
    attempts = sorted(
        by_name(spans, "smd.attempt"), key=lambda s: int(attrs(s)["smd.attempt.number"])
    )
    assert [attrs(s)["smd.attempt.number"] for s in attempts] == [1, 2, 3]
    assert all(parent_id(a) == ctx_id(phases["db"]) for a in attempts)
    assert [a.status.status_code for a in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [attrs(a)["smd.attempt.ok"] for a in attempts] == [False, False, True]

    # The startup span.
    expected = {
        "smd.startup.name": "svc",
        "smd.startup.environment": "development",
        "smd.startup.mode": "concurrent",
        "smd.startup.budget": report.budget,
        "smd.startup.state": "degraded",
        "smd.startup.duration": report.duration,
        "smd.startup.phases": 4,
        "smd.startup.exit_code": 0,
    }
    got = attrs(root)
    assert {k: got.get(k) for k in expected} == expected
    assert "smd.startup.failed_phase" not in got
    assert root.status.status_code is StatusCode.UNSET  # degraded is serving, not an error

    # Phase attributes: what the run's events said, and status ERROR only when
    # failed or bypassed.
    dba = attrs(phases["db"])
    started = seen.started("db")
    assert dba["smd.phase.outcome"] == "ok"
    assert dba["smd.phase.attempts"] == 3
    assert dba["smd.phase.deadline"] == started.deadline
    assert dba["smd.phase.deadline_source"] == started.deadline_source
    assert dba["smd.phase.attempt_deadline"] == started.attempt_deadline
    assert dba["smd.timeout.source"] == "default"
    assert "smd.failure.kind" not in dba
    assert "smd.bypass.action" not in dba
    assert phases["db"].status.status_code is StatusCode.UNSET
    ca = attrs(phases["cache"])
    assert ca["smd.phase.outcome"] == "bypassed"
    assert ca["smd.failure.kind"] == "infrastructure"
    assert ca["smd.failure.code"] == "ECONNREFUSED"
    assert ca["smd.bypass.action"] == "continue"
    assert ca["smd.bypass.mode"] == "permissive"
    assert ca["smd.bypass.forced"] is False
    assert phases["cache"].status.status_code is StatusCode.ERROR
    assert "bypassed: infrastructure ECONNREFUSED" in str(phases["cache"].status.description)
    sa = attrs(phases["search"])
    assert sa["smd.phase.outcome"] == "skipped"
    assert sa["smd.phase.reason"] == "requirement 'cache' ended bypassed"
    assert phases["search"].status.status_code is StatusCode.UNSET

    # Timing: explicit timestamps from the run's clock (ManualClock: exact).
    t0 = root.start_time
    assert t0 == round(1_700_000_000.0 * 1e9)  # the run's wall-clock start
    for name, span in phases.items():
        rep = report.phase(name)
        if rep.start is not None:
            assert start_end(span) == (t0 + round(rep.start * 1e9), t0 + round(rep.end * 1e9))  # type: ignore[operator]
        assert nests(span, root), name
    assert start_end(phases["config"]) == (t0, t0 + 100 * MS)
    assert start_end(phases["db"]) == (t0 + 100 * MS, t0 + 250 * MS)
    assert [start_end(a) for a in attempts] == [
        (t0 + 100 * MS, t0 + 150 * MS),
        (t0 + 150 * MS, t0 + 200 * MS),
        (t0 + 200 * MS, t0 + 250 * MS),
    ]
    assert all(nests(a, phases["db"]) for a in attempts)
    # Skipped: zero length, when its requirement ended.
    assert start_end(phases["search"]) == (start_end(phases["cache"])[1],) * 2
    assert start_end(root)[1] == t0 + round(report.duration * 1e9)

    # Recovery: a span of its own trace, linked to the startup span.
    recovery = one(spans, "smd.recovery")
    (rec_event,) = [e for e in seen.events if isinstance(e, Recovered)]
    assert recovery.parent is None
    assert trace_id(recovery) != trace_id(root)
    assert [link.context.span_id for link in recovery.links] == [ctx_id(root)]
    ra = attrs(recovery)
    assert ra["smd.phase.name"] == "cache"
    assert ra["smd.recovery.time_to_ready"] == rec_event.time_to_ready
    assert ra["smd.recovery.probes"] == rec_event.probes >= 1
    cache = report.phase("cache")
    assert start_end(recovery) == (
        t0 + round(cache.end * 1e9),  # type: ignore[operator]
        t0 + round((cache.start + rec_event.time_to_ready) * 1e9),  # type: ignore[operator]
    )

    # Teardown at shutdown (after the startup span ended): linked to it, in
    # reverse plan order.
    teardowns = by_name(spans, "smd.teardown")
    assert [attrs(s)["smd.phase.name"] for s in teardowns] == ["db", "config"]
    for s in teardowns:
        assert [link.context.span_id for link in s.links] == [ctx_id(root)]
        assert attrs(s)["smd.teardown.ok"] is True
        assert start_end(s)[0] >= start_end(root)[1]

    # No password anywhere, although it was in a target, a failure message and attempts.
    said = everything_said(spans)
    assert PASSWORD not in said
    assert "127.0.0.1:5432/app" in said  # the DSN itself is there, masked
    assert "***" in said


async def test_failed_run_errors_cancels_and_nests_its_rollback(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = exporter

    async def bad_password(ctx: PhaseContext) -> None:
        await ctx.clock.sleep(0.2)
        raise PhaseError(
            Failure(
                FailureKind.CONFIGURATION,
                f"password authentication failed for {DSN}",
                code="28P01",
                details={"sqlstate": "28P01"},
            )
        )

    async def slow(ctx: PhaseContext) -> None:
        await anyio.sleep(30)  # the event loop's time: cancelled when db fails

    s = Startup("api")
    s.add(Phase(name="config", run=config, teardown=close))
    s.add(Phase(name="db", run=bad_password, requires=("config",)))
    s.add(Phase(name="warm", run=slow))
    s.add(Phase(name="after", run=search, requires=("db",)))
    with pytest.raises(StartupFailed) as err:
        await run_startup(
            s,
            settings=load_settings(environment="test"),
            store=MemoryHistoryStore(),
            clock=ManualClock(),
            observers=[tracing(provider)],
        )
    report: Report = err.value.report
    spans = memory.get_finished_spans()
    root = one(spans, "smd.startup")
    assert root.status.status_code is StatusCode.ERROR
    assert "phase 'db' failed: configuration 28P01" in str(root.status.description)
    assert attrs(root)["smd.startup.state"] == "failed"
    assert attrs(root)["smd.startup.failed_phase"] == "db"
    assert attrs(root)["smd.startup.exit_code"] == report.exit_code() == 78

    dba = attrs(one(spans, "db"))
    assert dba["smd.phase.outcome"] == "failed"
    assert dba["smd.failure.kind"] == "configuration"
    assert dba["smd.failure.code"] == "28P01"
    assert dba["smd.bypass.action"] == "fail"
    assert dba["smd.bypass.mode"] == "strict"
    assert one(spans, "db").status.status_code is StatusCode.ERROR

    # The phase still running when db failed was cancelled: its span is ended
    # (not ERROR: it did not fail itself); the one never started has no span.
    warm = one(spans, "warm")
    assert attrs(warm)["smd.phase.outcome"] == "cancelled"
    assert warm.status.status_code is StatusCode.UNSET
    assert report.phase("after").outcome.value == "skipped"
    assert by_name(spans, "after") == []

    # The rollback ran inside the run: its teardown span nests in the startup span.
    (teardown,) = by_name(spans, "smd.teardown")
    assert parent_id(teardown) == ctx_id(root)
    assert teardown.links == ()
    for span in [*by_name(spans, "config"), one(spans, "db"), warm, teardown]:
        assert parent_id(span) == ctx_id(root)
        assert nests(span, root), span.name
    assert PASSWORD not in everything_said(spans)


async def test_a_provider_without_an_sdk_records_nothing_and_costs_no_spans() -> None:
    obs = smd.otel.observer(tracer_provider=NoOpTracerProvider())
    assert obs is not None
    report = await run_startup(
        degraded_startup(),
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=ManualClock(),
        observers=[obs],
    )
    assert report.state.value == "degraded"


def run_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter of this venv; its last stdout line as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_smd_and_its_observers_does_not_import_opentelemetry() -> None:
    loaded = run_python(
        """
        import json, sys, anyio
        import smd, smd.otel, smd.prometheus, smd.alerts
        from smd.history import MemoryHistoryStore

        s = smd.Startup("svc")
        @s.phase
        async def a(ctx):
            return 1
        settings = smd.load_settings(environment="test", log_level="warning")
        anyio.run(lambda: smd.run_startup(s, settings=settings, store=MemoryHistoryStore()))
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules}
                                & {"opentelemetry", "prometheus_client"})))
        """
    )
    assert loaded == []


def test_without_the_api_the_factory_returns_none() -> None:
    result = run_python(
        """
        import importlib.abc, json, sys

        class NoOpenTelemetry(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import smd.otel
        print(json.dumps([smd.otel.available(), smd.otel.observer() is None]))
        """
    )
    assert result == [False, True]


def test_spans_go_through_the_global_provider_even_when_it_is_set_later() -> None:
    """No SDK at first (the API's no-op tracer), then the app installs one."""
    names = run_python(
        """
        import json, anyio, smd, smd.otel
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from smd.history import MemoryHistoryStore

        obs = smd.otel.observer()          # before any SDK: a proxy tracer
        s = smd.Startup("svc")
        @s.phase
        async def a(ctx):
            return 1
        settings = smd.load_settings(environment="test", log_level="warning")
        run = lambda: smd.run_startup(s, settings=settings, store=MemoryHistoryStore(), observers=[obs])
        anyio.run(run)                     # no SDK: nothing to export, nothing breaks
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(provider)
        anyio.run(run)
        spans = memory.get_finished_spans()
        print(json.dumps([[sp.name, sp.instrumentation_scope.name,
                           sp.instrumentation_scope.version == str(smd.__version__)]
                          for sp in spans]))
        """
    )
    assert names == [["a", "smd", True], ["smd.startup", "smd", True]]


async def test_one_process_wide_observer_keeps_concurrent_startups_apart(
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from smd.events import register_observer

    provider, memory = exporter
    unregister = register_observer(tracing(provider))
    try:

        async def run(name: str) -> None:
            s = Startup(name)
            s.add(Phase(name="config", run=config))
            s.add(Phase(name="db", run=db, requires=("config",)))
            await run_startup(
                s,
                settings=load_settings(environment="test"),
                store=MemoryHistoryStore(),
                clock=ManualClock(),
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "api")
            tg.start_soon(run, "worker")
    finally:
        unregister()
    spans = memory.get_finished_spans()
    roots = {attrs(s)["smd.startup.name"]: s for s in by_name(spans, "smd.startup")}
    assert sorted(roots) == ["api", "worker"]
    assert trace_id(roots["api"]) != trace_id(roots["worker"])
    for name, root in roots.items():
        children = [s for s in spans if parent_id(s) == ctx_id(root)]
        assert sorted(s.name for s in children) == ["config", "db"], name
        (dbs,) = [s for s in children if s.name == "db"]
        assert len([s for s in spans if parent_id(s) == ctx_id(dbs)]) == 3
