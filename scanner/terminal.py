"""Text safe to print to a terminal (no imports beyond the standard library)."""
from __future__ import annotations

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
