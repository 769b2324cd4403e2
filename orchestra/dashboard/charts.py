"""Geometry for the metrics page's bar charts. Pure functions over plain numbers, like
`svg.py`: the template draws the shapes, so every label goes through Django's autoescaping.

Coordinates are in the SVG's user units; the charts scale to their container's width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .svg import _seconds, _tick_step

WIDTH = 560  # about the width a chart gets in its half of the page, so text keeps its size
AXIS_LABEL_ROOM = 72  # user units an x-axis label needs, at the larger type of narrow screens


@dataclass(frozen=True)
class Tick:
    at: float  # y for a vertical axis, x for a horizontal one
    label: str


# --- stacked columns: runs per period by outcome --------------------------------------------
@dataclass(frozen=True)
class Segment:
    key: str
    label: str
    value: int
    y: float
    h: float


@dataclass
class Column:
    label: str  # in full, for the tooltip and the table
    axis_label: str  # empty where the axis has no room for it
    total: int
    counts: dict[str, int]
    x: float
    w: float
    label_x: float = 0.0
    label_anchor: str = "middle"  # "end" where a centred label would run off the chart
    segments: list[Segment] = field(default_factory=list)


@dataclass
class ColumnChart:
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int  # y of the baseline
    columns: list[Column]
    ticks: list[Tick]
    series: Sequence[tuple[str, str]]


def stacked_columns(
    buckets: Sequence[tuple[str, str, dict[str, int]]],
    series: Sequence[tuple[str, str]],
    width: int = WIDTH,
    height: int = 240,
) -> ColumnChart:
    """One column per bucket, (label, axis label, {series key: count}), its segments stacked
    bottom up in `series` order; the y axis counts in whole steps from zero."""
    left, right, top, bottom = 40, width - 8, 10, height - 26
    plot_h = bottom - top
    totals = [sum(counts.get(key, 0) for key, _ in series) for _, _, counts in buckets]
    step = max(1, math.ceil(_tick_step(max(max(totals, default=0), 1), most=4)))
    ceiling = max(step, math.ceil(max(totals, default=0) / step) * step)
    ticks = [
        Tick(at=round(bottom - value / ceiling * plot_h, 2), label=str(value))
        for value in range(0, ceiling + 1, step)
    ]
    n = max(len(buckets), 1)
    slot = (right - left) / n
    bar_w = min(slot * 0.72, 56)
    every = max(1, math.ceil(AXIS_LABEL_ROOM / slot))
    columns = []
    for index, ((label, axis_label, counts), total) in enumerate(zip(buckets, totals, strict=True)):
        x = left + index * slot + (slot - bar_w) / 2
        column = Column(
            label=label,
            # Counted from the newest column, which is always labelled.
            axis_label=axis_label if (len(buckets) - 1 - index) % every == 0 else "",
            total=total,
            counts=counts,
            x=round(x, 2),
            w=round(bar_w, 2),
            label_x=round(x + bar_w / 2, 2),
        )
        if column.label_x + AXIS_LABEL_ROOM / 2 > width:
            column.label_x, column.label_anchor = round(x + bar_w, 2), "end"
        base = float(bottom)
        for key, name in series:
            value = counts.get(key, 0)
            if not value:
                continue
            h = value / ceiling * plot_h
            base -= h
            column.segments.append(Segment(key, name, value, round(base, 2), round(h, 2)))
        columns.append(column)
    return ColumnChart(width, height, left, top, right, bottom, columns, ticks, series)


# --- horizontal bars: median step duration per agent role -----------------------------------
@dataclass(frozen=True)
class Bar:
    label: str
    median: float  # seconds
    p95: float | None
    x: float
    y: float
    h: float
    w: float  # the median's length
    p95_x: float | None  # where the p95 marker stands

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def end_x(self) -> float:
        return self.x + self.w


@dataclass
class BarChart:
    width: int
    height: int
    left: int  # x of the zero line; role labels end left of it
    right: int  # x of the scale's end; the value labels go right of the bars
    top: int
    bottom: int
    bars: list[Bar]
    ticks: list[Tick]


def duration_bars(
    rows: Sequence[tuple[str, float | None, float | None]],
    width: int = WIDTH,
    row_h: int = 34,
) -> BarChart:
    """One bar per (label, median seconds, p95 seconds), in the order given; the axis runs
    from zero to a round number of seconds past the largest p95. Rows without a median are
    left out."""
    rows = [(label, median, p95) for label, median, p95 in rows if median is not None]
    left, right, top = 132, width - 110, 6
    bottom = top + row_h * len(rows)
    largest = max((max(m, p or 0) for _, m, p in rows), default=0) or 1
    step = _tick_step(largest, most=5)
    ceiling = math.ceil(largest / step - 1e-9) * step
    scale = (right - left) / ceiling
    ticks = []
    value = 0.0
    while value <= ceiling + 1e-9:
        ticks.append(Tick(at=round(left + value * scale, 2), label=_seconds(value)))
        value += step
    bars = []
    for index, (label, median, p95) in enumerate(rows):
        bars.append(
            Bar(
                label=label,
                median=median,
                p95=p95,
                x=left,
                y=top + index * row_h + 6,
                h=row_h - 12,
                w=round(max(median * scale, 1.5), 2),
                p95_x=None if p95 is None else round(left + p95 * scale, 2),
            )
        )
    return BarChart(width, bottom + 24, left, right, top, bottom, bars, ticks)
