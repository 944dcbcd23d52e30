"""``dfscan watch URL|DEVICE...``: a live terminal table of streams and verdicts."""
from __future__ import annotations

import signal
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pydantic import ValidationError

from ..aggregate import score_text_band
from ..terminal import terminal_safe
from .config import ConfigError, ServeConfig, StreamConfig, format_errors
from .service import LiveService

VERDICT_STYLE = {"fake": "bold red", "real": "green", "uncertain": "yellow", "unknown": "dim"}
STATE_STYLE = {"live": "green", "connecting": "cyan", "stalled": "yellow", "backoff": "red", "stopped": "dim"}


def stream_table(rows: list[dict], bounds: tuple[float, float] | None = None) -> Table:
    """Rich table of :meth:`LiveService.describe` rows (URLs already masked); ``bounds``:
    the verdicts' ``(real_below, fake_above)``, so a score reads on its verdict's side."""
    t = Table(title="dfscan watch", expand=False)
    for col, just in (("stream", "left"), ("state", "left"), ("fps", "right"), ("sampled", "right"),
                      ("dropped", "right"), ("reconn.", "right"), ("faces", "right"), ("score", "right"),
                      ("verdict", "left")):
        t.add_column(col, justify=just, no_wrap=True, min_width=10 if col == "state" else max(5, len(col)))
    t.add_column("last error", no_wrap=True, overflow="ellipsis", max_width=48)
    for r in rows:
        score = "-" if r.get("score") is None else (
            f"{r['score']:.3f}" if bounds is None else score_text_band(r["score"], *bounds))
        t.add_row(
            r["name"], f"[{STATE_STYLE.get(r['state'], '')}]{r['state']}[/]", f"{r['fps']:.1f}",
            str(r["frames_sampled"]), str(r["frames_dropped"]), str(r["reconnects"]), str(r["faces"]), score,
            # Text, not markup: an error quoting "[fe80::1]" or "[/x]" lost it or raised MarkupError;
            # terminal-safe: Rich passes ESC through, and an error may quote a server's text.
            f"[{VERDICT_STYLE.get(r['verdict'], '')}]{r['verdict']}[/]", Text(terminal_safe(_problem(r))[:48]),
        )
    return t


def _problem(row: dict) -> str:
    """The row's last error, else the face scores its window left out as NaN/inf: watch logs
    errors only, so a detector scoring every face NaN showed faces and an ``unknown`` verdict
    with no word why."""
    if row.get("last_error"):
        return row["last_error"]
    n = row.get("nonfinite_scores") or 0
    return f"{n} face score(s) NaN/inf: left out of the verdict" if n else ""


def fitting(console: Console, table: Table) -> Console:
    """``console``, or for a file or pipe one as wide as ``table``. Rich takes 80 columns
    there: `dfscan watch ... | tee` cut stream names to "…" and squeezed the number columns
    to nothing. A terminal keeps its width (the table follows a resized window)."""
    if console.is_terminal:
        return console
    need = console.measure(table, options=console.options.update_width(10_000)).maximum
    if need <= console.width:
        return console
    return Console(file=console.file, width=need, highlight=False, no_color=console.no_color)


def _bounds(svc: LiveService) -> tuple[float, float]:
    v = svc.verdict_settings
    return v.real_below, v.fake_above


def _show(svc: LiveService, console: Console, done: threading.Event, refresh_s: float,
          t_end: float | None) -> None:
    """The table, redrawn in a terminal until ``done``, ``t_end`` or every stream has stopped for
    good; to a file or pipe, where
    nothing is redrawn, the last table once (as Rich's Live did), whole."""
    if not console.is_terminal:
        while (not done.wait(refresh_s) and (t_end is None or time.monotonic() < t_end)
               and not all_stopped(svc.describe())):
            pass
        table = stream_table(svc.describe(), _bounds(svc))
        fitting(console, table).print(table)
        return
    with Live(stream_table(svc.describe(), _bounds(svc)), console=console, refresh_per_second=4) as live:
        while not done.wait(refresh_s):
            rows = svc.describe()
            live.update(stream_table(rows, _bounds(svc)))
            if (t_end is not None and time.monotonic() >= t_end) or all_stopped(rows):
                break


def all_stopped(rows: list[dict]) -> bool:
    """Every stream has stopped for good (a protocol this FFmpeg lacks, a certificate error: never
    retried). Watch went on showing them until a signal: a script's `dfscan watch srt://...`
    (or one piped, printing its table only at the end) hung for good."""
    return bool(rows) and all(r["state"] == "stopped" for r in rows)


def parse_targets(targets: list[str]) -> list[StreamConfig]:
    """``URL`` or ``name=URL`` arguments -> stream configs (auto names ``s1``, ``s2``...)."""
    out = []
    for i, t in enumerate(targets, 1):
        name, url = (t.split("=", 1) if "=" in t.split("://", 1)[0] else (f"s{i}", t))
        try:
            out.append(StreamConfig(name=name, url=url))
        except ValidationError as e:  # one line naming the key, never the URL (it may hold a password)
            # An invalid name may be a URL cut at a '=' ('u:pw@cam/x?ch=1'): not shown either.
            bad_name = any(err["loc"][:1] == ("name",) for err in e.errors())
            label = "" if bad_name else f" ({name!r})"
            raise ConfigError(f"stream {i}{label}: {format_errors(e)}") from None
    return out


def run_watch(cfg: ServeConfig, duration_s: float | None = None, refresh_s: float = 0.5,
              console: Console | None = None, signals: list[int] | None = None,
              sink_stats: list[dict] | None = None) -> list[dict]:
    """Run ``cfg``'s streams showing a live table until Ctrl-C/SIGTERM, ``duration_s``, or every
    stream has stopped for good (:func:`all_stopped` of the rows returned).

    ``sink_stats`` gets each sink's counts once stopped (delivered, failed, dropped).

    The signal that stopped it is appended to ``signals`` (the exit code is 128 + it, as
    ``dfscan scan``'s). As in a scan, the first signal stops gracefully (sinks drained) and
    puts the previous handlers back, so a second one acts at once if the stop hangs.
    """
    console = console or Console()
    done = threading.Event()

    def stop(signum, _frame):
        if signals is not None:
            signals.append(signum)
        for s, h in old.items():
            signal.signal(s, h)
        done.set()

    svc = LiveService(cfg)  # first: one that raises (a sink's file not writable) left the handlers installed
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status("loading models..."):
            svc.start()
        _show(svc, console, done, refresh_s, None if duration_s is None else time.monotonic() + duration_s)
        return svc.describe()
    finally:
        svc.stop()
        if sink_stats is not None:
            sink_stats.extend(s.describe() for s in svc.sinks.sinks)
        for s, h in old.items():
            signal.signal(s, h)
