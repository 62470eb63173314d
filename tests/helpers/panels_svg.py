"""Draw the shipped Grafana dashboard's panels as one SVG from Prometheus ``query_range``
results (a Grafana container cannot run here; this shows the same queries' real data)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

PANEL_W, PANEL_H, PAD = 520, 230, 12
PLOT = (50, 34, PANEL_W - 16, PANEL_H - 58)  # left, top, right, bottom inside a panel
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
MAX_SERIES = 7


def _fmt(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(value) < 1024 or suffix == "GiB":
                return f"{value:.3g} {suffix}"
            value /= 1024
    return f"{value:.3g}"


def _legend(template: str, labels: dict[str, str]) -> str:
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def _label(x: float, y: float, text: str) -> str:
    return (f'<text x="{x}" y="{y}" fill="#999" font-size="10" text-anchor="end">'
            f"{escape(text)}</text>")


def panel_svg(panel: dict[str, Any], series: list[tuple[str, list[tuple[float, float]]]],
              x: int, y: int, t0: float, t1: float) -> str:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    left, top, right, bottom = PLOT
    points = [v for _, values in series for _, v in values if math.isfinite(v)]
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    lo = min(lo, 0.0)
    hi = hi if hi > lo else lo + 1.0
    parts = [f'<g transform="translate({x},{y})">',
             f'<rect width="{PANEL_W}" height="{PANEL_H}" fill="#181b1f" rx="4"/>',
             f'<text x="10" y="20" fill="#ccccdc" font-size="13">{escape(panel["title"])}</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>',
             _label(left - 4, bottom, _fmt(lo, unit)),
             _label(left - 4, top + 8, _fmt(hi, unit))]
    if not points:
        parts.append(f'<text x="{(left + right) // 2}" y="{(top + bottom) // 2}" fill="#999" '
                     'font-size="12" text-anchor="middle">no data</text>')
    for i, (name, values) in enumerate(series[:MAX_SERIES]):
        color = COLORS[i % len(COLORS)]
        xy = [(left + (t - t0) / max(t1 - t0, 1e-9) * (right - left),
               bottom - (v - lo) / (hi - lo) * (bottom - top))
              for t, v in values if math.isfinite(v)]
        if xy:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                         'stroke-width="1.6"/>')
        lx, ly = 10 + (i % 2) * 255, PANEL_H - 36 + (i // 2) * 12
        if ly < PANEL_H - 2:
            parts.append(f'<rect x="{lx}" y="{ly - 8}" width="8" height="8" fill="{color}"/>'
                         f'<text x="{lx + 12}" y="{ly}" fill="#ccccdc" font-size="10">'
                         f'{escape(name[:44])}</text>')
    parts.append("</g>")
    return "".join(parts)


def dashboard_svg(panels: list[tuple[dict[str, Any], list[tuple[str, list[tuple[float, float]]]]]],
                  t0: float, t1: float, caption: str) -> str:
    rows = math.ceil(len(panels) / 2)
    width, height = 2 * PANEL_W + 3 * PAD, rows * (PANEL_H + PAD) + PAD + 24
    body = [panel_svg(p, s, PAD + (i % 2) * (PANEL_W + PAD), 24 + PAD + (i // 2) * (PANEL_H + PAD),
                      t0, t1) for i, (p, s) in enumerate(panels)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="#111217"/>'
            f'<text x="{PAD}" y="22" fill="#ccccdc" font-size="14">{escape(caption)}</text>'
            + "".join(body) + "</svg>\n")


def series_of(result: list[dict[str, Any]], legend: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """A Prometheus matrix result as (legend, [(t, value)]) pairs."""
    return [(_legend(legend, r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
            for r in result]
