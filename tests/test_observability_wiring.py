"""The observers a run gets without asking: spans when the app uses OpenTelemetry
(SMD_OTEL__ENABLED turns them off), /metrics on the health app with the
prometheus extra, fed by the lifespan's runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from smd import PhaseContext, Startup, load_settings
from smd.asgi import health_app, smd_lifespan
from smd.history import MemoryHistoryStore

SPANS = """
    import json, anyio, smd
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from smd.history import MemoryHistoryStore

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)   # the app sets its SDK up first
    s = smd.Startup("svc")
    @s.phase
    async def db(ctx):
        return 1
    settings = smd.load_settings(environment="test", log_level="warning")
    anyio.run(lambda: smd.run_startup(s, settings=settings, store=MemoryHistoryStore()))
    print(json.dumps(sorted(sp.name for sp in memory.get_finished_spans())))
"""


def spans(**env: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SPANS)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SMD_")}, **env},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_run_emits_spans_when_the_app_set_up_opentelemetry() -> None:
    assert spans() == ["db", "smd.startup"]


def test_smd_otel_enabled_false_turns_them_off() -> None:
    assert spans(SMD_OTEL__ENABLED="false") == []


async def test_the_health_app_serves_the_lifespan_runs_metrics() -> None:
    pytest.importorskip("prometheus_client")
    startup = Startup("metered")

    @startup.phase(timeout=2)
    async def warm(ctx: PhaseContext) -> str:
        return "ok"

    lifespan = smd_lifespan(
        startup,
        settings=load_settings(environment="test", log_level="warning"),
        store=MemoryHistoryStore(),
        handle_signals=False,
    )
    async with lifespan(object()):
        transport = httpx.ASGITransport(app=health_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://smd") as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'smd_phase_duration_seconds_count{outcome="ok",phase="warm"}' in response.text
    assert 'smd_readiness_state{state="ready"} 1.0' in response.text
