"""The dashboard's SVG chart: the deadline in effect over time against the recorded starts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from smd._dashboard_data import TargetView
from smd._dashboard_format import _esc, _num, _time_label
from smd._encode import iso

_W, _H = 960.0, 300.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 64.0, 84.0, 26.0, 40.0


class _Scale:
    """Seconds to pixels: logarithmic when the values span more than 20x, else linear."""

    def __init__(self, values: Iterable[float]) -> None:
        positive = [v for v in values if v > 0 and math.isfinite(v)]
        low = min(positive, default=0.1)
        high = max(positive, default=1.0)
        self.log = high / low > 20
        if self.log:
            self.low = 10.0 ** math.floor(math.log10(low))
            self.high = 10.0 ** math.ceil(math.log10(high * 1.05))
        else:
            self.low = 0.0
            self.high = _nice(high * 1.15)

    def y(self, value: float) -> float:
        height = _H - _TOP - _BOTTOM
        if self.log:
            v = max(value, self.low)
            share = (math.log10(v) - math.log10(self.low)) / (
                math.log10(self.high) - math.log10(self.low)
            )
        else:
            share = value / self.high if self.high > 0 else 0.0
        return _H - _BOTTOM - share * height

    def ticks(self) -> list[float]:
        if self.log:
            out = []
            decade = self.low
            while decade <= self.high * 1.0001:
                out.append(decade)
                decade *= 10
            if len(out) <= 3:  # few decades: 2 and 5 in between
                out = sorted({t * m for t in out for m in (1, 2, 5) if t * m <= self.high})
            return out
        step = _nice(self.high / 5)
        return [i * step for i in range(int(self.high / step + 1e-9) + 1)]


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * power >= value * 0.9999:
            return m * power
    return 10 * power


def _short(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    return f"{value * 1000:.3g} ms"


def _tick_label(value: float) -> str:
    if value >= 1:
        return f"{value:g} s"
    return f"{value * 1000:g} ms"


def _chart(view: TargetView) -> str:
    starts = view.starts
    timeout = view.summary.get("timeout") or {}
    current = timeout.get("seconds") if isinstance(timeout, Mapping) else None
    if not starts:
        return '<p class="empty">No start recorded yet: nothing to chart.</p>'
    first = min(s.at for s in starts)
    last = max([s.at for s in starts] + list(view.bypasses))
    span = max(last - first, 1.0)
    t0, t1 = first - span * 0.03, last + span * 0.03
    values = [s.seconds for s in starts if s.seconds is not None]
    values += [s.deadline for s in starts if s.deadline is not None]
    if isinstance(current, int | float):
        values.append(float(current))
    scale = _Scale(values)
    width = _W - _LEFT - _RIGHT

    def x(at: float) -> float:
        return _LEFT + (at - t0) / (t1 - t0) * width

    parts: list[str] = []
    for tick in scale.ticks():
        y = scale.y(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_esc(_tick_label(tick))}</text>"
        )
    for i in range(5):
        at = t0 + (t1 - t0) * (i + 0.5) / 5
        parts.append(
            f'<text class="tick" x="{x(at):.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">'
            f"{_esc(_time_label(at, span))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}"/>'
    )
    # The deadline in effect: a step from each start to the next, then to now.
    replayed = [s for s in starts if s.deadline is not None]
    if replayed:
        points: list[str] = []
        for i, s in enumerate(replayed):
            assert s.deadline is not None
            y = scale.y(s.deadline)
            points.append(f"{'M' if i == 0 else 'L'}{x(s.at):.1f},{y:.1f}")
            if i + 1 < len(replayed):  # in effect until the next start
                points.append(f"L{x(replayed[i + 1].at):.1f},{y:.1f}")
        parts.append(f'<path class="deadline" d="{" ".join(points)}"/>')
        if isinstance(current, int | float):
            y0 = scale.y(replayed[-1].deadline or 0.0)
            y1 = scale.y(float(current))
            xe = _W - _RIGHT
            parts.append(
                f'<path class="deadline now" d="M{x(replayed[-1].at):.1f},{y0:.1f} '
                f'L{xe - 10:.1f},{y0:.1f} L{xe - 10:.1f},{y1:.1f} L{xe:.1f},{y1:.1f}"/>'
            )
            parts.append(
                f'<text class="now-label" x="{xe + 4}" y="{y1 + 4:.1f}">now '
                f"{_esc(_short(float(current)))}</text>"
            )
    base = _H - _BOTTOM
    for s in starts:
        cx = x(s.at)
        when = iso(s.at)
        deadline = (
            "" if s.deadline is None else f"; deadline then {_num(s.deadline)} s ({s.source})"
        )
        if s.outcome == "failure":
            title = f"{when}: failed ({s.kind}){deadline}"
            parts.append(
                f'<path class="mark failure" d="M{cx - 4:.1f},{base - 4:.1f} l8,8 m0,-8 l-8,8">'
                f"<title>{_esc(title)}</title></path>"
            )
            continue
        assert s.seconds is not None
        cy = scale.y(s.seconds)
        if s.outcome == "censored":
            title = f"{when}: gave up after {_num(s.seconds)} s (censored: at least that long){deadline}"
            parts.append(
                f'<path class="mark censored" d="M{cx:.1f},{cy - 6:.1f} l5,9 h-10 z">'
                f"<title>{_esc(title)}</title></path>"
            )
        else:
            title = f"{when}: ready after {_num(s.seconds)} s{deadline}"
            parts.append(
                f'<circle class="mark ready" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5">'
                f"<title>{_esc(title)}</title></circle>"
            )
    for at in view.bypasses:
        bx = x(at)
        parts.append(
            f'<path class="mark bypass" d="M{bx:.1f},{_TOP - 12} l4,4 l-4,4 l-4,-4 z">'
            f"<title>{_esc(f'{iso(at)}: startup continued degraded (bypass)')}</title></path>"
        )
    label = f"deadline in effect and time to ready of {view.summary.get('target', '')}"
    return (
        f'<svg class="chart" viewBox="0 0 {_W:g} {_H:g}" role="img" aria-label="{_esc(label)}"'
        f' preserveAspectRatio="xMidYMid meet">{"".join(parts)}</svg>'
    )


_LEGEND = (
    '<p class="legend"><span class="key deadline-key"></span> deadline in effect (replayed)'
    ' <span class="key ready-key"></span> time to ready'
    ' <span class="key censored-key"></span> censored (gave up: at least that long)'
    ' <span class="key failure-key"></span> failed start'
    ' <span class="key bypass-key"></span> bypass (continued degraded)</p>'
)
