"""Health endpoints as a pure ASGI app: ``/startupz``, ``/readyz``, ``/livez``.

No framework is imported here: the app speaks raw ASGI so it can be mounted
in Starlette or FastAPI, or served on its own. The verdicts come from a
:class:`~smd.readiness.Readiness` snapshot; nothing here ever touches an
external service (liveness must not fail because the database is down, or
an orchestrator would restart a process that cannot fix the database).

==============  =======  ==========  ======================  =======
endpoint        ready    degraded    starting / none yet     failed
==============  =======  ==========  ======================  =======
``/startupz``   200      200         503                     503
``/readyz``     200      200 [*]_    503                     503
``/livez``      200      200         200                     200
==============  =======  ==========  ======================  =======

.. [*] 503 with ``degraded_ready=False``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from smd import prometheus
from smd._asgi_types import ASGIApp, Receive, Scope, Send, answer_lifespan
from smd._dashboard import dashboard_app

__all__ = [
    "CHECKS",
    "HEALTH_STATE_KEY",
    "HealthBinding",
    "HealthResponse",
    "HealthSource",
    "ReadinessLike",
    "evaluate",
    "health_app",
    "resolve",
    "route_path",
]

#: The three checks, by path segment.
CHECKS = ("startupz", "readyz", "livez")

#: Key of the :class:`HealthBinding` in the lifespan state and on ``app.state``.
#: A dotted name cannot be a Python identifier, so it never shadows a value a
#: phase published under its own name.
HEALTH_STATE_KEY = "smd.health"


@runtime_checkable
class ReadinessLike(Protocol):
    """What the endpoints read: anything with a ``snapshot()`` (``smd``'s ``Readiness``)."""

    def snapshot(self) -> Any:
        """An object with ``to_dict()`` (or a mapping) holding at least ``state``."""
        ...


HealthSource = ReadinessLike | Callable[[], "ReadinessLike | None"]


@dataclass(frozen=True, slots=True)
class HealthBinding:
    """What :func:`smd.asgi.smd_lifespan` leaves in the state for the endpoints."""

    readiness: ReadinessLike
    degraded_ready: bool = True


@dataclass(frozen=True, slots=True)
class HealthResponse:
    """A verdict: HTTP status and JSON body."""

    status: int
    body: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), default=str).encode()


def _snapshot_dict(readiness: ReadinessLike | None) -> dict[str, Any] | None:
    if readiness is None:
        return None
    snap = readiness.snapshot()
    data = snap.to_dict() if hasattr(snap, "to_dict") else snap
    return dict(data)


def evaluate(
    check: str, readiness: ReadinessLike | None, *, degraded_ready: bool = True
) -> HealthResponse:
    """The verdict of one check (``startupz``, ``readyz`` or ``livez``).

    ``readiness`` ``None`` means no startup has reported yet: treated as
    ``starting``. ``/livez`` is 200 whatever the state: it only says the
    process answers.
    """
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; accepted: {', '.join(CHECKS)}")
    snap = _snapshot_dict(readiness)
    if snap is None:
        snap = {"state": "starting", "reasons": [], "since": None, "phases": {}}
    state = str(snap.get("state", "starting"))
    if check == "livez":
        ok = True
    elif check == "startupz":
        ok = state in ("ready", "degraded")
    else:
        ok = state == "ready" or (state == "degraded" and degraded_ready)
    body: dict[str, Any] = {
        "check": check,
        "status": "ok" if ok else "unavailable",
        "state": state,
        "since": snap.get("since"),
        "reasons": list(snap.get("reasons", ())),
    }
    if check != "livez":
        # Liveness stays minimal; the other two say what each phase did.
        body["phases"] = snap.get("phases", {})
    if check == "readyz":
        body["degraded_ready"] = degraded_ready
    return HealthResponse(200 if ok else 503, body)


def route_path(scope: Scope) -> str:
    """The request's path below its mount point (``root_path`` removed)."""
    # The path below the mount point (Starlette keeps the full path in
    # ``path`` and the mount prefix in ``root_path``).
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path


def resolve(
    scope: Scope, source: HealthSource | None, degraded_ready: bool | None
) -> tuple[ReadinessLike | None, bool]:
    """The readiness to read and whether degraded counts as ready, for one request.

    An explicit ``source`` wins; else the binding the smd lifespan put in the
    lifespan state (``scope["state"]``) or on ``app.state``.
    """
    binding: Any = None
    state = scope.get("state")
    if isinstance(state, Mapping):
        binding = state.get(HEALTH_STATE_KEY)
    if binding is None:
        app_state = getattr(scope.get("app"), "state", None)
        binding = getattr(app_state, HEALTH_STATE_KEY, None)
    readiness: ReadinessLike | None = None
    if source is not None:
        readiness = source if isinstance(source, ReadinessLike) else source()
    elif isinstance(binding, HealthBinding):
        readiness = binding.readiness
    if degraded_ready is None:
        degraded_ready = binding.degraded_ready if isinstance(binding, HealthBinding) else True
    return readiness, degraded_ready


async def _send_json(
    send: Send,
    response: HealthResponse,
    *,
    head: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    payload = response.encode()
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                # A probe must see the live state, never a cached one.
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else payload})


def metrics_endpoint() -> ASGIApp | None:
    """``/metrics`` (prometheus-client's global registry) when the extra is installed."""
    return prometheus.metrics_app() if prometheus.available() else None


def health_app(
    readiness: HealthSource | None = None,
    *,
    degraded_ready: bool | None = None,
    dashboard: bool = False,
) -> ASGIApp:
    """A small ASGI app answering ``GET /startupz``, ``/readyz`` and ``/livez``.

    ``readiness`` is a ``Readiness`` (or a callable returning one); by default
    the app finds the one :func:`smd.asgi.smd_lifespan` put in the lifespan
    state, so ``Mount("/", app=health_app())`` or ``app.mount("/health",
    health_app())`` is all it takes. ``degraded_ready`` (default: the
    lifespan's setting, else ``True``) decides whether ``/readyz`` is 200 when
    degraded. With the ``prometheus`` extra installed it also serves
    ``/metrics`` (the global registry); with ``dashboard=True``, ``/smd``
    (the ``smd history --html`` page, opt-in: it names hosts). Other paths get 404, other methods
    405, both with JSON bodies.
    """

    metrics = metrics_endpoint()
    page = dashboard_app() if dashboard else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":  # served on its own: nothing to start
            await answer_lifespan(receive, send)
            return
        if kind != "http":
            raise RuntimeError(f"smd health endpoints speak HTTP only, not {kind!r}")
        check = route_path(scope).strip("/")
        if check == "metrics" and metrics is not None:
            await metrics(scope, receive, send)
            return
        if check == "smd" and page is not None:
            await page(scope, receive, send)
            return
        if check not in CHECKS:
            await _send_json(
                send,
                HealthResponse(404, {"error": "not found", "endpoints": [f"/{c}" for c in CHECKS]}),
            )
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _send_json(
                send,
                HealthResponse(405, {"error": f"method {method} not allowed"}),
                headers=((b"allow", b"GET, HEAD"),),
            )
            return
        source, ready_when_degraded = resolve(scope, readiness, degraded_ready)
        response = evaluate(check, source, degraded_ready=ready_when_degraded)
        await _send_json(send, response, head=method == "HEAD")

    return app
