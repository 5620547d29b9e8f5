"""How user text reaches a terminal: as text, never as markup or escape sequences.

Text that came from a user or a model (memories, turns, replies, ids, error messages
quoting input) is printed as a :class:`SafeText` or through :func:`shown`: rich
markup in it (``[bold]``, ``[link=...]``) stays literal, and its control characters
are shown as ``\\x1b``-style escapes, so stored text cannot style, link, retitle or
clear someone's terminal.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

#: C0 and C1 control characters but tab and newline, and DEL: what a terminal acts on.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\x1b``), so a memory
    that holds ``ESC [2J`` reads as that text instead of clearing the screen."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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
