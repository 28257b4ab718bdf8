import re

import numpy as np
import pytest

from inceptune.svg_charts import Chart, heatmap, nice_ticks, padded_range


def test_nice_ticks():
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(-0.02, 1.02) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert nice_ticks(0.5, 15.5, count=11, integer=True) == [2, 4, 6, 8, 10, 12, 14]
    assert nice_ticks(0.5, 6.5, count=11, integer=True) == [1, 2, 3, 4, 5, 6]
    assert nice_ticks(3.0, 3.0) == [3.0] and nice_ticks(float("nan"), 1) == []


def test_padded_range():
    assert padded_range([1.0, 3.0, float("nan")]) == pytest.approx((0.9, 3.1))
    assert padded_range([2.0, 2.0]) == pytest.approx((1.9, 2.1))  # one value: a range around it
    low, high = padded_range([1e-3, 0.0, 1e-7], log=True)  # 0 cannot be drawn on a log axis: left out
    assert low < 1e-7 and high > 1e-3 and low > 1e-8
    assert padded_range([]) == (0.0, 1.0) and padded_range([0.0], log=True) == (0.1, 1.0)


def _polylines(svg):
    return [[tuple(map(float, p.split(","))) for p in pts.split()]
            for pts in re.findall(r'<polyline points="([^"]*)"', svg)]


def test_a_line_breaks_at_missing_values_and_keeps_only_points_that_move():
    chart = Chart(400, 300, x=(0, 10), y=(0, 1))
    chart.line([0, 1, 2, 3, 4], [0.1, 0.2, float("nan"), 0.4, 0.5], label="a")
    xs = np.linspace(0, 10, 10_000)
    chart.line(xs, np.sqrt(xs / 10), label="dense")
    first, second, dense = _polylines(chart.svg("t"))
    assert len(first) == 2 and len(second) == 2  # the gap splits the line in two
    # 10,000 thresholds: the points half a pixel apart are kept, at most 2 per pixel of a monotone curve's path
    assert len(dense) <= 2 * ((400 - 64 - 14) + (300 - 14 - 30))
    assert dense[0] == (chart.px(0), chart.py(0)) and dense[-1] == pytest.approx((chart.px(10), chart.py(1)), abs=0.1)


def test_steps_go_across_then_up():
    chart = Chart(300, 200, x=(0, 1), y=(0, 1))
    chart.line([0, 1], [0, 1], step=True)
    (pts,) = _polylines(chart.svg("t"))
    assert pts == [(chart.px(0), chart.py(0)), (chart.px(1), chart.py(0)), (chart.px(1), chart.py(1))]


def test_a_log_axis_leaves_out_values_it_cannot_draw():
    chart = Chart(300, 200, x=(0, 3), y=(1e-4, 1e-1), ylog=True)
    chart.line([0, 1, 2, 3], [1e-2, 0.0, 1e-3, 1e-4])
    assert [len(p) for p in _polylines(chart.svg("t"))] == [1 + 1, 2]  # 0 drawn as a gap (one lone point)
    ticks = re.findall(r'text-anchor="end">([^<]+)<', chart.svg("t"))
    assert ticks == ["1e-4", "1e-3", "0.01", "0.1"]


def test_the_legend_goes_where_the_lines_are_not():
    chart = Chart(400, 300, x=(0, 1), y=(0, 1))
    chart.line([0.5, 1], [0.8, 1], label="upper right")
    chart.legend("best")
    svg = chart.svg("t")
    box = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="\d+" fill="white" fill-opacity', svg)
    x, y = float(box.group(1)), float(box.group(2))
    assert x < 200 and y < 150  # upper left: the line fills the upper right


def test_text_is_escaped_and_nothing_outside_the_page_is_referenced():
    chart = Chart(300, 200, x=(0, 1), y=(0, 1), title="a <b> & c", xlabel="x", ylabel="y")
    chart.line([0, 1], [0, 1], label="<cat>")
    chart.legend()
    svg = chart.svg('chart "1"')
    assert "&lt;cat&gt;" in svg and "a &lt;b&gt; &amp; c" in svg and 'aria-label="chart &quot;1&quot;"' in svg
    assert "<cat>" not in svg and "http" not in svg and "url(" not in svg and "href" not in svg


def test_heatmap_cells_counts_and_labels():
    counts = np.array([[5, 1, 0, 0, 0], [0, 4, 2, 0, 0], [0, 0, 6, 0, 0], [1, 0, 0, 3, 0], [0, 0, 0, 0, 2]])
    share = counts / counts.sum(axis=1, keepdims=True)
    labels = [f"class {i}" for i in range(5)]
    svg = heatmap(share, counts, labels, label="confusion matrix")
    cells = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="(\d+)" height="\1" fill="(#[0-9a-f]{6})"/><text[^>]*'
                       r'fill="(white|black)">(\d+)<', svg)
    assert [int(n) for *_, n in cells] == counts.ravel().tolist()
    assert cells[0][1] != cells[1][1]  # the colour follows the share
    assert [ink for _, _, ink, _ in cells][:2] == ["white", "black"]  # dark cells get white text
    assert svg.count('transform="rotate(-45') == 5  # more than 4 classes: the column names slant
    assert svg.count(">class 3</text>") == 2  # row and column
    big = heatmap(np.eye(40), np.eye(40, dtype=int), [str(i) for i in range(40)], label="m", show_counts=False)
    assert "<text" in big and not re.search(r'fill="(white|black)">\d+<', big)
