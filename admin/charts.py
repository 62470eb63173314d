"""Server-rendered SVG line charts: no JavaScript, no CDN, CSP-friendly.

Only presentation attributes are used (no ``style=``), so the console's strict
``Content-Security-Policy`` applies unchanged. Every label goes through
``markupsafe.escape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

PALETTE = (
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
    "#0891b2", "#db2777", "#4b5563", "#65a30d", "#9333ea",
)

Point = tuple[float, float | None]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    base = 10.0**exp
    for step in (1, 2, 4, 8, 10):
        if value <= step * base:
            return step * base
    return 10 * base


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if value >= 100 or value == int(value):
        return f"{value:.0f}{unit}"
    return f"{value:.2f}".rstrip("0").rstrip(".") + unit


def _frame(title: str, width: int, height: int, left: int, right: int,
           gridlines: Sequence[tuple[float, str]]) -> list[str]:
    """A chart's opening: the ``<svg>`` element, its title (tooltip and heading) and a
    gridline across the plot at each ``(y, label)``, labelled on the left axis."""
    out = [
        (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
         f'width="100%" role="img" aria-label="{escape(title)}">'),
        f'<title>{escape(title)}</title>',
        f'<text x="{left}" y="14" font-size="12" font-weight="600" fill="#111827">{escape(title)}</text>',
    ]
    for y, label in gridlines:
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#6b7280">'
            f"{escape(label)}</text>"
        )
    return out


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Point]],
    *,
    unit: str = "",
    width: int = 560,
    height: int = 200,
    y_max: float | None = None,
) -> Markup:
    """A multi-series line chart; ``None`` values leave gaps."""
    left, right, top, bottom = 48, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [t for pts in series.values() for t, _ in pts]
    ys = [v for pts in series.values() for _, v in pts if v is not None]
    t0, t1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if t1 <= t0:
        t1 = t0 + 1
    top_value = y_max if y_max is not None else _nice_max(max(ys) if ys else 0.0)

    def sx(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - min(v, top_value) / top_value * plot_h

    ticks = [top_value * i / 4 for i in range(5)]
    out = _frame(title, width, height, left, right, [(sy(t), _fmt(t, unit)) for t in ticks])
    for t, anchor in ((t0, "start"), ((t0 + t1) / 2, "middle"), (t1, "end")):
        if xs:
            label = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")
            out.append(
                f'<text x="{sx(t):.1f}" y="{height - 8}" font-size="10" text-anchor="{anchor}" '
                f'fill="#6b7280">{label}</text>'
            )
    if not ys:
        message = "no traffic yet" if not series else "no data in this window"
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="12" '
            f'text-anchor="middle" fill="#9ca3af">{message}</text>'
        )
    for idx, (name, pts) in enumerate(series.items()):
        color = PALETTE[idx % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for t, v in pts:
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(f"{sx(t):.1f},{sy(v):.1f}")
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif seg:
                out.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                    f'points="{" ".join(seg)}"><title>{escape(name)}</title></polyline>'
                )
    out.append("</svg>")
    return Markup(f'<figure class="chart-box">{"".join(out)}{_legend(series)}</figure>')


def compact(value: float) -> str:
    """``1.2k``, ``3.4M``: axis labels that fit."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def usd(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:.2f}" if value >= 1 else f"${value:.4g}"


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    fmt: Callable[[float], str] = compact,
    width: int = 560,
    height: int = 200,
) -> Markup:
    """Stacked bars, one per label (e.g. a day), one colour per series; each bar's
    tooltip gives every series' value."""
    left, right, top, bottom = 56, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top_value = _nice_max(max(totals, default=0.0))
    slot = plot_w / n
    bar_w = max(slot * 0.7, 1.0)
    out = _frame(title, width, height, left, right,
                 [(top + plot_h - plot_h * i / 4, fmt(top_value * i / 4)) for i in range(5)])
    shown = {0, len(labels) // 2, len(labels) - 1} if labels else set()
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        base: float = top + plot_h
        tip = ", ".join(f"{name} {fmt(values[i])}" for name, values in series.items())
        out.append(f'<g class="bar"><title>{escape(label)}: {escape(tip)}</title>')
        for idx, values in enumerate(series.values()):
            h = values[i] / top_value * plot_h
            if h > 0:
                base -= h
                out.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                           f'height="{h:.1f}" fill="{PALETTE[idx % len(PALETTE)]}"/>')
        out.append("</g>")
        if i in shown:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" font-size="10" '
                       f'text-anchor="middle" fill="#6b7280">{escape(label)}</text>')
    if not any(totals):
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" font-size="12" '
            f'text-anchor="middle" fill="#9ca3af">no usage in this period</text>'
        )
    out.append("</svg>")
    return Markup(f'<figure class="chart-box">{"".join(out)}{_legend(series)}</figure>')


def meter(used: float, maximum: float, *, mark: float | None = None, label: str = "") -> Markup:
    """A horizontal bar: ``used`` of ``maximum`` (red once reached, amber past ``mark``,
    the alert threshold, drawn as a tick)."""
    width, height = 220, 14
    share = min(used / maximum, 1.0) if maximum > 0 else 1.0
    color = "#dc2626" if used >= maximum else "#d97706" if mark is not None and used >= mark \
        else "#16a34a"
    out = [(f'<svg class="meter" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}"><title>{escape(label)}</title>'),
           f'<rect width="{width}" height="{height}" rx="3" fill="#e5e7eb"/>',
           f'<rect width="{share * width:.1f}" height="{height}" rx="3" fill="{color}"/>']
    if mark is not None and maximum > 0:
        x = min(mark / maximum, 1.0) * width
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="#111827" '
                   f'stroke-width="2"/>')
    out.append("</svg>")
    return Markup("".join(out))


def _legend(series: Mapping[str, object]) -> Markup:
    return Markup("<figcaption>" + "".join(
        f'<span class="legend-item"><svg width="10" height="10" aria-hidden="true">'
        f'<rect width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/></svg> {escape(name)}</span>'
        for i, name in enumerate(series)
    ) + "</figcaption>")
