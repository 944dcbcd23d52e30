"""argparse value types of every dfscan command line, and the parser that reports them.

A number a command cannot use (NaN, inf, zero or a negative where they mean nothing,
an integer out of range) is refused while the arguments are parsed, before any work,
always in the same words: ``argument --epochs: must be an integer >= 1, not '0'``.
NaN never compares as in range, so every check here refuses it. Imports nothing
heavy: ``dfscan --help`` builds every parser.

``dfscan scan``'s own numbers are checked by :class:`scanner.config.ScanConfig`
(they may come from a YAML file as well), not here.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable


class Parser(argparse.ArgumentParser):
    """``dfscan``'s parser (its sub-commands' too: argparse makes them of this class).

    A usage error is one line, ``dfscan: error: COMMAND: ...``, exit 2, as every other
    dfscan error: argparse printed the whole usage first, many lines for ``train``."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]  # "dfscan probe fit" -> "probe fit"
        hint = f"(options: {self._helped()} --help)"  # what the usage block used to show
        self.exit(2, f"dfscan: error: {command + ': ' if command else ''}{message} {hint}\n")

    def parse_known_args(self, args=None, namespace=None):
        self._given = [str(a) for a in (sys.argv[1:] if args is None else args)]  # for _helped
        return super().parse_known_args(args, namespace)

    def _helped(self) -> str:
        """The command whose ``--help`` answers: a parent parser reports its sub-commands'
        unrecognized arguments, so the sub-commands named in the arguments are meant, nested
        ones too (``dfscan probe fit``)."""
        parser, rest = self, [a for a in getattr(self, "_given", []) if not a.startswith("-")]
        while rest:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not subs or rest[0] not in subs[0].choices:
                break
            parser, rest = subs[0].choices[rest[0]], rest[1:]
        return parser.prog


def _refuse(what: str, value: str):
    return argparse.ArgumentTypeError(f"must be {what}, not {value!r}")


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan  # refused by every range below


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``[lo, hi]`` (no upper bound when ``hi`` is None)."""
    what = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise _refuse(what, value) from None
        if n < lo or (hi is not None and n > hi):
            raise _refuse(what, value)
        return n
    return parse


SEED = int_in(0, 2**32 - 1)  # numpy, torch and scikit-learn all take these
# Side of a face crop or chip in pixels (synth, train, probe, separability): a typo's 60000 made
# synth allocate 10.8 GB for one chip (a cv2 traceback, or the machine's memory); 4096 is as
# large as a face in an 8K frame.
MAX_SIDE = 4096


def float_in(lo: float, hi: float, open_: bool = False) -> Callable[[str], float]:
    """A number in ``[lo, hi]``, or in ``(lo, hi)`` with ``open_``."""
    what = f"a number in ({lo:g}, {hi:g})" if open_ else f"a number in [{lo:g}, {hi:g}]"

    def parse(value: str) -> float:
        v = _float(value)
        if not (lo < v < hi if open_ else lo <= v <= hi):
            raise _refuse(what, value)
        return v
    return parse


fraction = float_in(0.0, 1.0)  # a probability or a share that may be all or nothing


def positive(value: str) -> float:
    """A finite number > 0 (a rate, a duration, a learning rate, a budget)."""
    v = _float(value)
    if not 0 < v < math.inf:
        raise _refuse("a positive finite number", value)
    return v


def seconds_or_none(value: str) -> float | None:
    """A positive number of seconds, or ``0`` / ``none`` for no limit."""
    if value.strip().lower() in ("0", "none"):
        return None
    v = _float(value)
    if not 0 < v < math.inf:
        raise _refuse("a positive number of seconds, or 0 for no limit", value)
    return v


def finite(value: str) -> float:
    """Any finite number."""
    v = _float(value)
    if not math.isfinite(v):
        raise _refuse("a finite number", value)
    return v


def comma_list(item: Callable[[str], float]) -> Callable[[str], tuple]:
    """Comma-separated values, each checked by ``item``: ``1e-3,0.1,10``."""
    def parse(value: str) -> tuple:
        try:
            return tuple(item(v) for v in value.split(","))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (in {value!r})") from None
    return parse
