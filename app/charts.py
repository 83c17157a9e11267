"""Server-side SVG charts for the results dashboard and the self-contained HTML report.

Why hand-written SVG: the report must be one file with no external assets and no JavaScript, and the
dashboard must work under a strict CSP. matplotlib was considered (it can emit SVG) but brings a large
dependency, fonts embedded as paths and per-call seconds of rendering; these charts are a few rectangles
and lines. Every chart:
- is an ``<svg role="img">`` with a ``<title>`` and ``<desc>`` referenced by ``aria-labelledby``;
- never relies on colour alone: the two models differ by pattern (solid vs hatched), ties are dotted,
  significance is a printed mark (★) and every bar/point carries its number as text;
- takes plain rows (dicts), not the statistics dict, so the dashboard and the report share it and tests can
  check the drawing without running any statistics. Each chart's data table is rendered next to it by the
  templates from the same rows;
- is drawn twice, laid out for a wide and for a narrow box (``responsive``): scaling one drawing down to a
  phone shrank its 12-unit text to about 5 px. The narrow drawing is 320 units wide with labels above their
  bars, so it is never shown below 11 px; the wide one is shown only where its box is wide enough for the
  same (a CSS container query per chart, ``cq<N>`` in static/css/results.css). Both carry the same title and
  description; the hidden one is ``display: none``, so a screen reader meets one chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from html import escape

from markupsafe import Markup

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), doubled by patterns.
COLOUR_A = "#0072B2"
COLOUR_B = "#E69F00"
COLOUR_TIE = "#BBBBBB"
INK = "#1d232b"
MUTED = "#5b6673"
GRID = "#d9dee5"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'
SIG_MARK = "★"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(x: float | None, digits: int = 0) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _defs(uid: str) -> str:
    """Patterns: model B hatched, ties dotted; model A solid. IDs are per chart (several SVGs share a page)."""
    return (
        f'<defs><pattern id="{uid}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{COLOUR_B}"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="#7a4f00" stroke-width="2"/></pattern>'
        f'<pattern id="{uid}-dots" width="5" height="5" patternUnits="userSpaceOnUse">'
        f'<rect width="5" height="5" fill="{COLOUR_TIE}"/><circle cx="2.5" cy="2.5" r="1" fill="#666"/></pattern>'
        "</defs>"
    )


def _svg(uid: str, width: int, height: int, title: str, desc: str, body: str, *, defs: bool = False,
         layout: str = "wide") -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{layout}" id="{_e(uid)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'aria-labelledby="{_e(uid)}-title {_e(uid)}-desc" {FONT} font-size="12" fill="{INK}">'
        f'<title id="{_e(uid)}-title">{_e(title)}</title><desc id="{_e(uid)}-desc">{_e(desc)}</desc>'
        f"{_defs(uid) if defs else ''}{body}</svg>"
    )


def _text(x: float, y: float, s: object, *, anchor: str = "start", size: int | None = None, weight: str = "",
          fill: str | None = None, baseline: str = "middle") -> str:
    attrs = f'x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" dominant-baseline="{baseline}"'
    if size:
        attrs += f' font-size="{size}"'
    if weight:
        attrs += f' font-weight="{weight}"'
    if fill:
        attrs += f' fill="{fill}"'
    return f"<text {attrs}>{_e(s)}</text>"


def empty_chart(uid: str, title: str, message: str, *, width: int = 640, height: int = 120,
                layout: str = "wide") -> Markup:
    lines = _wrap(message, width - 24)
    top = height / 2 - 8 * (len(lines) - 1)
    body = (f'<rect x="1" y="1" width="{width - 2}" height="{height - 2}" fill="#f7f8fa" stroke="{GRID}" '
            f'stroke-dasharray="4 3" rx="6"/>'
            + "".join(_text(width / 2, top + 16 * i, line, anchor="middle", fill=MUTED)
                      for i, line in enumerate(lines)))
    return _svg(uid, width, height, title, message, body, layout=layout)


# --- narrow layouts ------------------------------------------------------------------------------------------
# 320 user units wide, shown at 100% of a phone's card (about 300-340 px) and never above 480 px: 12-unit text
# lands between 11.3 and 18 px. Text widths are estimated (no font metrics on the server): CHAR_W is a little
# wider than system-ui's average glyph at 12 px, so an estimate errs towards cutting a label, not overflowing.
NARROW = 320
CHAR_W = 7.0


def _fit(text: str, room: float, *, char_w: float = CHAR_W) -> str:
    """``text`` cut with an ellipsis to about ``room`` units (the full text is in the chart's table and desc)."""
    n = max(int(room // char_w), 4)
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _wrap(text: str, room: float) -> list[str]:
    """Words of ``text`` in lines of about ``room`` units."""
    n, lines, line = max(int(room // CHAR_W), 8), [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > n:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def responsive(wide: Markup, narrow: Markup) -> Markup:
    """Both drawings of one chart; results.css shows the wide one only where its box is wide enough that its
    smallest text is drawn at 11 px or more (for 12-unit text, 11/12 of its width), the narrow one elsewhere."""
    markup = str(wide)
    width = int(markup.split('viewBox="0 0 ', 1)[1].split(" ", 1)[0])
    smallest = min(int(size) for size in re.findall(r'font-size="(\d+)"', markup))  # the root's 12 at least
    return Markup(f'<div class="chart-switch cq{container_threshold(width, smallest)}">{wide}{narrow}</div>')


def container_threshold(width: int, smallest_font: int = 12) -> int:
    """The smallest box width (px, rounded up to 40) at which a drawing ``width`` units wide keeps text of
    ``smallest_font`` units at 11 px or more. results.css has a container query for every value up to 1200;
    above that no rule matches and the narrow drawing is shown at every width (it always fits)."""
    return math.ceil(width * 11 / smallest_font / 40) * 40


def _legend(uid: str, x: float, y: float, items: Sequence[tuple[str, str]]) -> str:
    """items: (fill, label); fills may be pattern urls."""
    out, cx = [], x
    for fill, label in items:
        out.append(f'<rect x="{cx:.1f}" y="{y - 6:.1f}" width="14" height="12" fill="{fill}" stroke="{INK}" '
                   f'stroke-width=".5"/>')
        out.append(_text(cx + 19, y, label))
        cx += 19 + 7.2 * len(label) + 18
    return "".join(out)


# --------------------------------------------------------------------------------------------------------------
def _stacked_bars_wide(rows: Sequence[dict], *, model_a: str, model_b: str, uid: str = "wtl") -> Markup:
    """100% stacked horizontal bars: model A wins | ties | model B wins, one bar per criterion.

    rows: {label, a, tie, b} (counts). Segments carry their percentage as text when wide enough.
    """
    title = f"Wins, ties and losses per criterion: {model_a} vs {model_b}"
    if not rows or not any(r["a"] + r["tie"] + r["b"] for r in rows):
        return empty_chart(uid, title, "No votes yet.")
    left, bar_w, row_h, top = 190, 440, 30, 40
    width, height = left + bar_w + 70, top + row_h * len(rows) + 20
    fills = (COLOUR_A, f"url(#{uid}-dots)", f"url(#{uid}-hatch)")
    body = [_legend(uid, left, 16, [(fills[0], f"{model_a} better"), (fills[1], "no difference"),
                                    (fills[2], f"{model_b} better")])]
    for i, r in enumerate(rows):
        y = top + i * row_h
        n = r["a"] + r["tie"] + r["b"]
        body.append(_text(left - 8, y + row_h / 2 - 2, r["label"], anchor="end"))
        x = float(left)
        for value, fill, name in zip((r["a"], r["tie"], r["b"]), fills, (model_a, "tie", model_b), strict=True):
            w = bar_w * value / n if n else 0
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 12}" fill="{fill}" '
                            f'stroke="#fff" stroke-width="1"><title>{_e(name)}: {value} of {n} '
                            f"({_pct(value / n)})</title></rect>")
                if w > 34:
                    # White label on the solid blue; dark label on a white backing over patterns.
                    if fill == COLOUR_A:
                        body.append(_text(x + w / 2, y + row_h / 2 - 2, _pct(value / n), anchor="middle",
                                          fill="#fff", weight="600"))
                    else:
                        body.append(f'<rect x="{x + w / 2 - 17:.1f}" y="{y + row_h / 2 - 9:.1f}" width="34" '
                                    f'height="14" rx="3" fill="#fff" opacity=".85"/>')
                        body.append(_text(x + w / 2, y + row_h / 2 - 2, _pct(value / n), anchor="middle",
                                          weight="600"))
            x += w
        body.append(_text(left + bar_w + 8, y + row_h / 2 - 2, f"n={n}", fill=MUTED))
    desc = "; ".join(f"{r['label']}: {model_a} {r['a']}, ties {r['tie']}, {model_b} {r['b']}" for r in rows)
    return _svg(uid, width, height, title, desc, "".join(body), defs=True)


# --------------------------------------------------------------------------------------------------------------
def _forest_plot_wide(rows: Sequence[dict], *, subject: str, uid: str = "forest", reference: float = 0.5,
                label_width: int = 190) -> Markup:
    """Preference rates with 95% intervals and a line at 50%.

    rows: {label, rate, lo, hi, significant: bool, n} — rate = share of non-tie votes preferring ``subject``.
    Significant rows get a filled diamond and a ★; the others a hollow circle.
    """
    title = f"Preference for {subject} among non-tie votes, with 95% intervals"
    rows = [r for r in rows if r.get("rate") is not None]
    if not rows:
        return empty_chart(uid, title, "No decided (non-tie) votes yet.")
    left, plot_w, row_h, top = label_width, 380, 28, 34
    width, height = left + plot_w + 170, top + row_h * len(rows) + 34

    def sx(p: float) -> float:
        return left + plot_w * min(max(p, 0.0), 1.0)

    body = []
    for tick in (0, 0.25, 0.5, 0.75, 1):
        body.append(f'<line x1="{sx(tick):.1f}" y1="{top - 6}" x2="{sx(tick):.1f}" y2="{height - 28}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(sx(tick), height - 16, _pct(tick), anchor="middle", fill=MUTED))
    body.append(f'<line x1="{sx(reference):.1f}" y1="{top - 10}" x2="{sx(reference):.1f}" y2="{height - 28}" '
                f'stroke="{INK}" stroke-dasharray="5 3" stroke-width="1.5"/>')
    body.append(_text(sx(reference), 12, "no preference (50%)", anchor="middle", fill=MUTED))
    body.append(_text(left, 12, "← other model", fill=MUTED))
    body.append(_text(left + plot_w, 12, f"{subject} →", anchor="end", fill=MUTED))
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        if i % 2 == 0:
            body.append(f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width}" height="{row_h}" fill="#f4f6f9"/>')
        body.append(_text(left - 8, y, r["label"], anchor="end"))
        lo, hi = r.get("lo"), r.get("hi")
        if lo is not None and hi is not None:
            body.append(f'<line x1="{sx(lo):.1f}" y1="{y:.1f}" x2="{sx(hi):.1f}" y2="{y:.1f}" stroke="{INK}" '
                        'stroke-width="2"/>')
            for end in (lo, hi):
                body.append(f'<line x1="{sx(end):.1f}" y1="{y - 5:.1f}" x2="{sx(end):.1f}" y2="{y + 5:.1f}" '
                            f'stroke="{INK}" stroke-width="2"/>')
        x = sx(r["rate"])
        if r.get("significant"):
            body.append(f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 7:.1f} '
                        f'L{x - 7:.1f},{y:.1f} Z" fill="{COLOUR_A}" stroke="{INK}"/>')
        else:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="#fff" stroke="{INK}" stroke-width="2"/>')
        interval = f" [{_pct(lo)}–{_pct(hi)}]" if lo is not None and hi is not None else ""
        mark = f" {SIG_MARK}" if r.get("significant") else ""
        body.append(_text(left + plot_w + 10, y, f"{_pct(r['rate'])}{interval}{mark}",
                          weight="600" if mark else ""))
    desc = "; ".join(
        f"{r['label']}: {_pct(r['rate'])} (95% interval {_pct(r.get('lo'))} to {_pct(r.get('hi'))})"
        f"{', significant' if r.get('significant') else ''}" for r in rows)
    return _svg(uid, width, height, title, desc, "".join(body))


# --------------------------------------------------------------------------------------------------------------
def _diverging(rate: float | None) -> str:
    """Blue below 50%, orange above, white at 50% (the numbers are printed in each cell too)."""
    if rate is None:
        return "#f2f2f2"
    t = min(abs(rate - 0.5) * 2, 1.0)
    target = (0x00, 0x72, 0xB2) if rate < 0.5 else (0xE6, 0x9F, 0x00)
    rgb = [round(255 + (c - 255) * t * 0.85) for c in target]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _heatmap_wide(rows: Sequence[str], cols: Sequence[tuple[str, str]], cells: dict[tuple[str, str], dict], *,
            subject: str, uid: str = "heat", row_title: str = "theme") -> Markup:
    """Theme × criterion: each cell prints the preference rate for ``subject``, n, and ★ if significant.

    rows: row labels; cols: (key, label); cells[(row, key)] = {rate, n, significant}.
    """
    title = f"Preference for {subject} by {row_title} and criterion"
    if not rows or not cols:
        return empty_chart(uid, title, "No votes yet.")
    left, cw, ch, top = 150, 96, 40, 74
    width, height = left + cw * len(cols) + 10, top + ch * len(rows) + 46
    body = []
    for j, (_key, label) in enumerate(cols):
        x = left + j * cw + cw / 2
        words = label.split(" ", 1)
        body.append(_text(x, top - 34, words[0], anchor="middle", weight="600"))
        if len(words) > 1:
            body.append(_text(x, top - 19, words[1], anchor="middle", weight="600"))
    for i, row in enumerate(rows):
        y = top + i * ch
        body.append(_text(left - 8, y + ch / 2, row, anchor="end"))
        for j, (key, label) in enumerate(cols):
            x = left + j * cw
            cell = cells.get((row, key)) or {}
            rate, n = cell.get("rate"), cell.get("n", 0)
            mark = f" {SIG_MARK}" if cell.get("significant") else ""
            body.append(f'<rect x="{x + 1}" y="{y + 1}" width="{cw - 2}" height="{ch - 2}" rx="3" '
                        f'fill="{_diverging(rate)}"><title>{_e(row)} × {_e(label)}: {_pct(rate)} of {n} non-tie '
                        f"votes prefer {_e(subject)}{', significant (BH)' if mark else ''}</title></rect>")
            body.append(_text(x + cw / 2, y + ch / 2 - 7, f"{_pct(rate)}{mark}", anchor="middle",
                              weight="700" if mark else "600"))
            body.append(_text(x + cw / 2, y + ch / 2 + 9, f"n={n}", anchor="middle", size=10, fill="#333"))
    ly = height - 22
    scale = [(0.0, "0%"), (0.25, ""), (0.5, "50%"), (0.75, ""), (1.0, "100%")]
    for k, (rate, label) in enumerate(scale):
        body.append(f'<rect x="{left + k * 40}" y="{ly - 7}" width="40" height="12" fill="{_diverging(rate)}" '
                    f'stroke="{GRID}"/>')
        if label:
            body.append(_text(left + k * 40 + 20, ly + 15, label, anchor="middle", size=10, fill=MUTED))
    body.append(_text(left + 5 * 40 + 10, ly, f"share preferring {subject};  {SIG_MARK} significant after "
                      "Benjamini-Hochberg", fill=MUTED))
    desc = "; ".join(f"{r}/{lab}: {_pct((cells.get((r, k)) or {}).get('rate'))}" for r in rows for k, lab in cols)
    return _svg(uid, width, height, title, desc, "".join(body))


# --------------------------------------------------------------------------------------------------------------
def _cost_scatter_wide(points: Sequence[dict], *, uid: str = "cost") -> Markup:
    """Seconds per clip (median) against preference rate, one labelled point per model.

    points: {model, seconds (None if no cost recorded), rate, lo, hi}, optionally s_lo, s_hi (seconds interval).
    """
    title = "Cost against preference: median model seconds per clip vs overall preference rate"
    pts = [p for p in points if p.get("seconds") is not None and p.get("rate") is not None]
    if not pts:
        return empty_chart(uid, title, "No generation costs recorded yet (imported clips carry no timings).")
    left, top, plot_w, plot_h = 70, 24, 460, 240
    width, height = left + plot_w + 150, top + plot_h + 50
    xmax = max(max(p["seconds"], p.get("s_hi") or 0) for p in pts) * 1.15 or 1.0

    def sx(s: float) -> float:
        return left + plot_w * s / xmax

    def sy(r: float) -> float:
        return top + plot_h * (1 - min(max(r, 0.0), 1.0))

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="{GRID}"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        dash = ' stroke-dasharray="5 3"' if tick == 0.5 else ""
        body.append(f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + plot_w}" y2="{sy(tick):.1f}" '
                    f'stroke="{GRID if tick != 0.5 else INK}"{dash}/>')
        body.append(_text(left - 6, sy(tick), _pct(tick), anchor="end", fill=MUTED))
    step = _nice_step(xmax)
    t = 0.0
    while t <= xmax:
        body.append(f'<line x1="{sx(t):.1f}" y1="{top + plot_h}" x2="{sx(t):.1f}" y2="{top + plot_h + 5}" '
                    f'stroke="{MUTED}"/>')
        body.append(_text(sx(t), top + plot_h + 16, f"{t:g}", anchor="middle", fill=MUTED))
        t += step
    body.append(_text(left + plot_w / 2, height - 8, "median model seconds per clip (lower is cheaper)",
                      anchor="middle"))
    body.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
                'text-anchor="middle">preferred (share of non-tie votes)</text>')
    shapes = ("circle", "square", "triangle", "diamond")
    for i, p in enumerate(pts):
        x, y = sx(p["seconds"]), sy(p["rate"])
        if p.get("lo") is not None and p.get("hi") is not None:
            body.append(f'<line x1="{x:.1f}" y1="{sy(p["lo"]):.1f}" x2="{x:.1f}" y2="{sy(p["hi"]):.1f}" '
                        f'stroke="{INK}" stroke-width="1.5"/>')
        if p.get("s_lo") is not None and p.get("s_hi") is not None:  # an interval on the seconds too, if given
            body.append(f'<line x1="{sx(p["s_lo"]):.1f}" y1="{y:.1f}" x2="{sx(p["s_hi"]):.1f}" y2="{y:.1f}" '
                        f'stroke="{INK}" stroke-width="1.5"/>')
        body.append(_marker(shapes[i % len(shapes)], x, y, (COLOUR_A, COLOUR_B)[i % 2]))
        body.append(_text(x + 10, y - 10, f"{p['model']}: {p['seconds']:.3g}s, {_pct(p['rate'])}", weight="600"))
    desc = "; ".join(f"{p['model']}: {p['seconds']:.3g} s per clip, preferred {_pct(p['rate'])}" for p in pts)
    return _svg(uid, width, height, title, desc, "".join(body))


def _marker(shape: str, x: float, y: float, fill: str) -> str:
    common = f'fill="{fill}" stroke="{INK}" stroke-width="1.5"'
    if shape == "square":
        return f'<rect x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12" {common}/>'
    if shape == "triangle":
        return f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y + 6:.1f} L{x - 7:.1f},{y + 6:.1f} Z" {common}/>'
    if shape == "diamond":
        return (f'<path d="M{x:.1f},{y - 8:.1f} L{x + 8:.1f},{y:.1f} L{x:.1f},{y + 8:.1f} L{x - 8:.1f},{y:.1f} Z" '
                f"{common}/>")
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6.5" {common}/>'


def _nice_step(span: float) -> float:
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


# --------------------------------------------------------------------------------------------------------------
def _votes_over_time_wide(times: Sequence[datetime], *, uid: str = "timeline") -> Markup:
    """Votes per hour (or per day for longer studies) as bars, with the running total as a stepped line."""
    title = "Votes over time"
    if not times:
        return empty_chart(uid, title, "No votes yet.")
    times = sorted(times)
    span = times[-1] - times[0]
    bucket = timedelta(hours=1) if span <= timedelta(days=3) else timedelta(days=1)
    unit = "hour" if bucket == timedelta(hours=1) else "day"
    start = _floor(times[0], bucket)
    n_buckets = int((_floor(times[-1], bucket) - start) / bucket) + 1
    counts = [0] * n_buckets
    for t in times:
        counts[int((t - start) / bucket)] += 1
    left, top, plot_w, plot_h = 60, 26, 560, 180
    width, height = left + plot_w + 70, top + plot_h + 46
    cmax, total = max(counts), len(times)
    bw = plot_w / n_buckets
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>']
    for i, c in enumerate(counts):
        h = plot_h * c / cmax
        body.append(f'<rect x="{left + i * bw + bw * 0.1:.1f}" y="{top + plot_h - h:.1f}" width="{bw * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{COLOUR_A}" opacity=".55"><title>{_e(_fmt(start + i * bucket, unit))}: '
                    f"{c} votes</title></rect>")
    # Running total on its own scale (right axis), drawn as a step line.
    run, pts = 0, []
    for i, c in enumerate(counts):
        run += c
        pts.append(f"{left + (i + 1) * bw:.1f},{top + plot_h * (1 - run / total):.1f}")
    body.append(f'<polyline points="{left},{top + plot_h} {" ".join(pts)}" fill="none" stroke="{INK}" '
                'stroke-width="2"/>')
    body.append(_text(left - 6, top, str(cmax), anchor="end", fill=MUTED))
    body.append(_text(left - 6, top + plot_h, "0", anchor="end", fill=MUTED))
    body.append(_text(left + plot_w + 6, top, f"{total} total", fill=INK, weight="600"))
    body.append(_text(left, top - 14, f"bars: votes per {unit} (peak {cmax}); line: running total", fill=MUTED))
    body.append(_text(left, top + plot_h + 16, _fmt(start, unit), fill=MUTED))
    body.append(_text(left + plot_w, top + plot_h + 16, _fmt(start + (n_buckets - 1) * bucket, unit),
                      anchor="end", fill=MUTED))
    desc = f"{total} votes between {_fmt(times[0], 'minute')} and {_fmt(times[-1], 'minute')}, peak {cmax} per {unit}"
    return _svg(uid, width, height, title, desc, "".join(body))


def _floor(t: datetime, bucket: timedelta) -> datetime:
    if bucket >= timedelta(days=1):
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(minute=0, second=0, microsecond=0)


def _fmt(t: datetime, unit: str) -> str:
    return t.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m-%d %H:%M") + (" UTC" if unit != "day" else "")


# --------------------------------------------------------------------------------------------------------------
def _ratings_plot_wide(rows: Sequence[dict], *, uid: str = "ratings", center: float = 1000.0) -> Markup:
    """Arena-style ratings with bootstrap intervals, best first; rows: {model, rating, lo, hi, rank}."""
    title = "Model ratings (Bradley-Terry, arena scale) with 95% bootstrap intervals"
    if not rows:
        return empty_chart(uid, title, "Ratings need votes between at least two models.")
    rows = sorted(rows, key=lambda r: -r["rating"])
    lo_all = min(min(r.get("lo", r["rating"]) for r in rows), center)
    hi_all = max(max(r.get("hi", r["rating"]) for r in rows), center)
    pad = max((hi_all - lo_all) * 0.08, 10)
    lo_all, hi_all = lo_all - pad, hi_all + pad
    left, plot_w, row_h, top = 210, 380, 28, 30
    width, height = left + plot_w + 150, top + row_h * len(rows) + 34

    def sx(v: float) -> float:
        return left + plot_w * (v - lo_all) / (hi_all - lo_all)

    body = []
    step = _nice_step(hi_all - lo_all)
    t = math.ceil(lo_all / step) * step
    while t <= hi_all:
        body.append(f'<line x1="{sx(t):.1f}" y1="{top - 6}" x2="{sx(t):.1f}" y2="{height - 28}" stroke="{GRID}"/>')
        body.append(_text(sx(t), height - 16, f"{t:g}", anchor="middle", fill=MUTED))
        t += step
    body.append(f'<line x1="{sx(center):.1f}" y1="{top - 10}" x2="{sx(center):.1f}" y2="{height - 28}" '
                f'stroke="{INK}" stroke-dasharray="5 3"/>')
    body.append(_text(sx(center), 10, f"{center:g} = average", anchor="middle", fill=MUTED))
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        body.append(_text(left - 8, y, f"#{r.get('rank', i + 1)} {r['model']}", anchor="end"))
        if r.get("lo") is not None and r.get("hi") is not None:
            body.append(f'<line x1="{sx(r["lo"]):.1f}" y1="{y:.1f}" x2="{sx(r["hi"]):.1f}" y2="{y:.1f}" '
                        f'stroke="{INK}" stroke-width="2"/>')
        body.append(_marker("square", sx(r["rating"]), y, COLOUR_A))
        interval = f" [{r['lo']:.0f}, {r['hi']:.0f}]" if r.get("lo") is not None else ""
        body.append(_text(left + plot_w + 10, y, f"{r['rating']:.0f}{interval}"))
    desc = "; ".join(f"rank {r.get('rank', '?')} {r['model']}: {r['rating']:.0f}" for r in rows)
    return _svg(uid, width, height, title, desc, "".join(body))


# --- the narrow drawings and the public functions (both drawings) ---------------------------------------------
def _legend_rows(x: float, y: float, items: Sequence[tuple[str, str]], room: float) -> str:
    """A legend with one item per line (a row of three does not fit a phone)."""
    out = []
    for i, (fill, label) in enumerate(items):
        out.append(f'<rect x="{x:.1f}" y="{y + 18 * i - 6:.1f}" width="14" height="12" fill="{fill}" '
                   f'stroke="{INK}" stroke-width=".5"/>')
        out.append(_text(x + 19, y + 18 * i, _fit(label, room - 19)))
    return "".join(out)


def _stacked_bars_narrow(rows: Sequence[dict], *, model_a: str, model_b: str, uid: str) -> Markup:
    title = f"Wins, ties and losses per criterion: {model_a} vs {model_b}"
    if not rows or not any(r["a"] + r["tie"] + r["b"] for r in rows):
        return empty_chart(uid, title, "No votes yet.", width=NARROW, layout="narrow")
    x0, bar_w, row_h, top = 4, NARROW - 8, 48, 64
    fills = (COLOUR_A, f"url(#{uid}-dots)", f"url(#{uid}-hatch)")
    body = [_legend_rows(x0, 10, [(fills[0], f"{model_a} better"), (fills[1], "no difference"),
                                  (fills[2], f"{model_b} better")], NARROW - x0)]
    for i, r in enumerate(rows):
        y = top + i * row_h
        n = r["a"] + r["tie"] + r["b"]
        body.append(_text(x0, y + 8, _fit(r["label"], bar_w - 60), weight="600"))
        body.append(_text(x0 + bar_w, y + 8, f"n={n}", anchor="end", fill=MUTED))
        x = float(x0)
        for value, fill, name in zip((r["a"], r["tie"], r["b"]), fills, (model_a, "tie", model_b), strict=True):
            w = bar_w * value / n if n else 0
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 18}" width="{w:.1f}" height="22" fill="{fill}" '
                            f'stroke="#fff" stroke-width="1"><title>{_e(name)}: {value} of {n} '
                            f"({_pct(value / n)})</title></rect>")
                if w > 34:
                    if fill == COLOUR_A:
                        body.append(_text(x + w / 2, y + 29, _pct(value / n), anchor="middle", fill="#fff",
                                          weight="600"))
                    else:
                        body.append(f'<rect x="{x + w / 2 - 17:.1f}" y="{y + 22:.1f}" width="34" height="14" '
                                    f'rx="3" fill="#fff" opacity=".85"/>')
                        body.append(_text(x + w / 2, y + 29, _pct(value / n), anchor="middle", weight="600"))
            x += w
    desc = "; ".join(f"{r['label']}: {model_a} {r['a']}, ties {r['tie']}, {model_b} {r['b']}" for r in rows)
    return _svg(uid, NARROW, top + row_h * len(rows) + 4, title, desc, "".join(body), defs=True, layout="narrow")


def _interval_rows(rows: Sequence[dict], *, label: Callable[[dict], str], value: Callable[[dict], str],
                   scale: Callable[[float], float], point: Callable[[dict, float, float], str], top: int,
                   row_h: int = 44, grid: Sequence[str] = ()) -> list[str]:
    """Narrow interval rows: the label and the printed value on one line, the interval drawn under them. The
    ``grid`` lines go over the row stripes and under the labels, which they would otherwise strike through."""
    stripes = [f'<rect x="0" y="{top + i * row_h - 4}" width="{NARROW}" height="{row_h}" fill="#f4f6f9"/>'
               for i in range(0, len(rows), 2)]
    body = [*stripes, *grid]
    for i, r in enumerate(rows):
        y = top + i * row_h
        shown = value(r)
        body.append(_text(NARROW - 4, y + 8, shown, anchor="end", weight="600" if SIG_MARK in shown else ""))
        body.append(_text(4, y + 8, _fit(label(r), NARROW - 16 - CHAR_W * len(shown))))
        cy = y + 27
        lo, hi = r.get("lo"), r.get("hi")
        if lo is not None and hi is not None:
            body.append(f'<line x1="{scale(lo):.1f}" y1="{cy}" x2="{scale(hi):.1f}" y2="{cy}" stroke="{INK}" '
                        'stroke-width="2"/>')
            for end in (lo, hi):
                body.append(f'<line x1="{scale(end):.1f}" y1="{cy - 5}" x2="{scale(end):.1f}" y2="{cy + 5}" '
                            f'stroke="{INK}" stroke-width="2"/>')
        body.append(point(r, scale(r["rating"] if "rating" in r else r["rate"]), cy))
    return body


def _forest_plot_narrow(rows: Sequence[dict], *, subject: str, uid: str, reference: float = 0.5) -> Markup:
    title = f"Preference for {subject} among non-tie votes, with 95% intervals"
    rows = [r for r in rows if r.get("rate") is not None]
    if not rows:
        return empty_chart(uid, title, "No decided (non-tie) votes yet.", width=NARROW, layout="narrow")
    left, plot_w, top, row_h = 14, NARROW - 28, 40, 44
    height = top + row_h * len(rows) + 26

    def sx(p: float) -> float:
        return left + plot_w * min(max(p, 0.0), 1.0)

    body = [_text(4, 10, "← other model", fill=MUTED), _text(NARROW - 4, 10, _fit(f"{subject} →", 150),
                                                            anchor="end", fill=MUTED),
            _text(sx(reference), 26, "50%: no preference", anchor="middle", fill=MUTED)]

    def point(r: dict, x: float, y: float) -> str:
        if r.get("significant"):
            return (f'<path d="M{x:.1f},{y - 7:.1f} L{x + 7:.1f},{y:.1f} L{x:.1f},{y + 7:.1f} '
                    f'L{x - 7:.1f},{y:.1f} Z" fill="{COLOUR_A}" stroke="{INK}"/>')
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="#fff" stroke="{INK}" stroke-width="2"/>'

    def value(r: dict) -> str:
        lo, hi = r.get("lo"), r.get("hi")
        interval = f" [{_pct(lo)}–{_pct(hi)}]" if lo is not None and hi is not None else ""
        return f"{_pct(r['rate'])}{interval}{f' {SIG_MARK}' if r.get('significant') else ''}"

    bottom = top + row_h * len(rows) - 4
    grid = []
    for tick in (0, 0.5, 1):
        dash = ' stroke-dasharray="5 3"' if tick == reference else ""
        grid.append(f'<line x1="{sx(tick):.1f}" y1="{top - 8}" x2="{sx(tick):.1f}" y2="{bottom}" '
                    f'stroke="{INK if tick == reference else GRID}"{dash}/>')
        body.append(_text(sx(tick), bottom + 14, _pct(tick), anchor=("start", "middle", "end")[int(tick * 2)],
                          fill=MUTED))
    body += _interval_rows(rows, label=lambda r: str(r["label"]), value=value, scale=sx, point=point, top=top,
                           row_h=row_h, grid=grid)
    desc = "; ".join(
        f"{r['label']}: {_pct(r['rate'])} (95% interval {_pct(r.get('lo'))} to {_pct(r.get('hi'))})"
        f"{', significant' if r.get('significant') else ''}" for r in rows)
    return _svg(uid, NARROW, height, title, desc, "".join(body), layout="narrow")


def _heatmap_narrow(rows: Sequence[str], cols: Sequence[tuple[str, str]], cells: dict[tuple[str, str], dict], *,
                    subject: str, uid: str, row_title: str) -> Markup:
    """One block per row (theme), its criteria as a two-column grid of labelled cells."""
    title = f"Preference for {subject} by {row_title} and criterion"
    if not rows or not cols:
        return empty_chart(uid, title, "No votes yet.", width=NARROW, layout="narrow")
    cw, ch, head = (NARROW - 4) / 2, 46, 24
    per_block = head + ch * math.ceil(len(cols) / 2) + 10
    top = 40
    body = [_text(4, 10, _fit(f"Share preferring {subject}", NARROW - 8), fill=MUTED),
            _text(4, 26, f"{SIG_MARK} significant after Benjamini-Hochberg", fill=MUTED)]
    for i, row in enumerate(rows):
        y0 = top + i * per_block
        body.append(_text(4, y0 + 10, _fit(f"{row_title.capitalize()}: {row}", NARROW - 8), weight="700"))
        for j, (key, label) in enumerate(cols):
            x, y = 2 + (j % 2) * cw, y0 + head + (j // 2) * ch
            cell = cells.get((row, key)) or {}
            rate, n = cell.get("rate"), cell.get("n", 0)
            mark = f" {SIG_MARK}" if cell.get("significant") else ""
            body.append(f'<rect x="{x + 1:.1f}" y="{y + 1}" width="{cw - 2:.1f}" height="{ch - 2}" rx="3" '
                        f'fill="{_diverging(rate)}"><title>{_e(row)} × {_e(label)}: {_pct(rate)} of {n} non-tie '
                        f"votes prefer {_e(subject)}{', significant (BH)' if mark else ''}</title></rect>")
            body.append(_text(x + 6, y + 14, _fit(label, cw - 12)))
            body.append(_text(x + 6, y + 32, f"{_pct(rate)}{mark}", weight="700" if mark else "600"))
            body.append(_text(x + cw - 6, y + 32, f"n={n}", anchor="end", fill="#333"))
    desc = "; ".join(f"{r}/{lab}: {_pct((cells.get((r, k)) or {}).get('rate'))}" for r in rows for k, lab in cols)
    return _svg(uid, NARROW, top + per_block * len(rows), title, desc, "".join(body), layout="narrow")


def _cost_scatter_narrow(points: Sequence[dict], *, uid: str) -> Markup:
    """The plot across the width; each point's name and numbers in a keyed list under it, not beside it."""
    title = "Cost against preference: median model seconds per clip vs overall preference rate"
    pts = [p for p in points if p.get("seconds") is not None and p.get("rate") is not None]
    if not pts:
        return empty_chart(uid, title, "No generation costs recorded yet (imported clips carry no timings).",
                           width=NARROW, height=140, layout="narrow")
    left, top, plot_w, plot_h = 62, 28, NARROW - 72, 200
    xmax = max(max(p["seconds"], p.get("s_hi") or 0) for p in pts) * 1.15 or 1.0

    def sx(v: float) -> float:
        return left + plot_w * v / xmax

    def sy(r: float) -> float:
        return top + plot_h * (1 - min(max(r, 0.0), 1.0))

    body = [_text(4, 10, "y: preferred (share of non-tie votes)", fill=MUTED),
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="{GRID}"/>']
    for tick in (0, 0.5, 1):
        dash = ' stroke-dasharray="5 3"' if tick == 0.5 else ""
        body.append(f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + plot_w}" y2="{sy(tick):.1f}" '
                    f'stroke="{GRID if tick != 0.5 else INK}"{dash}/>')
        body.append(_text(left - 6, sy(tick), _pct(tick), anchor="end", fill=MUTED))
    step = _nice_step(xmax) * 2  # half as many ticks as the wide drawing: their numbers must not touch
    t = 0.0
    while t <= xmax:
        body.append(f'<line x1="{sx(t):.1f}" y1="{top + plot_h}" x2="{sx(t):.1f}" y2="{top + plot_h + 5}" '
                    f'stroke="{MUTED}"/>')
        body.append(_text(sx(t), top + plot_h + 16, f"{t:g}", anchor="middle", fill=MUTED))
        t += step
    body.append(_text(left + plot_w / 2, top + plot_h + 34, "x: median model seconds per clip", anchor="middle"))
    shapes = ("circle", "square", "triangle", "diamond")
    key_top = top + plot_h + 60
    for i, p in enumerate(pts):
        x, y = sx(p["seconds"]), sy(p["rate"])
        if p.get("lo") is not None and p.get("hi") is not None:
            body.append(f'<line x1="{x:.1f}" y1="{sy(p["lo"]):.1f}" x2="{x:.1f}" y2="{sy(p["hi"]):.1f}" '
                        f'stroke="{INK}" stroke-width="1.5"/>')
        if p.get("s_lo") is not None and p.get("s_hi") is not None:
            body.append(f'<line x1="{sx(p["s_lo"]):.1f}" y1="{y:.1f}" x2="{sx(p["s_hi"]):.1f}" y2="{y:.1f}" '
                        f'stroke="{INK}" stroke-width="1.5"/>')
        shape, fill = shapes[i % len(shapes)], (COLOUR_A, COLOUR_B)[i % 2]
        body.append(_marker(shape, x, y, fill))
        ky = key_top + 20 * i
        body.append(_marker(shape, 12, ky, fill))
        body.append(_text(26, ky, _fit(f"{p['model']}: {p['seconds']:.3g}s, {_pct(p['rate'])}", NARROW - 30),
                          weight="600"))
    desc = "; ".join(f"{p['model']}: {p['seconds']:.3g} s per clip, preferred {_pct(p['rate'])}" for p in pts)
    return _svg(uid, NARROW, key_top + 20 * len(pts), title, desc, "".join(body), layout="narrow")


def _votes_over_time_narrow(times: Sequence[datetime], *, uid: str) -> Markup:
    title = "Votes over time"
    if not times:
        return empty_chart(uid, title, "No votes yet.", width=NARROW, layout="narrow")
    times = sorted(times)
    bucket = timedelta(hours=1) if times[-1] - times[0] <= timedelta(days=3) else timedelta(days=1)
    unit = "hour" if bucket == timedelta(hours=1) else "day"
    start = _floor(times[0], bucket)
    n_buckets = int((_floor(times[-1], bucket) - start) / bucket) + 1
    counts = [0] * n_buckets
    for t in times:
        counts[int((t - start) / bucket)] += 1
    left, top, plot_w, plot_h = 34, 44, NARROW - 44, 160
    cmax, total = max(counts), len(times)
    bw = plot_w / n_buckets
    body = [_text(4, 10, f"bars: votes per {unit} (peak {cmax})", fill=MUTED),
            _text(4, 26, "line: running total", fill=MUTED),
            _text(NARROW - 4, 26, f"{total} total", anchor="end", weight="600"),
            f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}"/>']
    run, pts = 0, []
    for i, c in enumerate(counts):
        h = plot_h * c / cmax
        body.append(f'<rect x="{left + i * bw + bw * 0.1:.1f}" y="{top + plot_h - h:.1f}" width="{bw * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{COLOUR_A}" opacity=".55"><title>{_e(_fmt(start + i * bucket, unit))}: '
                    f"{c} votes</title></rect>")
        run += c
        pts.append(f"{left + (i + 1) * bw:.1f},{top + plot_h * (1 - run / total):.1f}")
    body.append(f'<polyline points="{left},{top + plot_h} {" ".join(pts)}" fill="none" stroke="{INK}" '
                'stroke-width="2"/>')
    body.append(_text(left - 6, top, str(cmax), anchor="end", fill=MUTED))
    body.append(_text(left - 6, top + plot_h, "0", anchor="end", fill=MUTED))
    # The first and last bucket on lines of their own: side by side, two timestamps do not fit 320 units.
    body.append(_text(left, top + plot_h + 16, f"from {_fmt(start, unit)}", fill=MUTED))
    body.append(_text(left, top + plot_h + 32, f"to {_fmt(start + (n_buckets - 1) * bucket, unit)}", fill=MUTED))
    desc = f"{total} votes between {_fmt(times[0], 'minute')} and {_fmt(times[-1], 'minute')}, peak {cmax} per {unit}"
    return _svg(uid, NARROW, top + plot_h + 42, title, desc, "".join(body), layout="narrow")


def _ratings_plot_narrow(rows: Sequence[dict], *, uid: str, center: float = 1000.0) -> Markup:
    title = "Model ratings (Bradley-Terry, arena scale) with 95% bootstrap intervals"
    if not rows:
        return empty_chart(uid, title, "Ratings need votes between at least two models.", width=NARROW,
                           layout="narrow")
    rows = sorted(rows, key=lambda r: -r["rating"])
    lo_all = min(min(r.get("lo", r["rating"]) for r in rows), center)
    hi_all = max(max(r.get("hi", r["rating"]) for r in rows), center)
    pad = max((hi_all - lo_all) * 0.08, 10)
    lo_all, hi_all = lo_all - pad, hi_all + pad
    left, plot_w, top, row_h = 14, NARROW - 28, 30, 44
    bottom = top + row_h * len(rows) - 4

    def sx(v: float) -> float:
        return left + plot_w * (v - lo_all) / (hi_all - lo_all)

    body = [_text(sx(center), 10, f"{center:g} = average", anchor="middle", fill=MUTED)]
    grid = []
    step = _nice_step(hi_all - lo_all) * 2
    t = math.ceil(lo_all / step) * step
    while t <= hi_all:
        grid.append(f'<line x1="{sx(t):.1f}" y1="{top - 6}" x2="{sx(t):.1f}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(sx(t), bottom + 14, f"{t:g}", anchor="middle", fill=MUTED))
        t += step
    grid.append(f'<line x1="{sx(center):.1f}" y1="{top - 6}" x2="{sx(center):.1f}" y2="{bottom}" stroke="{INK}" '
                'stroke-dasharray="5 3"/>')
    body += _interval_rows(
        rows, label=lambda r: f"#{r.get('rank', '?')} {r['model']}",
        value=lambda r: f"{r['rating']:.0f}" + (f" [{r['lo']:.0f}, {r['hi']:.0f}]" if r.get("lo") is not None else ""),
        scale=sx, point=lambda r, x, y: _marker("square", x, y, COLOUR_A), top=top, row_h=row_h, grid=grid)
    desc = "; ".join(f"rank {r.get('rank', '?')} {r['model']}: {r['rating']:.0f}" for r in rows)
    return _svg(uid, NARROW, bottom + 26, title, desc, "".join(body), layout="narrow")


def stacked_bars(rows: Sequence[dict], *, model_a: str, model_b: str, uid: str = "wtl") -> Markup:
    """100% stacked bars of wins, ties and losses per criterion (see ``_stacked_bars_wide``), both layouts."""
    return responsive(_stacked_bars_wide(rows, model_a=model_a, model_b=model_b, uid=uid),
                      _stacked_bars_narrow(rows, model_a=model_a, model_b=model_b, uid=f"{uid}-narrow"))


def forest_plot(rows: Sequence[dict], *, subject: str, uid: str = "forest", reference: float = 0.5,
                label_width: int = 190) -> Markup:
    """Preference rates with 95% intervals and a line at 50% (see ``_forest_plot_wide``), both layouts."""
    return responsive(_forest_plot_wide(rows, subject=subject, uid=uid, reference=reference,
                                        label_width=label_width),
                      _forest_plot_narrow(rows, subject=subject, uid=f"{uid}-narrow", reference=reference))


def heatmap(rows: Sequence[str], cols: Sequence[tuple[str, str]], cells: dict[tuple[str, str], dict], *,
            subject: str, uid: str = "heat", row_title: str = "theme") -> Markup:
    """Theme x criterion preference cells (see ``_heatmap_wide``), both layouts."""
    return responsive(_heatmap_wide(rows, cols, cells, subject=subject, uid=uid, row_title=row_title),
                      _heatmap_narrow(rows, cols, cells, subject=subject, uid=f"{uid}-narrow", row_title=row_title))


def cost_scatter(points: Sequence[dict], *, uid: str = "cost") -> Markup:
    """Seconds per clip against preference rate (see ``_cost_scatter_wide``), both layouts."""
    return responsive(_cost_scatter_wide(points, uid=uid), _cost_scatter_narrow(points, uid=f"{uid}-narrow"))


def votes_over_time(times: Sequence[datetime], *, uid: str = "timeline") -> Markup:
    """Votes per hour or day with the running total (see ``_votes_over_time_wide``), both layouts."""
    return responsive(_votes_over_time_wide(times, uid=uid), _votes_over_time_narrow(times, uid=f"{uid}-narrow"))


def ratings_plot(rows: Sequence[dict], *, uid: str = "ratings", center: float = 1000.0) -> Markup:
    """Arena-style ratings with intervals (see ``_ratings_plot_wide``), both layouts."""
    return responsive(_ratings_plot_wide(rows, uid=uid, center=center),
                      _ratings_plot_narrow(rows, uid=f"{uid}-narrow", center=center))
