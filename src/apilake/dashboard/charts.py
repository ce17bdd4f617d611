"""Charts as inline SVG, drawn on the server: no script, no CDN, and the same in a saved file."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 520, 170, 64, 22, 10
PALETTE = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563")

Format = Callable[[float], str]


def _frame(title: str, top: float, fmt: Format, body: list[str], labels: Sequence[str]) -> Markup:
    """Axes, the top value, first and last x labels, around the marks in `body`."""
    plot_h = HEIGHT - BOTTOM - TOP
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{escape(fmt(top))}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        *body,
    ]
    if labels:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT - 6}">{escape(labels[0])}</text>')
        if len(labels) > 1:
            parts.append(f'<text x="{WIDTH}" y="{HEIGHT - 6}" text-anchor="end">{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], fmt: Format = str) -> Markup:
    """Grouped bars: one group per label (a run, oldest left), one bar per series; hover shows the value."""
    top = max((v for values in series.values() for v in values), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(labels), 1)
    width = min(max(slot * 0.8 / max(len(series), 1), 1), 28)
    body = []
    for s, (name, values) in enumerate(series.items()):
        for i, value in enumerate(values):
            h = plot_h * value / top
            x = LEFT + i * slot + slot * 0.1 + s * width
            body.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{width:.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(labels[i])} {escape(name)}: {escape(fmt(value))}</title></rect>"
            )
    return _frame(title, top, fmt, body, labels)


def lines(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]], fmt: Format = str) -> Markup:
    """One line per series over the labels (dates, oldest left); a None is a break in the line."""
    top = max((v for values in series.values() for v in values if v is not None), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(labels) - 1, 1)
    body = []
    for s, (name, values) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                runs.append([])
                continue
            x, y = LEFT + i * step, TOP + plot_h - plot_h * value / top
            runs[-1].append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>{escape(labels[i])} {escape(name)}: {escape(fmt(value))}</title></circle>'
            )
        body += [f'<polyline points="{" ".join(r)}" fill="none" stroke="{colour}" stroke-width="1.5"/>' for r in runs if len(r) > 1]
    return _frame(title, top, fmt, body, labels)


def legend(names: Sequence[str]) -> Markup:
    return Markup("".join(f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{escape(n)}</span>' for i, n in enumerate(names)))
