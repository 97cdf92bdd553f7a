"""Plots as inline SVG, drawn on the server: no script, no external resource, so a report
that embeds them opens offline and prints as it shows.

Each plot is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that states the
figures in words; the pages that show a plot also give its numbers in a table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 44
COLOURS = ("#1f5f99", "#c0582b", "#3b8049", "#7a4a9e")
_counter = 0


def _uid(prefix: str) -> str:
    global _counter
    _counter += 1
    return f"{prefix}-{_counter}"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _frame(title: str, desc: str, body: list[str]) -> Markup:
    uid = _uid("plot")
    return Markup(
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="plot" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'font-family="system-ui, sans-serif" font-size="12">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>'
        f'<text x="{LEFT}" y="16" font-weight="600" fill="#222">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _axes(y_max: float, y_label: str, x_label: str) -> list[str]:
    inner_h = HEIGHT - TOP - BOTTOM
    parts = []
    for step in range(5):
        value = y_max * step / 4
        y = TOP + inner_h - inner_h * step / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}" y2="{_num(y)}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{_num(y + 4)}" text-anchor="end" fill="#444">'
            f"{_tick(value)}</text>"
        )
    parts.append(
        f'<text x="14" y="{TOP + inner_h / 2}" transform="rotate(-90 14 {TOP + inner_h / 2})" '
        f'text-anchor="middle" fill="#444">{escape(y_label)}</text>'
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'fill="#444">{escape(x_label)}</text>'
    )
    return parts


def _nice_max(values: Sequence[float], floor: float = 0.0) -> float:
    top = max([floor, *values]) if values else floor
    if top <= 0:
        return 1.0
    magnitude: float = 10 ** math.floor(math.log10(top))
    for factor in (1, 2, 2.5, 5, 10):
        if top <= factor * magnitude:
            return factor * magnitude
    return top


def line_chart(
    points: Sequence[tuple[int, float | None]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_max: float | None = None,
) -> Markup:
    """One series over rounds; a missing value (``None``) breaks the line."""
    known = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
    top = y_max if y_max is not None else _nice_max([y for _, y in known])
    desc = ", ".join(f"{x_label} {x}: {_tick(y)}" for x, y in known) or "no values"
    body = _axes(top, y_label, x_label)
    if points:
        xs = [x for x, _ in points]
        lo, hi = min(xs), max(xs)
        inner_w, inner_h = WIDTH - LEFT - RIGHT - 20, HEIGHT - TOP - BOTTOM

        def px(x: float) -> float:
            return LEFT + 10 + (inner_w * (x - lo) / (hi - lo) if hi > lo else inner_w / 2)

        def py(y: float) -> float:
            return TOP + inner_h - inner_h * min(max(y / top, 0.0), 1.0)

        segment: list[str] = []
        segments: list[list[str]] = [segment]
        for x, y in points:
            if y is None or not math.isfinite(y):
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{_num(px(x))},{_num(py(y))}")
        for seg in segments:
            if len(seg) > 1:
                body.append(
                    f'<polyline points="{" ".join(seg)}" fill="none" stroke="{COLOURS[0]}" '
                    f'stroke-width="2"/>'
                )
        for x, y in known:
            body.append(
                f'<circle cx="{_num(px(x))}" cy="{_num(py(y))}" r="3.5" fill="{COLOURS[0]}"/>'
            )
        for x in xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)]:
            body.append(
                f'<text x="{_num(px(x))}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                f'fill="#444">{x}</text>'
            )
    return _frame(title, desc, body)


def grouped_bars(
    groups: Mapping[str, Mapping[str, float | None]],
    series: Sequence[str],
    *,
    title: str,
    y_label: str,
    y_max: float | None = None,
    x_label: str = "company",
) -> Markup:
    """Bars per group (e.g. per company), one bar per series (e.g. local-only, federated);
    a missing value is drawn as no bar and said in the description."""
    values = [v for g in groups.values() for v in g.values() if v is not None]
    top = y_max if y_max is not None else _nice_max(values)
    body = _axes(top, y_label, x_label)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / max(1, len(groups))
    bar = min(28.0, slot * 0.8 / max(1, len(series)))
    words = []
    for g, (name, row) in enumerate(groups.items()):
        start = LEFT + g * slot + (slot - bar * len(series)) / 2
        said = []
        for s, key in enumerate(series):
            value = row.get(key)
            said.append(f"{key} {'undefined' if value is None else _tick(value)}")
            if value is None or not math.isfinite(value):
                continue
            height = inner_h * min(max(value / top, 0.0), 1.0)
            body.append(
                f'<rect x="{_num(start + s * bar)}" y="{_num(TOP + inner_h - height)}" '
                f'width="{_num(bar - 2)}" height="{_num(height)}" fill="{COLOURS[s % 4]}"/>'
            )
        label = name if len(name) <= 14 else name[:13] + "…"
        body.append(
            f'<text x="{_num(LEFT + g * slot + slot / 2)}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle" fill="#444">{escape(label)}</text>'
        )
        words.append(f"{name}: " + ", ".join(said))
    if len(series) > 1:
        for s, key in enumerate(series):
            x = LEFT + 110 * s
            body.append(
                f'<rect x="{x}" y="22" width="10" height="10" fill="{COLOURS[s % 4]}"/>'
                f'<text x="{x + 14}" y="31" fill="#222">{escape(key)}</text>'
            )
    return _frame(title, "; ".join(words) or "no values", body)


def bars(values: Mapping[str, float | None], *, title: str, y_label: str) -> Markup:
    """One bar per key (e.g. epsilon spent per company)."""
    return grouped_bars(
        {name: {y_label: value} for name, value in values.items()},
        [y_label],
        title=title,
        y_label=y_label,
    )
