"""Text safe to print to a terminal (no imports beyond the standard library)."""
from __future__ import annotations

import logging
import re

# What a file name may hold but a terminal must not receive raw: C0/C1 controls (ESC
# sequences could retitle the terminal or rewrite a printed verdict), line separators,
# bidirectional overrides (reorder the text shown), and lone surrogates (a non-UTF-8 name:
# a UnicodeEncodeError traceback on a strict UTF-8 stdout, e.g. LANG=en_US.UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with those characters as Python escapes (``\\x1b``, ``\\udcff``)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeFormatter(logging.Formatter):
    """Log records as :func:`terminal_safe` text, line by line (a traceback keeps its lines).

    Warnings name the files they are about (frames a damaged video lost, a scan that
    failed): a name holding ESC sequences reached stderr, the terminal, raw."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(terminal_safe(line) for line in super().format(record).split("\n"))
