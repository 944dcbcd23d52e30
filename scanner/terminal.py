"""Text safe to print to a terminal (no imports beyond the standard library)."""
from __future__ import annotations

import logging
import re

# What a file name may hold but a reader must not get raw: C0/C1 controls (ESC sequences
# could retitle the terminal or rewrite a printed verdict; a newline or tab shows as a space),
# line separators, bidirectional controls (`evil\u202egpj.mp4` shows as "evil4pm.jpg"),
# zero-width and other invisible characters and spaces other than U+0020 (`zero\u200bwidth.mp4`
# looked like `zerowidth.mp4`), and lone surrogates (a non-UTF-8 name: a UnicodeEncodeError
# traceback on a strict UTF-8 stdout). One set for the terminal and the HTML report.
HIDDEN = re.compile("[\x00-\x1f\x7f-\xa0\xad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
                    "\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0"
                    "\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e0fff]")


def terminal_safe(text: str) -> str:
    """``text`` with those characters as Python escapes (``\\x1b``, ``\\udcff``)."""
    return HIDDEN.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeFormatter(logging.Formatter):
    """Log records as :func:`terminal_safe` text, line by line (a traceback keeps its lines).

    Warnings name the files they are about (frames a damaged video lost, a scan that
    failed): a name holding ESC sequences reached stderr, the terminal, raw."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(terminal_safe(line) for line in super().format(record).split("\n"))
