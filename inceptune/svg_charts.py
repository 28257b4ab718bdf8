"""Charts of the HTML report as inline SVG: line and step charts, bars, a heatmap; no plotting library.

The report embeds its charts in the page as SVG elements, so the page stands alone, stays sharp at any zoom,
and its text (axis labels, legends, counts) can be searched and copied. Drawing them here takes milliseconds,
where rendering the same figures with matplotlib took about a second of every run (0.3-0.5 s per figure on
2 cores, measured: `tests/test_report.py` has the checks).

Example:
    chart = Chart(480, 320, x=(0, 1), y=(0, 1), title="ROC", xlabel="false positive rate")
    chart.line([0, 0.2, 1], [0, 0.8, 1], label="cat")
    chart.legend("lower right")
    html = chart.svg("ROC curve")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["COLORS", "Chart", "heatmap", "nice_ticks", "padded_range"]

# matplotlib's default cycle ("tab10"), so the report keeps the colours people know
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
_FONT = 'font-family="sans-serif"'
_MAX_MARKERS = 200  # a line with more points than this is drawn without its point markers
_DASH = {"line": "", "dashed": ' stroke-dasharray="6 3"', "dotted": ' stroke-dasharray="2 3"'}


def nice_ticks(lo: float, hi: float, count: int = 6, integer: bool = False) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def padded_range(values, log: bool = False, pad: float = 0.05) -> tuple[float, float]:
    """The range of the finite (for a log axis: positive) values, widened by `pad` of it on each side."""
    v = [float(x) for x in values if math.isfinite(x) and (x > 0 or not log)]
    if not v:
        return (0.1, 1.0) if log else (0.0, 1.0)
    if log:
        lo, hi = math.log10(min(v)), math.log10(max(v))
        extra = max((hi - lo) * pad, 0.05)
        return 10 ** (lo - extra), 10 ** (hi + extra)
    lo, hi = min(v), max(v)
    extra = (hi - lo) * pad if hi > lo else max(abs(lo) * 0.05, 0.05)
    return lo - extra, hi + extra


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:.6g}"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


class Chart:
    """One panel: axes with ticks and a light grid, then lines, bars, vertical lines and labels in data units.

    Args:
        width, height: int. Size in pixels (the page scales it down on narrow screens).
        x, y: (low, high). The axes' ranges, which should cover what is drawn (nothing is clipped).
        ylog: bool. A logarithmic y axis (values <= 0 are not drawn). Defaults to False.
        integer_x: bool. Ticks on whole numbers only (epochs). Defaults to False.
        title, xlabel, ylabel: str. Text around the frame.
        room_above: bool. Room above the frame for `label_above` without a title. Defaults to False.
    """

    def __init__(self, width: int, height: int, *, x: tuple, y: tuple, ylog: bool = False, integer_x: bool = False,
                 title: str = "", xlabel: str = "", ylabel: str = "", room_above: bool = False):
        self.width, self.height = width, height
        self.left, self.right, self.bottom = 64, 14, 46 if xlabel else 30
        self.top = 30 if title or room_above else 14
        self.x, self.ylog, self.integer_x = (float(x[0]), float(x[1])), ylog, integer_x
        if ylog:
            self.y = (math.log10(y[0]), math.log10(y[1]))
        else:
            self.y = (float(y[0]), float(y[1]))
        if self.y[1] <= self.y[0]:
            self.y = (self.y[0] - 0.5, self.y[0] + 0.5)
        if self.x[1] <= self.x[0]:
            self.x = (self.x[0] - 0.5, self.x[0] + 0.5)
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.parts: list[str] = []
        self.entries: list[tuple[str, str, str]] = []  # legend: (label, colour, kind)
        self.points: list[tuple[float, float]] = []  # drawn points in pixels, to place the legend where they are not
        self.n = 0

    # === coordinates ===

    def px(self, x: float) -> float:
        w = self.width - self.left - self.right
        return self.left + (x - self.x[0]) / (self.x[1] - self.x[0]) * w

    def py(self, y: float) -> float:
        if self.ylog:
            y = math.log10(y) if y > 0 else float("nan")
        h = self.height - self.top - self.bottom
        return self.top + (1 - (y - self.y[0]) / (self.y[1] - self.y[0])) * h

    def _color(self, color: str | None) -> str:
        if color is None:
            color = COLORS[self.n % len(COLORS)]
            self.n += 1
        return color

    # === what is drawn ===

    def line(self, xs: Sequence[float], ys: Sequence[float], *, label: str | None = None, color: str | None = None,
             width: float = 1.5, dashed: bool = False, dotted: bool = False, step: bool = False,
             markers: bool = False) -> None:
        """A line through (xs, ys); a non-finite value breaks it. `step`: horizontal then vertical ("steps-post")."""
        color = self._color(color)
        runs, run = [], []
        for x, y in zip(xs, ys):
            x, y = float(x), float(y)
            p = (self.px(x), self.py(y)) if math.isfinite(x) and math.isfinite(y) else None
            if p is None or not all(math.isfinite(c) for c in p):
                if run:
                    runs.append(run)
                run = []
                continue
            if step and run:
                run.append((p[0], run[-1][1]))
            run.append(p)
        if run:
            runs.append(run)
        kind = "dashed" if dashed else ("dotted" if dotted else "line")
        dash = _DASH[kind]
        for pts in runs:
            text = _path(pts)
            self.parts.append(f'<polyline points="{text}" fill="none" stroke="{color}" stroke-width="{width}"'
                              f'{dash}/>')
            self.points.extend(_along(pts))
        if markers and sum(len(r) for r in runs) <= _MAX_MARKERS:
            for pts in runs:
                self.parts.extend(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{color}"/>'
                                  for x, y in pts)
        if label:
            self.entries.append((label, color, kind))

    def bars(self, centers: Sequence[float], heights: Sequence[float], width: float, *, label: str | None = None,
             color: str | None = None, opacity: float = 0.7) -> None:
        """Bars from y = 0 (or the axis' bottom) up to each height, `width` wide in data units."""
        color = self._color(color)
        base = self.py(max(self.y[0], 0.0) if not self.ylog else 10 ** self.y[0])
        for c, h in zip(centers, heights):
            x0, x1, top = self.px(c - width / 2), self.px(c + width / 2), self.py(h)
            if not all(math.isfinite(v) for v in (x0, x1, top)):
                continue
            self.parts.append(f'<rect x="{_num(x0)}" y="{_num(min(top, base))}" width="{_num(x1 - x0)}" '
                              f'height="{_num(abs(base - top))}" fill="{color}" fill-opacity="{opacity}"/>')
            self.points.append(((x0 + x1) / 2, top))
        if label:
            self.entries.append((label, color, "box"))

    def vline(self, x: float, color: str = "#666") -> None:
        """A dotted vertical line across the frame (a stage boundary)."""
        px = self.px(x)
        self.parts.append(f'<line x1="{_num(px)}" x2="{_num(px)}" y1="{self.top}" y2="{self.height - self.bottom}" '
                          f'stroke="{color}" stroke-width="1"{_DASH["dotted"]}/>')

    def label_above(self, x: float, text: str) -> None:
        """Text just above the frame, centred on x (data units): a stage's name."""
        self.parts.append(f'<text x="{_num(self.px(x))}" y="{self.top - 4}" text-anchor="middle" font-size="11" '
                          f'fill="#444" {_FONT}>{escape(text)}</text>')

    def note(self, text: str) -> None:
        """Text in the middle of the frame (a panel without data)."""
        self.parts.append(f'<text x="{_num(self.width / 2)}" y="{_num(self.height / 2)}" text-anchor="middle" '
                          f'font-size="13" fill="#555" {_FONT}>{escape(text)}</text>')

    def legend(self, loc: str = "best") -> None:
        """The labelled lines and bars in a box: `loc` one of "best" (the corner with the fewest drawn points),
        "upper left", "upper right", "lower left", "lower right"."""
        if not self.entries:
            return
        rows, w = len(self.entries), 34 + 6.5 * max(len(label) for label, _, _ in self.entries)
        h = 16 * rows + 8
        x_lo, x_hi = self.left + 8, self.width - self.right - 8 - w
        y_lo, y_hi = self.top + 8, self.height - self.bottom - 8 - h
        corners = {"upper left": (x_lo, y_lo), "upper right": (x_hi, y_lo), "lower left": (x_lo, y_hi),
                   "lower right": (x_hi, y_hi)}
        if loc == "best":
            def covered(corner):
                cx, cy = corners[corner]
                return sum(cx <= px <= cx + w and cy <= py <= cy + h for px, py in self.points)
            loc = min(("upper right", "upper left", "lower left", "lower right"), key=covered)
        x0, y0 = corners[loc]
        out = [f'<g font-size="11" {_FONT}><rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(w)}" height="{h}" '
               'fill="white" fill-opacity="0.85" stroke="#ccc"/>']
        for i, (label, color, kind) in enumerate(self.entries):
            y = y0 + 12 + 16 * i
            if kind == "box":
                out.append(f'<rect x="{_num(x0 + 6)}" y="{_num(y - 5)}" width="18" height="9" fill="{color}" '
                           'fill-opacity="0.7"/>')
            else:
                dash = _DASH[kind]
                out.append(f'<line x1="{_num(x0 + 6)}" x2="{_num(x0 + 24)}" y1="{_num(y)}" y2="{_num(y)}" '
                           f'stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{_num(x0 + 30)}" y="{_num(y + 4)}">{escape(label)}</text>')
        out.append("</g>")
        self.parts.extend(out)

    # === the frame ===

    def _axes(self) -> list[str]:
        x0, x1, y0, y1 = self.left, self.width - self.right, self.top, self.height - self.bottom
        out = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="white" stroke="#333"/>']
        grid, text = [], [f'<g font-size="11" fill="#333" {_FONT}>']
        for t in nice_ticks(*self.x, count=max(6, self.width // 100), integer=self.integer_x):
            p = self.px(t)
            grid.append(f'<line x1="{_num(p)}" x2="{_num(p)}" y1="{y0}" y2="{y1}"/>')
            text.append(f'<text x="{_num(p)}" y="{y1 + 15}" text-anchor="middle">{_fmt(t)}</text>')
        if self.ylog:
            lo, hi = math.floor(self.y[0]), math.ceil(self.y[1])
            yticks = [10.0 ** k for k in range(lo, hi + 1) if self.y[0] - 1e-9 <= k <= self.y[1] + 1e-9]
            if len(yticks) < 2:  # less than a decade: round values on the log axis
                yticks = [t for t in nice_ticks(10 ** self.y[0], 10 ** self.y[1], 4) if t > 0]
        else:
            yticks = nice_ticks(*self.y)
        for t in yticks:
            p = self.py(t)
            grid.append(f'<line x1="{x0}" x2="{x1}" y1="{_num(p)}" y2="{_num(p)}"/>')
            text.append(f'<text x="{x0 - 6}" y="{_num(p + 4)}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<g stroke="#ddd" stroke-width="1">{"".join(grid)}</g>')
        if self.title:
            text.append(f'<text x="{_num((x0 + x1) / 2)}" y="{y0 - 12}" text-anchor="middle" font-size="13">'
                        f"{escape(self.title)}</text>")
        if self.xlabel:
            text.append(f'<text x="{_num((x0 + x1) / 2)}" y="{y1 + 34}" text-anchor="middle" font-size="12">'
                        f"{escape(self.xlabel)}</text>")
        if self.ylabel:
            cy = (y0 + y1) / 2
            text.append(f'<text x="14" y="{_num(cy)}" text-anchor="middle" font-size="12" '
                        f'transform="rotate(-90 14 {_num(cy)})">{escape(self.ylabel)}</text>')
        text.append("</g>")
        return out + text

    def svg(self, label: str) -> str:
        """The chart as an `<svg>` element; `label` names it for screen readers (an image's alt text)."""
        return _svg(self.width, self.height, label, "".join(self._axes() + self.parts))


def _svg(width: float, height: float, label: str, body: str) -> str:
    """An `<svg>` element on a white ground, named `label` for screen readers (an image's alt text)."""
    w, h = f"{width:.0f}", f"{height:.0f}"
    return (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{escape(label)}">'
            f'<title>{escape(label)}</title><rect width="100%" height="100%" fill="white"/>{body}</svg>')


def _path(points, step: float = 0.5) -> str:
    """Polyline points rounded to a tenth of a pixel, a point kept only `step` pixels or more from the last one
    kept (and the last point always): a curve of 10,000 thresholds keeps the few hundred that move on screen."""
    kept = [points[0]]
    for x, y in points[1:-1]:
        if max(abs(x - kept[-1][0]), abs(y - kept[-1][1])) >= step:
            kept.append((x, y))
    kept.append(points[-1])
    return " ".join(f"{_num(x)},{_num(y)}" for x, y in kept)


def _along(points, every: float = 8.0) -> list:
    """Points every few pixels along a polyline (where the legend must not go), at most ~2,000."""
    out = list(points[:: max(1, len(points) // 1000)])
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        n = int(max(abs(x1 - x0), abs(y1 - y0)) // every)
        out.extend((x0 + (x1 - x0) * k / (n + 1), y0 + (y1 - y0) * k / (n + 1)) for k in range(1, min(n, 50) + 1))
    return out


def _blues(share: float) -> str:
    """matplotlib's "Blues" colour map at 0..1 (white to dark blue), by linear steps between 5 of its colours."""
    stops = [(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)]
    v = min(max(float(share), 0.0), 1.0) * (len(stops) - 1)
    i = min(int(v), len(stops) - 2)
    f = v - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(share, counts, labels: Sequence[str], *, label: str, xlabel: str = "predicted", ylabel: str = "true",
            colorbar: str = "share of the true class", show_counts: bool = True) -> str:
    """A confusion matrix: cell (i, j) coloured by share[i][j] (0..1), with counts[i][j] written in it."""
    c = len(labels)
    cell = max(14, min(90, 540 // max(c, 1)))
    longest = max((len(str(name)) for name in labels), default=1)
    margin = min(12 + 6.5 * longest, 180)
    rotate = c > 4
    left, top = margin + 28, 12
    bottom = (margin * 0.75 if rotate else 24) + 34
    width, height = left + cell * c + 90, top + cell * c + bottom
    font = 8 if c > 12 else 11
    out = [f'<g {_FONT}>']
    for i in range(c):
        for j in range(c):
            s = float(share[i][j])
            x, y = left + j * cell, top + i * cell
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blues(s)}"/>')
            if show_counts:
                fill = "white" if s > 0.5 else "black"
                out.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + font / 3:.1f}" text-anchor="middle" '
                           f'font-size="{font}" fill="{fill}">{int(counts[i][j])}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{cell * c}" height="{cell * c}" fill="none" stroke="#333"/>')
    for k, name in enumerate(labels):
        name = escape(str(name))
        cy = top + k * cell + cell / 2
        out.append(f'<text x="{left - 5}" y="{cy + 4:.1f}" text-anchor="end" font-size="11">{name}</text>')
        cx, ty = left + k * cell + cell / 2, top + c * cell + 14
        if rotate:
            out.append(f'<text x="{cx:.1f}" y="{ty:.1f}" text-anchor="end" font-size="11" '
                       f'transform="rotate(-45 {cx:.1f} {ty:.1f})">{name}</text>')
        else:
            out.append(f'<text x="{cx:.1f}" y="{ty:.1f}" text-anchor="middle" font-size="11">{name}</text>')
    out.append(f'<text x="{left + cell * c / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="12">'
               f"{escape(xlabel)}</text>")
    cy = top + cell * c / 2
    out.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 12 {cy:.1f})">{escape(ylabel)}</text>')
    bx, bh = left + cell * c + 16, cell * c
    for k in range(20):  # the colour bar, 0 at the bottom
        out.append(f'<rect x="{bx}" y="{top + bh * (19 - k) / 20:.1f}" width="14" height="{bh / 20 + 0.5:.1f}" '
                   f'fill="{_blues((k + 0.5) / 20)}"/>')
    out.append(f'<rect x="{bx}" y="{top}" width="14" height="{bh}" fill="none" stroke="#333"/>')
    for t in (0, 0.5, 1):
        out.append(f'<text x="{bx + 18}" y="{top + bh * (1 - t) + 4:.1f}" font-size="10">{t:g}</text>')
    out.append(f'<text x="{bx + 52}" y="{cy:.1f}" text-anchor="middle" font-size="11" '
               f'transform="rotate(-90 {bx + 52} {cy:.1f})">{escape(colorbar)}</text>')
    out.append("</g>")
    return _svg(width, height, label, "".join(out))
