"""How user text reaches a terminal: as text, never as markup or escape sequences.

Text that came from a user or a model (memories, turns, replies, ids, error messages
quoting input) is printed as a :class:`SafeText` or through :func:`shown`: rich
markup in it (``[bold]``, ``[link=...]``) stays literal, and its control and format
characters are shown as ``\\x1b``/``\\u202e``-style escapes, so stored text cannot
style, link, retitle or clear someone's terminal, nor reorder or hide what it shows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.measure import Measurement

#: C0 and C1 control characters but tab and newline, and DEL: what a terminal acts on.
#: And the Unicode format characters (category Cf) but ZWNJ and ZWJ (U+200C, U+200D):
#: bidi overrides, embeddings, isolates and marks (U+202A-202E, U+2066-2069, U+200E,
#: U+200F, U+061C), which reorder what a reader sees (``\u202etxt.exe`` reads
#: ``exe.txt``); zero-width space, word joiner, BOM and invisible operators (U+200B,
#: U+2060-2064, U+FEFF), the soft hyphen (U+00AD) and the tag characters
#: (U+E0000-E007F), which hide text inside what looks like other text.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def json_escaped(text: str) -> str:
    """JSON text with the characters :func:`shown` escapes written as ``\\uXXXX``
    escapes (a pair of them past U+FFFF): the same document to any parser.

    Why: ``json.dumps(ensure_ascii=False)`` escapes only U+0000-U+001F, so a memory
    holding U+009B (the one-byte CSI) or U+202E reached the terminal of whoever ran
    ``list --json`` raw, where the tables show it escaped (a review)."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return _CONTROL.sub(escape, text)


def shown(text: str) -> str:
    """``text`` with its control and format characters written as escapes (``\\x1b``,
    ``\\u202e``, ``\\U000e0041``), so a memory that holds ``ESC [2J`` reads as that
    text instead of clearing the screen, and one that holds a right-to-left override
    reads as written instead of reversed.

    Kept as they are: tab and newline, and ZWNJ and ZWJ (U+200C, U+200D), which
    join the parts of an emoji sequence (👩‍👩‍👧) and shape Persian and Indic
    words, and can neither reorder nor hide text. A subdivision flag (🏴 plus tag
    characters) shows its tags as escapes: tag characters also smuggle invisible
    ASCII, and that is what they must not do here.
    """
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


#: The whitespace controls :func:`shown` keeps, written as a script would type them.
_ID_ESCAPES = str.maketrans({"\n": "\\n", "\t": "\\t", "\r": "\\r"})


def shown_id(value: str) -> str:
    """An id (a session's, a memory's) as line-oriented output prints it: as
    :func:`shown`, and tab, newline and carriage return written as ``\\t``, ``\\n``
    and ``\\r`` too, so one id is one line and reads as one word.

    Why: ids come from apps (the HTTP API stores any non-blank one), and ``session
    list`` printed ``chat<LF>secret`` as two lines, so a script reading one id a line
    erased another user's session ``chat`` (a review); a tab came out as spaces, an id
    nobody could pass back. Such an id is shown, not given exactly: ``--json`` gives
    every id exactly."""
    return shown(value.translate(_ID_ESCAPES))


def id_is_escaped(value: str) -> bool:
    """Whether :func:`shown_id` writes any of ``value``'s characters as an escape (the
    line printed is not the id itself)."""
    return shown_id(value) != value


class SafeText(Text):
    """A rich ``Text`` whose characters are all shown (see :func:`shown`).

    Why: ``Text`` already keeps ``[bold]`` from being read as markup, but passes the
    escape character through, so a stored ``ESC ]8;;http://…`` became a live link in
    the terminal of whoever listed the memories.
    """

    def __init__(self, text: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(shown(text), *args, **kwargs)

    def append(self, text: str | Text, style: str | Any = None) -> SafeText:
        super().append(shown(text) if isinstance(text, str) else text, style)
        return self

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """The width with tabs expanded, as they are when printed.

        Why: ``Text`` measures a tab as no width and expands it (to up to 8 columns)
        only when printed, so a memory holding a tab outgrew the width its table was
        given under a pipe and its row wrapped onto a second line.
        """
        if "\t" not in self.plain:
            return super().__rich_measure__(console, options)
        expanded = self.copy()
        expanded.expand_tabs(self.tab_size or console.tab_size or 8)
        return Text.__rich_measure__(expanded, console, options)
