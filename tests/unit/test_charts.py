"""The console's SVG charts against fixed inputs: the markup in tests/fixtures/charts/
was written by the charts before line_chart and bar_chart shared their frame (title and
gridlines); a change to it must be deliberate (regenerate with ``UPDATE_CHARTS=1``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from markupsafe import Markup

from litegate.admin import charts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "charts"

CASES: dict[str, Callable[[], Markup]] = {
    "line": lambda: charts.line_chart(
        "req/s <a>", {"chat": [(1700000000.0, 1.5), (1700000010.0, None),
                               (1700000020.0, 3.25), (1700000030.0, 2.0)],
                      "embed": [(1700000000.0, 0.3)]}, unit="/s"),
    "line_empty": lambda: charts.line_chart("nothing", {}),
    "line_percent": lambda: charts.line_chart(
        "errors", {"a": [(0.0, 0.1), (60.0, 0.3)]}, unit="%", y_max=1.0),
    "bar": lambda: charts.bar_chart(
        "tokens", ["11-01", "11-02", "11-03"],
        {"prompt": [10, 0, 3000], "completion": [5, 0, 1234.5]}),
    "bar_usd": lambda: charts.bar_chart("spend", ["a", "b"], {"cost": [0.0003, 0.3]},
                                        fmt=charts.usd),
    "bar_empty": lambda: charts.bar_chart("none", [], {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_chart_markup_is_unchanged(name: str) -> None:
    path = FIXTURES / f"{name}.svg.html"
    markup = str(CASES[name]())
    if os.environ.get("UPDATE_CHARTS"):
        path.write_text(markup + "\n")
    assert markup == path.read_text().removesuffix("\n")
