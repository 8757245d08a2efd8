"""The dashboard's HTML page: one self-contained document, its figures and chart per target."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smd._dashboard_chart import _LEGEND, _chart
from smd._dashboard_data import TargetView, target_views
from smd._dashboard_format import (
    _esc,
    _field,
    _int_field,
    _percent,
    _percent_field,
    _seconds_field,
)
from smd._encode import iso
from smd._history_view import summarize
from smd._settings import Settings
from smd._store import HistoryStore
from smd.clock import Clock, SystemClock

__all__ = ["CONTENT_SECURITY_POLICY", "render_dashboard", "render_html", "write_dashboard"]

#: Nothing may be fetched; only the page's own inline style applies (the page
#: carries it in a ``<meta>`` element, so the file is safe opened anywhere).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def _quantiles(data: Mapping[str, Any], series: str) -> str:
    stats = data.get(series) or {}
    qs = stats.get("quantiles") or {}
    cells = [f"{_esc(name)} {_seconds_field(data, f'{series}.quantiles.{name}')}" for name in qs]
    if not cells:
        return "no uncensored samples"
    cells.append(f"min {_seconds_field(data, f'{series}.min')}")
    cells.append(f"max {_seconds_field(data, f'{series}.max')}")
    cells.append(f"n = {_int_field(data, f'{series}.uncensored')}")
    return " · ".join(cells)


def _timeout_block(data: Mapping[str, Any]) -> str:
    timeout = data.get("timeout")
    if isinstance(timeout, Mapping):
        details = timeout.get("details") or {}
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td>{_esc(json.dumps(v, ensure_ascii=False))}</td></tr>"
            for k, v in details.items()
        )
        more = f"<details><summary>details</summary><table>{rows}</table></details>" if rows else ""
        return (
            '<div class="timeout"><h3>Timeout now</h3><p class="big">'
            f"{_seconds_field(data, 'timeout.seconds')}"
            f" <small>({_field('timeout.source', timeout.get('source'))},"
            f" {_seconds_field(data, 'timeout.attempt_seconds')} per attempt)</small></p>"
            f"{_field('timeout.explanation', timeout.get('explanation'), tag='p')}{more}</div>"
        )
    error = data.get("timeout_error")
    if error:
        return (
            '<div class="timeout"><h3>Timeout now</h3>'
            f"<p>unavailable: {_field('timeout_error', error)}</p></div>"
        )
    return ""


def _target_section(view: TargetView) -> str:
    d = view.summary
    env = d.get("environment")
    owner = (
        f' <span class="owner">startup {_field("startup", d.get("startup"))},'
        f" phase {_field('phase', d.get('phase'))}</span>"
        if d.get("startup")
        else ""
    )
    success = d.get("success") or {}
    total = success.get("total") or 0
    if total:
        raw = (success.get("successes") or 0) / total
        rate = (
            f"{_int_field(d, 'success.successes')} / {_int_field(d, 'success.total')} starts"
            f" <small>({_percent(raw)})</small>"
        )
        decayed = (
            f"decayed {_percent_field(d, 'success.estimate')}, lower bound"
            f" {_percent_field(d, 'success.lower_bound')} <small>(Wilson"
            f" {_percent_field(d, 'success.confidence')}, half-life"
            f" {_int_field(d, 'success.half_life_hours')} h,"
            f" effective n {_int_field(d, 'success.effective_n')})</small>"
        )
    else:
        rate, decayed = "no starts recorded yet", ""
    failures = d.get("failures") or {}
    failure_text = (
        ", ".join(f"{_esc(k)} {_int_field(d, f'failures.{k}')}" for k in failures) or "none"
    )
    replay_note = (
        f'<p class="note">deadline not replayed: {_esc(view.replay_error)}</p>'
        if view.replay_error
        else ""
    )
    return f"""
<section class="target" data-target="{_esc(d.get("target"))}">
  <h2>{_field("dependency", d.get("dependency"))}{f' <span class="env">{_field("environment", env)}</span>' if env else ""}{owner}</h2>
  <p class="key">{_field("target", d.get("target"), tag="code")}</p>
  <div class="figures">
    <div class="card"><h3>Success rate</h3><p class="big">{rate}</p><p>{decayed}</p></div>
    <div class="card"><h3>Bypasses</h3><p class="big">{_int_field(d, "counts.bypass")}</p>
      <p>{_int_field(d, "consecutive_degraded")} consecutive degraded since the last success</p></div>
    <div class="card"><h3>Starts</h3><p class="big">{_int_field(d, "counts.ready")} <small>ready samples</small></p>
      <p>{_int_field(d, "censored")} censored · {_int_field(d, "counts.failure")} failed
      · {_int_field(d, "counts.attempt")} attempts · {_int_field(d, "total")} samples</p>
      <p>failures: {failure_text}</p></div>
    {_timeout_block(d)}
  </div>
  <p class="series">time to ready: {_quantiles(d, "ready")}</p>
  <p class="series">single attempt: {_quantiles(d, "attempt")}</p>
  {_chart(view)}
  {_LEGEND if view.starts else ""}
  {replay_note}
  <p class="when">first sample {_field("first_at", d.get("first_at"))} · last sample {_field("last_at", d.get("last_at"))}</p>
</section>"""


_CSS = """
:root { color-scheme: light; --ink: #1d2433; --muted: #5b6478; --line: #d9dde6;
  --deadline: #2f6fdf; --ready: #159a5b; --censored: #d6462f; --failure: #c27c0e; --bypass: #8a4fd3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #f4f6fa; }
header { padding: 20px 28px 8px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: var(--muted); }
main { padding: 8px 28px 28px; }
section.target { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 20px; margin: 16px 0; }
section.target h2 { margin: 0; font-size: 17px; word-break: break-all; }
.env { background: #e8eefc; color: var(--deadline); border-radius: 6px; padding: 1px 7px; font-size: 13px; }
.owner { color: var(--muted); font-weight: normal; font-size: 13px; }
.key code { color: var(--muted); font-size: 12px; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(210px, 1fr)); gap: 12px; margin: 12px 0; }
.card, .timeout { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.timeout { grid-column: span 2; }
h3 { margin: 0 0 4px; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.big { font-size: 20px; margin: 0 0 4px; }
.big small, small { font-size: 12px; color: var(--muted); }
.card p, .timeout p { margin: 2px 0; }
.series { margin: 4px 0; color: var(--muted); }
.series span { color: var(--ink); }
svg.chart { width: 100%; height: auto; display: block; margin-top: 10px; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { stroke: var(--muted); stroke-width: 1; }
svg .tick, svg .now-label { fill: var(--muted); font-size: 11px; }
svg .now-label { fill: var(--deadline); font-weight: 600; }
svg .deadline { fill: none; stroke: var(--deadline); stroke-width: 2; }
svg .deadline.now { stroke-dasharray: 4 3; }
svg .ready { fill: var(--ready); }
svg .censored { fill: #fff; stroke: var(--censored); stroke-width: 2; }
svg .failure { stroke: var(--failure); stroke-width: 2; fill: none; }
svg .bypass { fill: var(--bypass); }
.legend { color: var(--muted); font-size: 12px; }
.legend .key { display: inline-block; width: 14px; height: 10px; margin: 0 2px 0 12px; vertical-align: middle; }
.deadline-key { border-top: 2px solid var(--deadline); height: 0 !important; }
.ready-key { background: var(--ready); border-radius: 50%; width: 9px !important; height: 9px !important; }
.censored-key { border: 2px solid var(--censored); }
.failure-key { border-bottom: 2px solid var(--failure); }
.bypass-key { background: var(--bypass); transform: rotate(45deg); width: 8px !important; height: 8px !important; }
.note, .when, .empty { color: var(--muted); font-size: 12px; }
details table { border-collapse: collapse; font-size: 12px; margin-top: 4px; }
details th { text-align: left; padding-right: 10px; color: var(--muted); font-weight: normal; }
"""


def render_html(views: Sequence[TargetView], settings: Settings, *, now: float) -> str:
    """The page for ``views`` (see :func:`target_views`)."""
    sections = "".join(_target_section(v) for v in views)
    if not views:
        sections = "<p>No history recorded yet: nothing has been learned about any target.</p>"
    generated = iso(now) or ""
    count = len(views)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_esc(CONTENT_SECURITY_POLICY)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>smd: what has been learned</title>
<style>{_CSS}</style>
</head>
<body>
<header>
  <h1>smd: what has been learned</h1>
  <p><span data-field="targets" data-value="{count}">{count}</span> target{"" if count == 1 else "s"}
  · timeouts computed for {_esc(settings.environment.value)} settings · generated {_esc(generated)}</p>
</header>
<main>{sections}
</main>
</body>
</html>
"""


def render_dashboard(
    store: HistoryStore, settings: Settings, *, clock: Clock | None = None
) -> tuple[str, int]:
    """The page for every target of ``store``, and how many targets it shows."""
    clock = clock or SystemClock()
    summaries = summarize(store, settings, clock=clock)
    views = target_views(summaries, store.targets(), settings, now=clock.wall())
    return render_html(views, settings, now=clock.wall()), len(views)


def write_dashboard(
    path: str | Path, store: HistoryStore, settings: Settings, *, clock: Clock | None = None
) -> int:
    """Write the page to ``path`` (owner-only, 0600); returns how many targets it shows."""
    from smd._trace import write_private

    page, count = render_dashboard(store, settings, clock=clock)
    write_private(path, page)
    return count
