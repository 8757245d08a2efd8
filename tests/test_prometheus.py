"""Prometheus metrics (smd.prometheus): a real registry fed by real runs, scraped over
HTTP from a real uvicorn serving ``metrics_app``, checked by ``promtool check
metrics``; and the Grafana dashboard in examples/ queries only metrics that exist.

promtool comes from Debian's ``prometheus`` package: when it is not on PATH
the test fetches that package with apt-get (as root) and unpacks only
promtool into a cache directory (installing the package would also start a
Prometheus server); it skips, saying why, only when that is impossible.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import smd.prometheus
from smd import (
    Failure,
    FailureKind,
    Phase,
    PhaseContext,
    PhaseError,
    Startup,
    StartupFailed,
    lifecycle,
    load_settings,
    run_startup,
)
from smd.clock import ManualClock
from smd.events import Event, Recovered, TimeoutComputed
from smd.history import MemoryHistoryStore

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"
PASSWORD = secrets.token_urlsafe(18)
DSN = f"postgresql://app:{PASSWORD}@127.0.0.1:5432/app"
PROMTOOL_CACHE = Path(tempfile.gettempdir()) / "smd-test-promtool"


# -- promtool ----------------------------------------------------------------------------


def _fetch_promtool() -> tuple[Path | None, str]:
    """promtool from Debian's prometheus package, unpacked into a cache; or why not."""
    cached = PROMTOOL_CACHE / "usr" / "bin" / "promtool"
    if cached.exists():
        return cached, ""
    if os.geteuid() != 0:
        return None, "promtool is not installed and installing it needs root (apt-get)"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None, "promtool is not installed and this machine has no apt-get/dpkg-deb"
    PROMTOOL_CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(PROMTOOL_CACHE, 0o755)  # apt's sandbox user writes the download there
    for attempt in range(2):
        got = subprocess.run(
            ["apt-get", "download", "-q", "prometheus"],
            cwd=PROMTOOL_CACHE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if got.returncode == 0:
            break
        if attempt == 0:  # an empty or stale package list: refresh it once
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
    debs = sorted(PROMTOOL_CACHE.glob("prometheus_*.deb"))
    if not debs:
        return None, f"apt-get download prometheus failed: {got.stderr.strip()[-300:]}"
    unpack = subprocess.run(
        f"dpkg-deb --fsys-tarfile {debs[-1]} | tar -x ./usr/bin/promtool",
        shell=True,
        cwd=PROMTOOL_CACHE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for deb in debs:
        deb.unlink()
    if unpack.returncode != 0 or not cached.exists():
        return None, f"could not unpack promtool: {unpack.stderr.strip()[-300:]}"
    return cached, ""


@pytest.fixture(scope="session")
def promtool() -> Path:
    found = shutil.which("promtool")
    if found:
        return Path(found)
    path, why = _fetch_promtool()
    if path is None:
        pytest.skip(why)
    return path


# -- a real uvicorn serving metrics_app ----------------------------------------------------


class Served:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"
        config = uvicorn.Config(
            smd.prometheus.metrics_app(registry), lifespan="on", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[Served]:
    with Served(registry) as s:
        yield s


async def scrape(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``(sample name, labels) -> value`` of a text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


# -- the runs ------------------------------------------------------------------------------


async def config(ctx: PhaseContext) -> str:
    await ctx.clock.sleep(0.1)
    return "cfg"


async def db(ctx: PhaseContext) -> str:
    for n in range(3):
        start = ctx.clock.monotonic()
        await ctx.clock.sleep(0.05)
        ctx.record_attempt(start, ctx.clock.monotonic(), n == 2)
    return "pool"


async def cache_down(ctx: PhaseContext) -> None:
    raise PhaseError(Failure(FailureKind.INFRASTRUCTURE, "refused", code="ECONNREFUSED"))


async def cache_probe(ctx: PhaseContext) -> str:
    return "client"


async def bad_password(ctx: PhaseContext) -> None:
    raise PhaseError(Failure(FailureKind.CONFIGURATION, f"28P01 for {DSN}", code="28P01"))


class Recording:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.recovered = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Recovered):
            self.recovered.set()


async def test_real_runs_scraped_from_uvicorn(
    registry: CollectorRegistry, served: Served, promtool: Path
) -> None:
    metrics = smd.prometheus.PrometheusObserver(registry)
    seen = Recording()
    gate = anyio.Event()  # the dependency comes back once the degraded state was scraped

    async def comes_back(ctx: PhaseContext) -> str:
        await gate.wait()
        return "client"

    s = Startup("svc")
    s.add(Phase(name="config", run=config))
    s.add(Phase(name="db", run=db, requires=("config",), target=DSN))
    s.add(Phase(name="cache", run=cache_down, recovery=comes_back))
    before = (await scrape(served.url)).text
    assert value(before, "smd_readiness_state", state="starting") == 0.0  # series exist

    async with lifecycle(
        s,
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=ManualClock(),
        observers=[metrics, seen],
    ) as run:
        assert run.readiness.state.value == "degraded"
        degraded = (await scrape(served.url)).text
        gate.set()
        with anyio.fail_after(10):
            await seen.recovered.wait()
        recovered = (await scrape(served.url)).text

    assert value(degraded, "smd_readiness_state", state="degraded") == 1.0
    assert value(degraded, "smd_readiness_state", state="ready") == 0.0
    assert ("smd_recoveries_total", frozenset({("phase", "cache")})) not in samples(degraded)
    assert value(recovered, "smd_readiness_state", state="ready") == 1.0
    assert value(recovered, "smd_readiness_state", state="degraded") == 0.0
    assert value(recovered, "smd_recoveries_total", phase="cache") == 1.0

    text = recovered
    assert value(text, "smd_startup_duration_seconds_count") == 1.0
    assert value(text, "smd_startup_duration_seconds_sum") == pytest.approx(0.25)
    assert value(text, "smd_phase_duration_seconds_count", phase="config", outcome="ok") == 1
    assert value(
        text, "smd_phase_duration_seconds_sum", phase="config", outcome="ok"
    ) == pytest.approx(0.1)
    assert value(text, "smd_phase_duration_seconds_sum", phase="db", outcome="ok") == pytest.approx(
        0.15
    )
    assert value(text, "smd_phase_duration_seconds_count", phase="cache", outcome="bypassed") == 1
    assert value(text, "smd_phase_attempts_total", phase="db") == 3.0
    assert (
        value(
            text,
            "smd_bypass_decisions_total",
            phase="cache",
            kind="infrastructure",
            action="continue",
        )
        == 1.0
    )
    # The deadline of every target, by its history key (the password masked).
    timeouts = {e.target: e.timeout.seconds for e in seen.events if isinstance(e, TimeoutComputed)}
    gauges = {
        dict(labels)["target"]: v
        for (name, labels), v in samples(text).items()
        if name == "smd_learned_timeout_seconds"
    }
    assert sorted(gauges.values()) == sorted(timeouts.values())
    assert any("127.0.0.1:5432/app" in t and "***" in t for t in gauges)

    # A failed run in test (strict): the verdict is counted and readiness says failed.
    f = Startup("svc")
    f.add(Phase(name="db", run=bad_password))
    with pytest.raises(StartupFailed):
        await run_startup(
            f,
            settings=load_settings(environment="test"),
            store=MemoryHistoryStore(),
            clock=ManualClock(),
            observers=[metrics],
        )
    text = (await scrape(served.url)).text
    assert value(text, "smd_readiness_state", state="failed") == 1.0
    assert sum(value(text, "smd_readiness_state", state=st) for st in smd.State) == 1.0
    assert value(text, "smd_startup_duration_seconds_count") == 2.0
    assert (
        value(text, "smd_bypass_decisions_total", phase="db", kind="configuration", action="fail")
        == 1.0
    )
    assert value(text, "smd_phase_duration_seconds_count", phase="db", outcome="failed") == 1
    assert PASSWORD not in text

    # Every metric, with its help text, in the exposition; promtool finds no fault.
    for name, help_text in smd.prometheus.METRICS.items():
        assert f"# HELP {name} {help_text}\n" in text
    checked = await anyio.to_thread.run_sync(check_metrics, promtool, text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""


def check_metrics(promtool: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on ``text`` (exit 0 and no output: no fault found)."""
    return subprocess.run(
        [str(promtool), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_rejects_a_bad_exposition(promtool: Path) -> None:
    """The check can fail: a metric without help text."""
    checked = check_metrics(promtool, "# TYPE smd_things counter\nsmd_things_total 1\n")
    assert checked.returncode != 0
    assert "no help text" in checked.stdout + checked.stderr


async def test_metrics_app_methods_openmetrics_and_name_filter(
    registry: CollectorRegistry, served: Served
) -> None:
    smd.prometheus.PrometheusObserver(registry)
    async with httpx.AsyncClient(timeout=10) as client:
        head = await client.head(served.url)
        post = await client.post(served.url, content=b"x")
        om = await client.get(
            served.url, headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        only = await client.get(served.url, params={"name[]": "smd_readiness_state"})
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert head.headers["content-type"].startswith("text/plain")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert {n for (n, _l) in samples(only.text)} == {"smd_readiness_state"}


def test_observers_share_a_registry_and_default_to_the_global_one() -> None:
    reg = CollectorRegistry()
    a = smd.prometheus.PrometheusObserver(reg)
    b = smd.prometheus.observer(reg)  # a second one: no duplicate-registration error
    assert b is not None
    assert b.registry is a.registry is reg
    default = smd.prometheus.observer()
    assert default is not None
    assert default.registry is REGISTRY
    assert REGISTRY.get_sample_value("smd_readiness_state", {"state": "ready"}) is not None


# -- the Grafana dashboard ------------------------------------------------------------------

_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            if isinstance(node.get("query"), str) and "smd_" in node["query"]:
                exprs.append(node["query"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return exprs


async def test_the_dashboard_queries_only_metrics_and_labels_the_observer_exports(
    registry: CollectorRegistry,
) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"]
    assert isinstance(doc["panels"], list)
    assert doc["panels"]
    exprs = dashboard_queries()
    assert exprs

    # Every metric exported, exercised by a real run so every family has samples.
    metrics = smd.prometheus.PrometheusObserver(registry)
    s = Startup("svc")
    s.add(Phase(name="db", run=db))
    s.add(Phase(name="cache", run=cache_down, recovery=cache_probe))
    seen = Recording()
    async with lifecycle(
        s,
        settings=load_settings(environment="development"),
        store=MemoryHistoryStore(),
        clock=ManualClock(),
        observers=[metrics, seen],
    ):
        with anyio.fail_after(10):
            await seen.recovered.wait()
    exported: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    bases = {name.removesuffix(suffix) for name in exported for suffix in _SUFFIXES}

    queried: set[str] = set()
    for expr in exprs:
        for name in re.findall(r"\bsmd_[a-z_]+\b", expr):
            queried.add(name)
            assert name in exported or name in bases, f"{name} (in {expr!r}) is not exported"
        # Labels the query groups by or matches must exist on its metrics.
        labels = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
        used = {lbl.strip() for group in labels for lbl in group.split(",") if lbl.strip()}
        used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!=|!~|=)", expr))
        known = {lbl for n in re.findall(r"\bsmd_[a-z_]+\b", expr) for lbl in exported.get(n, ())}
        known |= {"le", "instance", "job"}
        assert used <= known, f"{expr!r} uses labels {used - known}"
    # And every metric smd exports has a panel.
    for name in smd.prometheus.METRICS:
        assert any(q == name or q.startswith(name + "_") for q in queried), f"no panel for {name}"
