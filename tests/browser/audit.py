"""Checks a real browser makes of any page: axe-core's accessibility rules, sideways scrolling, chart text size
and the focus ring's contrast. Used by test_every_page_browser.py; each returns a list of readable problems
(empty when the page passes), so one test can visit every page and report all that is wrong at once.

axe-core is vendored (tests/browser/vendor/, its MPL-2.0 licence beside it; version and checksum in
vendor/README.md), so the check runs offline in CI and gives the same verdicts until someone upgrades it.
"""

from __future__ import annotations

from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"
AXE_SOURCE = (VENDOR / "axe.min.js").read_text(encoding="utf-8")
# WCAG 2.0 and 2.1, levels A and AA, plus axe's best practices; wcag22aa adds the 24 px target size (2.5.8).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
MIN_CHART_TEXT_PX = 11.0
MIN_NON_TEXT_CONTRAST = 3.0  # WCAG 2.1 SC 1.4.11: a focus indicator against what is next to it


def axe_violations(page) -> list[str]:
    """Every axe violation on the page as 'rule (impact): selector: summary'.

    The script is evaluated through the DevTools protocol, which the page's strict CSP does not govern, so
    nothing about the page is loosened to audit it.
    """
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_SOURCE + "\n;undefined")
    found = page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
            return r.violations.flatMap(v => v.nodes.map(n =>
                `${v.id} (${v.impact}): ${n.target.join(' ')}: ${(n.failureSummary || v.help).replace(/\\s+/g, ' ')}`));
        }""",
        AXE_TAGS,
    )
    return list(found)


def sideways_scroll(page) -> list[str]:
    """The page scrolls sideways: the document is wider than the window. Names the widest culprits."""
    width = page.evaluate("document.scrollingElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    if width <= inner:
        return []
    culprits = page.evaluate(
        """(inner) => Array.from(document.querySelectorAll('body *'))
            .filter(el => el.getBoundingClientRect().right > inner + 0.5)
            .filter(el => !el.parentElement || el.parentElement.getBoundingClientRect().right <= inner + 0.5)
            .slice(0, 5)
            .map(el => {
                const cls = typeof el.className === 'string' && el.className.trim()
                    ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
                const right = Math.round(el.getBoundingClientRect().right);
                return `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${cls} right=${right}`;
            })""",
        inner,
    )
    return [f"page is {width} px wide in a {inner} px window: {', '.join(culprits) or 'no single element'}"]


def small_chart_text(page) -> list[str]:
    """Chart text drawn smaller than MIN_CHART_TEXT_PX on screen (only charts that are displayed count)."""
    sizes = page.evaluate(
        """() => Array.from(document.querySelectorAll('svg.chart')).filter(svg => svg.getBoundingClientRect().width > 0)
            .flatMap(svg => Array.from(svg.querySelectorAll('text')).map(t => {
                const box = t.getBoundingClientRect();
                // The CTM's scale turns the font size in user units into screen pixels.
                const m = t.getScreenCTM();
                const px = parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b);
                return {chart: svg.id, text: t.textContent.slice(0, 30), px: px, w: box.width};
            }))""",
    )
    small = [s for s in sizes if s["w"] > 0 and s["px"] < MIN_CHART_TEXT_PX - 0.01]
    return [f"chart {s['chart']}: '{s['text']}' at {s['px']:.1f} px" for s in small[:8]]


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG contrast ratio of two sRGB colours."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def focus_ring_contrast(page) -> tuple[float, str]:
    """Press Tab once from the top of the page and return the focus outline's contrast against the background
    behind the focused element (its nearest ancestor with an opaque background), with a description."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Tab")
    info = page.evaluate(
        """() => {
            const el = document.activeElement;
            if (!el || el === document.body) { return null; }
            const cs = getComputedStyle(el);
            let bg = 'rgb(255, 255, 255)';
            for (let p = el.parentElement; p; p = p.parentElement) {
                const c = getComputedStyle(p).backgroundColor;
                if (c && c !== 'transparent' && c !== 'rgba(0, 0, 0, 0)') { bg = c; break; }
            }
            return {what: el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''), outline: cs.outlineColor,
                    style: cs.outlineStyle, width: cs.outlineWidth, bg: bg};
        }""",
    )
    if info is None:
        return float("inf"), "nothing to focus"

    def rgb(css: str) -> tuple[float, float, float]:
        parts = css[css.index("(") + 1:css.index(")")].replace(",", " ").split()
        return float(parts[0]), float(parts[1]), float(parts[2])

    desc = f"{info['what']}: outline {info['style']} {info['width']} {info['outline']} on {info['bg']}"
    if info["style"] == "none" or info["width"] == "0px":
        return 0.0, desc
    return contrast(rgb(info["outline"]), rgb(info["bg"])), desc
