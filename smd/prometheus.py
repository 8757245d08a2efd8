"""Prometheus metrics for smd runs (extra ``smd-startup[prometheus]``).

An observer that keeps these metrics in a ``prometheus_client`` registry
(the global one unless told otherwise), and :func:`metrics_app`, a tiny ASGI
app serving them (the health app mounts it at ``/metrics``)::

    import smd.prometheus

    metrics = smd.prometheus.observer()          # None without prometheus-client
    startup = smd.Startup("api", observers=[metrics] if metrics else [])

======================================================  =========  ==========================================
metric                                                  type       what
======================================================  =========  ==========================================
``smd_startup_duration_seconds``                        histogram  start of a run to its verdict
``smd_phase_duration_seconds{phase,outcome}``           histogram  how long each phase ran, by outcome
``smd_phase_attempts_total{phase}``                     counter    attempts (connection tries) phases made
``smd_bypass_decisions_total{phase,kind,action}``       counter    bypass verdicts on failed phases
``smd_learned_timeout_seconds{target}``                 gauge      the deadline in effect at the last start
``smd_readiness_state{state}``                          gauge      1 for the current readiness state, else 0
``smd_recoveries_total{phase}``                         counter    bypassed phases that recovered later
======================================================  =========  ==========================================

Label values pass :func:`smd.secrets.redact` (a target never shows a
password). The metrics describe the process: several startups in one
process share them (``smd_readiness_state`` then shows the last change).
Importing this module never imports ``prometheus_client``; the observer and
the app do.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from smd._asgi_types import answer_lifespan
from smd._report import State
from smd.events import (
    AttemptMade,
    BypassDecided,
    Event,
    PhaseFinished,
    ReadinessChanged,
    Recovered,
    StartupFinished,
    StartupStarted,
    TimeoutComputed,
)
from smd.secrets import redact

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["METRICS", "PrometheusObserver", "available", "metrics_app", "observer"]

#: Every metric the observer exports (names as scraped), with its help text.
METRICS: dict[str, str] = {
    "smd_startup_duration_seconds": "Time from the start of an smd startup run to its verdict "
    "(ready, degraded or failed), in seconds.",
    "smd_phase_duration_seconds": "Time an smd startup phase ran until it ended, in seconds, "
    "by phase and outcome (ok, bypassed, failed, cancelled).",
    "smd_phase_attempts_total": "Attempts (connection tries) smd startup phases made, by phase.",
    "smd_bypass_decisions_total": "Bypass-policy verdicts on failed smd startup phases, by phase, "
    "failure kind and action (fail or continue).",
    "smd_learned_timeout_seconds": "The deadline smd computed for a target at its last start, "
    "in seconds (learned from history for adaptive policies, else the fixed or default value).",
    "smd_readiness_state": "Readiness of the smd startup: 1 for the current state (starting, "
    "ready, degraded, failed), 0 for the others.",
    "smd_recoveries_total": "Bypassed smd startup phases whose dependency recovered in the "
    "background, by phase.",
}

# Startups take from milliseconds (no dependencies) to minutes (a cold
# database behind a connector); phases from microseconds to the same minutes.
STARTUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PHASE_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def available() -> bool:
    """Whether ``prometheus_client`` can be imported (``smd-startup[prometheus]``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ModuleNotFoundError(
            "smd's Prometheus metrics need prometheus-client: pip install 'smd-startup[prometheus]'"
        ) from exc
    return prometheus_client


class _Metrics:
    """The metric families of one registry (registered once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def h(name: str) -> str:
            return METRICS[name]

        self.startup: Histogram = Histogram(
            "smd_startup_duration_seconds",
            h("smd_startup_duration_seconds"),
            buckets=STARTUP_BUCKETS,
            registry=registry,
        )
        self.phase: Histogram = Histogram(
            "smd_phase_duration_seconds",
            h("smd_phase_duration_seconds"),
            ["phase", "outcome"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self.attempts: Counter = Counter(
            "smd_phase_attempts", h("smd_phase_attempts_total"), ["phase"], registry=registry
        )
        self.decisions: Counter = Counter(
            "smd_bypass_decisions",
            h("smd_bypass_decisions_total"),
            ["phase", "kind", "action"],
            registry=registry,
        )
        self.timeout: Gauge = Gauge(
            "smd_learned_timeout_seconds",
            h("smd_learned_timeout_seconds"),
            ["target"],
            registry=registry,
        )
        self.readiness: Gauge = Gauge(
            "smd_readiness_state", h("smd_readiness_state"), ["state"], registry=registry
        )
        self.recoveries: Counter = Counter(
            "smd_recoveries", h("smd_recoveries_total"), ["phase"], registry=registry
        )
        for state in State:
            self.readiness.labels(state.value).set(0)
        # Children by label values: ``labels()`` validates and locks on every
        # call; a phase's child is looked up in a dict instead (the children
        # live as long as the registry does anyway).
        self.children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found


_lock = threading.Lock()
_families: weakref.WeakKeyDictionary[Any, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_of(registry: CollectorRegistry) -> _Metrics:
    with _lock:
        metrics = _families.get(registry)
        if metrics is None:
            metrics = _families[registry] = _Metrics(registry)
        return metrics


class PrometheusObserver:
    """Updates smd's metrics (see the module docstring) from run events.

    Observers on the same registry share its metric families, so creating
    several (one per startup) is fine.
    """

    __slots__ = ("_m", "registry")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        client = _client()
        self.registry: CollectorRegistry = registry if registry is not None else client.REGISTRY
        self._m = _metrics_of(self.registry)

    def __repr__(self) -> str:
        return "PrometheusObserver()"

    def __call__(self, event: Event) -> None:
        m = self._m
        if isinstance(event, AttemptMade):
            m.child(m.attempts, event.phase).inc()
        elif isinstance(event, PhaseFinished):
            r = event.report
            child = m.child(m.phase, event.phase, r.outcome.value)
            # Skipped phases have no duration: their series exists, unobserved.
            if r.duration is not None:
                child.observe(max(0.0, r.duration))
        elif isinstance(event, TimeoutComputed):
            key = ("target", event.target)
            gauge = m.children.get(key)
            if gauge is None:
                gauge = m.children[key] = m.timeout.labels(redact(event.target))
            gauge.set(event.timeout.seconds)
        elif isinstance(event, BypassDecided):
            kind, action = event.failure.kind.value, event.decision.action.value
            m.child(m.decisions, event.phase, kind, action).inc()
        elif isinstance(event, StartupStarted):
            self._state(State.STARTING)
        elif isinstance(event, ReadinessChanged):
            self._state(event.snapshot.state)
        elif isinstance(event, StartupFinished):
            m.startup.observe(max(0.0, event.report.duration))
            self._state(event.report.state)
        elif isinstance(event, Recovered):
            m.child(m.recoveries, event.phase).inc()

    def _state(self, current: State) -> None:
        gauge = self._m.readiness
        for state in State:
            gauge.labels(state.value).set(1 if state is current else 0)


def observer(registry: CollectorRegistry | None = None) -> PrometheusObserver | None:
    """An observer on ``registry`` (default: the global one); ``None`` without prometheus-client."""
    if not available():
        return None
    return PrometheusObserver(registry)


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """A raw ASGI app serving ``registry`` (default: the global one) in the text exposition.

    Answers ``GET`` and ``HEAD`` on any path (mount it at ``/metrics``), with
    OpenMetrics when the scraper asks for it (``Accept``) and ``name[]``
    filters as ``prometheus_client`` understands them; 405 otherwise. It
    also completes the lifespan protocol, so it can be served on its own.
    """
    client = _client()
    from prometheus_client.exposition import choose_encoder

    reg: CollectorRegistry = registry if registry is not None else client.REGISTRY

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            body = b"method not allowed: GET or HEAD /metrics\n"
            await _respond(
                send, 405, body, [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain")]
            )
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        names = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name[]")
        output = encoder(reg.restricted_registry(names) if names else reg)
        await _respond(
            send,
            200,
            b"" if method == "HEAD" else output,
            [(b"content-type", content_type.encode("latin-1"))],
            length=len(output),
        )

    return app


async def _respond(
    send: Callable[[Any], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    length: int | None = None,
) -> None:
    size = len(body) if length is None else length
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(size).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
