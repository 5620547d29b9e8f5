"""A server-made SVG chart of a session's cache replay: per call, the share of input
read from the cache (bars, left axis) and the money it saved (line, right axis).

Made here from plain strings so the page needs no chart library and no CDN.
Every text that could come from a caller (the title holds a session id) goes
through :func:`xml.sax.saxutils.escape` with quotes escaped as well, after any
character XML 1.0 cannot hold (C0 controls but tab and newlines, lone surrogates,
U+FFFE/U+FFFF: a session id may hold them) is written as a visible ``\\xNN`` /
``\\uNNNN`` escape: one such character made the whole image unreadable (so is a bidi
control, such as U+202E, which drew the rest of the title backwards). Numbers
are formatted by us. The page shows the SVG in an ``<img>``, where scripts never run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 72, 36, 40


class CallPoint(Protocol):
    """What the chart reads of one call (see ``inspect_routes.CallCost``)."""

    @property
    def seq(self) -> int: ...
    @property
    def read_share(self) -> float: ...
    @property
    def saved_usd(self) -> float: ...


#: What XML 1.0 cannot hold (its ``Char`` production, complemented), even as a reference.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: Bidi formatting characters (marks, embeddings, overrides, isolates), written as
#: visible escapes too: a U+202E in the session id drew the rest of the title backwards.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _text(value: str) -> str:
    """``value`` as XML character data or attribute text: escaped, valid XML, and with
    no bidi control that could reorder the rest of its line."""
    return _escaped(_shown(value))


def _shown(value: str) -> str:
    """``value`` with what XML cannot hold and every bidi control written as escapes."""
    return _BIDI.sub(_visible, _NOT_XML.sub(_visible, value))


def _escaped(shown: str) -> str:
    return escape(shown, {'"': "&quot;", "'": "&#x27;"})


#: The most characters of the title the chart's width shows (13 px bold, one line).
MAX_TITLE_CHARS = 90


def _title(value: str) -> str:
    """The title (``<session id> · <model>``) as :func:`_text` shows it, its middle cut
    ("…") to fit :data:`MAX_TITLE_CHARS`: one SVG line does not wrap, and a long session
    id pushed the model's name off the chart's edge (a review)."""
    shown = _shown(value)
    if len(shown) > MAX_TITLE_CHARS:
        tail = MAX_TITLE_CHARS * 2 // 5
        shown = shown[: MAX_TITLE_CHARS - tail - 1] + "\u2026" + shown[-tail:]
    return _escaped(shown)


def _money(value: float) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):.4f}" if abs(value) < 1 else f"{sign}${abs(value):,.2f}"


def cost_chart_svg(calls: Sequence[CallPoint], *, title: str, note: str = "") -> str:
    """The chart as an SVG document (an empty-state chart when there are no calls);
    ``note`` is a line under the title (what part of the log was replayed)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="20" font-size="13" font-weight="bold">{_title(title)}</text>',
    ]
    if note:
        parts.append(f'<text class="note" x="{LEFT}" y="32" fill="#555">{_text(note)}</text>')
    base = TOP + plot_h
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = base - frac * plot_h
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{frac:.0%}</text>'
        )
    if not calls:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'fill="#777">no calls to replay: the session has no user turns</text></svg>'
        )
        return "".join(parts)
    n = len(calls)
    step = plot_w / n
    bar = max(1.0, step * 0.7)
    # The saving axis spans from the lowest (a call that writes the cache can cost more
    # than it saves: negative) to the highest saving, always including zero.
    lo = min(0.0, min(c.saved_usd for c in calls))
    hi = max(0.0, max(c.saved_usd for c in calls))
    span = (hi - lo) or 1e-9

    def y_of(saved: float) -> float:
        return base - (saved - lo) / span * plot_h

    for i, c in enumerate(calls):
        h = max(0.0, min(1.0, c.read_share)) * plot_h
        x = LEFT + i * step + (step - bar) / 2
        parts.append(
            f'<rect class="share" x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}" fill="#4c8bf5"><title>call at turn {c.seq}: '
            f"{c.read_share:.0%} read from cache, saved {_money(c.saved_usd)}</title></rect>"
        )
    points = " ".join(
        f"{LEFT + (i + 0.5) * step:.1f},{y_of(c.saved_usd):.1f}" for i, c in enumerate(calls)
    )
    if lo < 0:
        zero = y_of(0.0)
        parts.append(
            f'<line class="zero" x1="{LEFT}" y1="{zero:.1f}" x2="{LEFT + plot_w}" '
            f'y2="{zero:.1f}" stroke="#e8710a" stroke-dasharray="3 3"/>'
        )
    parts.append(
        f'<polyline class="saved" points="{points}" fill="none" stroke="#e8710a" stroke-width="2"/>'
    )
    for value in sorted({lo, 0.0, hi}):
        parts.append(
            f'<text x="{LEFT + plot_w + 6}" y="{y_of(value) + 4:.1f}" fill="#e8710a">'
            f"{_money(value)}</text>"
        )
    total = sum(c.saved_usd for c in calls)
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 12}" fill="#333">{n} calls (turn seq '
        f"{calls[0].seq}..{calls[-1].seq}) · bars: cache-read share · line: saved per call · "
        f"total saved {_money(total)}</text></svg>"
    )
    return "".join(parts)
