"""The dashboard: one self-contained HTML page of what smd has learned, per target.

``smd history --html FILE`` writes it (0600: it names hosts);
:func:`dashboard_app` serves it over ASGI (the health app's opt-in ``/smd``).
The page loads nothing: no script, no font, no image, only inline CSS and
SVG, and its Content-Security-Policy forbids fetching anything.

Per target it shows the figures of ``smd history --format json`` (the same
:meth:`~smd.history.TargetSummary.to_dict` values: counts, censored starts,
success rate with its decayed estimate and Wilson lower bound, bypass
counts, quantiles, the current timeout and its explanation) and a chart of
the deadline in effect over time against the recorded time-to-ready.

The deadline over time is *replayed*: before each recorded start, the
target's recorded timeout policy (:func:`smd.timeouts.policy_from_spec` of
its spec) computes the deadline from the history recorded before that start,
through :func:`smd.timeouts.phase_timeout`, with the policy's clock at that
moment: what the run would have used with today's policy.

Layout: the data and replay are in :mod:`smd._dashboard_data`, the SVG chart
in :mod:`smd._dashboard_chart`, the page in :mod:`smd._dashboard_page` (with
the formatting helpers of :mod:`smd._dashboard_format`); this module serves
it over ASGI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from smd._asgi_types import ASGIApp, Receive, Scope, Send, answer_lifespan
from smd._dashboard_data import Start, TargetView, replay, target_views
from smd._dashboard_page import (
    CONTENT_SECURITY_POLICY,
    render_dashboard,
    render_html,
    write_dashboard,
)
from smd._settings import Settings
from smd._store import HistoryStore
from smd.clock import Clock

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "Start",
    "TargetView",
    "dashboard_app",
    "render_dashboard",
    "render_html",
    "replay",
    "target_views",
    "write_dashboard",
]

# Served over HTTP, the header also refuses framing (not honoured in <meta>).
_HEADER_POLICY = f"{CONTENT_SECURITY_POLICY}; frame-ancestors 'none'"


# -- served over ASGI ---------------------------------------------------------------


def _from_scope(scope: Scope) -> tuple[HistoryStore, Settings] | None:
    """The store and settings of the run the smd lifespan put in the state, if any."""
    places: list[Any] = []
    state = scope.get("state")
    if isinstance(state, Mapping):
        places.extend(state.values())
    # Starlette's ``app.state`` keeps its attributes in a ``_state`` dict.
    app_state = getattr(getattr(scope.get("app"), "state", None), "_state", None)
    if isinstance(app_state, Mapping):
        places.extend(app_state.values())
    for value in places:
        store = getattr(value, "store", None)
        settings = getattr(value, "settings", None)
        if isinstance(settings, Settings) and isinstance(store, HistoryStore):
            return store, settings
    return None


async def _send(send: Send, status: int, body: bytes, content_type: bytes, head: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"content-security-policy", _HEADER_POLICY.encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def dashboard_app(
    store: HistoryStore | None = None,
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
) -> ASGIApp:
    """An ASGI app answering ``GET`` (any path) with the dashboard page.

    ``store`` and ``settings`` default to the run's, found in the lifespan
    state (or ``app.state``) the smd lifespan filled, else to the settings
    from the environment and their history store, read-only. The page is
    rendered per request in a worker thread (the store is synchronous).
    It names hosts: mount it only where the health endpoints are not public
    (the health app serves it at ``/smd`` when asked to).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        import anyio.to_thread

        kind = scope.get("type")
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        if kind != "http":
            raise RuntimeError(f"the smd dashboard speaks HTTP only, not {kind!r}")
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            body = json.dumps({"error": f"method {method} not allowed"}).encode()
            await _send(send, 405, body, b"application/json", False)
            return
        found = _from_scope(scope) if store is None or settings is None else None
        history = store if store is not None else (found[0] if found else None)
        cfg = settings if settings is not None else (found[1] if found else None)
        if cfg is None:
            from smd._settings_load import load_settings

            cfg = load_settings()
        if history is None:
            from smd._open_store import open_store

            history = open_store(cfg, readonly=True)
        chosen: tuple[HistoryStore, Settings] = (history, cfg)
        page, _ = await anyio.to_thread.run_sync(lambda: render_dashboard(*chosen, clock=clock))
        await _send(send, 200, page.encode(), b"text/html; charset=utf-8", method == "HEAD")

    return app
