"""SVG charts: accessible, readable without colour, numbers printed, empty states, and escaped labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from app import charts
from app.jinja_env import STATIC_DIR

NS = "{http://www.w3.org/2000/svg}"


def _check_svg(root: ET.Element) -> ET.Element:
    assert root.tag == f"{NS}svg" and root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"{NS}title").get("id") == title_id and root.find(f"{NS}desc").get("id") == desc_id
    return root


def _both(chart) -> tuple[ET.Element, ET.Element]:
    """The wide and the narrow drawing of a chart, each checked as an accessible SVG."""
    wrapper = ET.fromstring(str(chart))  # well-formed XML, or this raises
    assert wrapper.tag == "div" and "chart-switch" in wrapper.get("class").split()
    wide, narrow = (_check_svg(svg) for svg in wrapper)
    assert "chart-wide" in wide.get("class").split() and "chart-narrow" in narrow.get("class").split()
    assert wide.get("id") != narrow.get("id")  # two drawings on one page: ids (and pattern ids) must differ
    assert wide.find(f"{NS}title").text == narrow.find(f"{NS}title").text
    return wide, narrow


def _parse(chart) -> ET.Element:
    return _both(chart)[0]


def _texts(root) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


ROWS = [{"label": "Motion naturalness", "a": 30, "tie": 10, "b": 60},
        {"label": "Overall <quality>", "a": 5, "tie": 0, "b": 5}]


def test_stacked_bars_print_shares_and_use_patterns():
    root = _parse(charts.stacked_bars(ROWS, model_a="fast", model_b="slow & steady"))
    texts = _texts(root)
    assert "30%" in texts and "60%" in texts and "10%" in texts and "n=100" in texts
    assert "Overall <quality>" in texts  # escaped in the markup, intact once parsed
    fills = {r.get("fill") for r in root.iter(f"{NS}rect")}
    assert "url(#wtl-hatch)" in fills and "url(#wtl-dots)" in fills  # model B and ties are not colour-only
    assert "slow & steady better" in texts


def test_forest_plot_marks_significance_and_draws_50_line():
    rows = [{"label": "A", "rate": 0.7, "lo": 0.6, "hi": 0.8, "significant": True},
            {"label": "B", "rate": 0.52, "lo": 0.4, "hi": 0.64, "significant": False},
            {"label": "C", "rate": None, "lo": None, "hi": None, "significant": False}]
    root = _parse(charts.forest_plot(rows, subject="fast"))
    texts = _texts(root)
    assert "70% [60%–80%] ★" in texts and "52% [40%–64%]" in texts
    assert "C" not in texts  # undecided rows have no point to draw
    dashed = [ln for ln in root.iter(f"{NS}line") if ln.get("stroke-dasharray")]
    assert len(dashed) == 1 and dashed[0].get("x1") == f"{190 + 380 * 0.5:.1f}"


def test_heatmap_prints_rate_count_and_mark():
    cells = {("nature", "k1"): {"rate": 0.8, "n": 20, "significant": True},
             ("sports", "k1"): {"rate": 0.3, "n": 10, "significant": False}}
    root = _parse(charts.heatmap(["nature", "sports"], [("k1", "Motion naturalness")], cells, subject="fast"))
    texts = _texts(root)
    assert "80% ★" in texts and "n=20" in texts and "30%" in texts and "n=10" in texts


def test_cost_scatter_empty_state_without_costs():
    root = _parse(charts.cost_scatter([{"model": "a", "seconds": None, "rate": 0.5}]))
    assert any("No generation costs recorded" in t for t in _texts(root))
    root = _parse(charts.cost_scatter([{"model": "fast", "seconds": 2.0, "rate": 0.4, "lo": 0.3, "hi": 0.5},
                                       {"model": "slow", "seconds": 20.0, "rate": 0.6, "lo": 0.5, "hi": 0.7}]))
    assert "fast: 2s, 40%" in _texts(root) and "slow: 20s, 60%" in _texts(root)


def test_votes_over_time_counts_every_vote():
    t0 = datetime(2026, 1, 1, 9, 15, tzinfo=UTC)
    times = [t0, t0 + timedelta(minutes=5), t0 + timedelta(hours=2)]
    root = _parse(charts.votes_over_time(times))
    assert "3 total" in _texts(root)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert ["".join(b.find(f"{NS}title").itertext()).split(": ")[1] for b in bars] == ["2 votes", "0 votes",
                                                                                        "1 votes"]
    assert "No votes yet." in _texts(_parse(charts.votes_over_time([])))


def test_ratings_plot_sorted_best_first():
    rows = [{"model": "m1", "rating": 950, "lo": 920, "hi": 980, "rank": 2},
            {"model": "m2", "rating": 1050, "lo": 1020, "hi": 1080, "rank": 1}]
    texts = _texts(_parse(charts.ratings_plot(rows)))
    assert texts.index("#1 m2") < texts.index("#2 m1")
    assert "1050 [1020, 1080]" in texts


def _narrow_text_fits(root: ET.Element) -> list[str]:
    """Texts of a narrow drawing whose estimated extent leaves the 320-unit box (7 units per character)."""
    width = float(root.get("viewBox").split()[2])
    out = []
    for t in root.iter(f"{NS}text"):
        if t.get("x") is None or t.get("transform"):
            continue
        x, n = float(t.get("x")), len("".join(t.itertext())) * 6.2  # system-ui's average glyph at 12 px
        lo, hi = {"start": (x, x + n), "middle": (x - n / 2, x + n / 2), "end": (x - n, x)}[t.get("text-anchor")]
        if lo < -1 or hi > width + 1:
            out.append("".join(t.itertext()))
    return out


def test_every_chart_has_a_narrow_drawing_whose_text_fits_a_phone():
    long = "a-very-long-model-name-from-a-lab-checkpoint-v2"
    t0 = datetime(2026, 1, 1, 9, 15, tzinfo=UTC)
    made = [
        charts.stacked_bars(ROWS, model_a=long, model_b="slow"),
        charts.forest_plot([{"label": "Appearance aesthetics and more words", "rate": 0.7, "lo": 0.55, "hi": 0.83,
                             "significant": True}], subject=long),
        charts.heatmap(["nature"], [("k1", "Motion naturalness"), ("k2", "Video-text relevance")],
                       {("nature", "k1"): {"rate": 0.8, "n": 20, "significant": True}}, subject=long),
        charts.cost_scatter([{"model": long, "seconds": 2.0, "rate": 0.4, "lo": 0.3, "hi": 0.5},
                             {"model": "slow", "seconds": 20.0, "rate": 0.6, "lo": 0.5, "hi": 0.7}]),
        charts.votes_over_time([t0, t0 + timedelta(days=5)]),
        charts.ratings_plot([{"model": long, "rating": 1100, "lo": 1020, "hi": 1180, "rank": 1},
                             {"model": "m2", "rating": 900, "lo": 820, "hi": 980, "rank": 2}]),
        charts.cost_scatter([]),
    ]
    for chart in made:
        wide, narrow = _both(chart)
        assert narrow.get("viewBox").split()[2] == str(charts.NARROW)
        assert _narrow_text_fits(narrow) == [], wide.get("id")
        # Numbers a reader needs are printed in the narrow drawing too, not only in the wide one.
        wide_numbers = {t for t in _texts(wide) if "%" in t and "[" in t}
        assert wide_numbers <= set(_texts(narrow)), wide.get("id")


def test_every_wide_threshold_has_its_container_rule():
    css = (STATIC_DIR / "css" / "results.css").read_text()
    for width, font in [(w, 12) for w in range(600, 1301, 10)] + [(w, 10) for w in range(600, 1091, 10)]:
        n = charts.container_threshold(width, font)
        assert n * font / width >= 11  # at the threshold, the smallest text is drawn at 11 px at least
        assert f"@container (min-width: {n}px) {{ .cq{n} > svg.chart-wide {{ display: block; }}" in css, width


def test_the_threshold_follows_the_smallest_text_of_the_wide_drawing():
    # The heatmap prints its counts at 10 units: its wide drawing needs a box 11/10 of its width, not 11/12.
    heat = charts.heatmap(["nature"], [(f"k{i}", f"Criterion {i}") for i in range(7)], {}, subject="fast")
    wide, narrow = _both(heat)
    width = int(wide.get("viewBox").split()[2])
    assert f"cq{charts.container_threshold(width, 10)}" in str(heat)
    assert all(int(t.get("font-size", 12)) >= 12 for t in narrow.iter(f"{NS}text"))
