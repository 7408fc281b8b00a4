"""The app page's charts, drawn on the server as SVG (no chart library, nothing to fetch)."""

from __future__ import annotations

from datetime import datetime
from html import escape

COLORS = {"finished": "#2eb67d", "failed": "#e01e5a", "cancelled": "#ecb22e", "other": "#9e9e9e"}
WIDTH, HEIGHT, PAD = 620, 180, 28
LABELS = {"other": "running or queued"}
LINE = "#2196f3"


def _text(x: float, y: float, text: str, *, end: bool = False, cls: str = "chart-note") -> str:
    anchor = ' text-anchor="end"' if end else ""
    return f'<text x="{x:.0f}" y="{y:.0f}"{anchor} class="{cls}">{escape(text)}</text>'


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"


def _titled(shape: str, title: str) -> str:
    return f"<{shape}><title>{escape(title)}</title></{shape.split()[0]}>"


def deploys_per_day(days: list[tuple[datetime, dict[str, int]]]) -> str:
    """Stacked bars, one per day, coloured by outcome."""
    top = max((sum(counts.values()) for _, counts in days), default=0) or 1
    slot = (WIDTH - 2 * PAD) / max(len(days), 1)
    marks = []
    for index, (day, counts) in enumerate(days):
        x, bottom = PAD + index * slot, HEIGHT - PAD
        for outcome in ("finished", "failed", "cancelled", "other"):
            count = counts.get(outcome, 0)
            if count:
                height = (HEIGHT - 2 * PAD) * count / top
                bottom -= height
                rect = (
                    f'rect x="{x + 1:.1f}" y="{bottom:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{height:.1f}" fill="{COLORS[outcome]}"'
                )
                marks.append(_titled(rect, f"{day:%b %d}: {count} {LABELS.get(outcome, outcome)}"))
    edges = (days[0][0].strftime("%b %d"), days[-1][0].strftime("%b %d")) if days else ("", "")
    return _frame("Deploys per day, last 31 days", marks, edges, f"max {top}/day")


def durations(points: list[tuple[datetime, float, str]]) -> str:
    """Each finished deploy's duration over time, oldest to newest."""
    if not points:
        return _frame("Deploy duration", [], ("", ""), "no deploys yet")
    top = max(seconds for _, seconds, _ in points) or 1
    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)
    coords = [
        (PAD + i * step, HEIGHT - PAD - (HEIGHT - 2 * PAD) * seconds / top)
        for i, (_, seconds, _) in enumerate(points)
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    marks = [f'<polyline points="{line}" fill="none" stroke="{LINE}" stroke-width="2"/>']
    for (x, y), (when, seconds, name) in zip(coords, points, strict=True):
        dot = f'circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{LINE}"'
        marks.append(_titled(dot, f"{name}: {_seconds(seconds)} ({when:%b %d %H:%M})"))
    edges = (points[0][0].strftime("%b %d"), points[-1][0].strftime("%b %d"))
    return _frame("Deploy duration", marks, edges, f"max {_seconds(top)}")


def _frame(title: str, marks: list[str], edges: tuple[str, str], scale: str) -> str:
    axis = f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
    return "".join(
        [
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(title)}">',
            _text(PAD, 18, title, cls="chart-title"),
            _text(WIDTH - PAD, 18, scale, end=True),
            axis,
            *marks,
            _text(PAD, HEIGHT - 6, edges[0]),
            _text(WIDTH - PAD, HEIGHT - 6, edges[1], end=True),
            "</svg>",
        ]
    )
