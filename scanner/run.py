"""``dfscan scan``: inputs -> pipeline -> sinks, with progress and a summary.

Only counters of the finished rows are kept (never the rows), so memory does
not grow with the number of inputs. The first SIGINT or SIGTERM stops the scan
gracefully: no video starts, videos in flight are abandoned, every finished row
is written and the outputs are closed (HTML report included); a second signal
acts at once. Exit codes are listed in :mod:`scanner.cli`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from engines.errors import DfscanError

from . import metrics, metrics_push
from .aggregate import score_text
from .config import ConfigError, build_config, check_device
from .distributed import open_context, scan_rows
from .folder_walk import Skipped, skipped_line
from .output import PRIMARY_SUFFIXES, OutputError, open_outputs, order_outputs
from .outlock import OutputLocks
from .resume import ResumedOutputs, aggregation_of, compat_of, face_search_of, prepare_outputs, sampling_of
from .sources import bundled_samples, expand_inputs
from .terminal import terminal_safe
from .warmstart import close_all, prestart

log = logging.getLogger("dfscan")

OPTION_KEYS = ("frames", "fps", "detector", "weights", "device", "engine", "precision", "batch_size",
               "threshold", "max_faces", "min_face", "det_max_side", "frame_agg", "video_agg", "topk", "aggregate",
               "workers", "video_timeout_s", "out",
               "resume", "retry_errors", "metrics_port", "metrics_host", "metrics_push", "metrics_push_instance", "fail_on_fake", "progress", "details",
               "ray", "ray_cpus_per_actor", "ray_gpus_per_actor", "ray_actors", "ray_max_attempts")


SCAN_ANYWAY = ("to scan one anyway, name it on the command line or in a .txt list file "
               "(a named file of any extension is scanned; one that is not a video gets a not_video row)")


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM outside the scan loop; ``signum`` gives the exit code 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StdoutClosed(DfscanError):
    """Standard output went away mid-scan (piped into ``head``, ``less`` quit)."""

    exit_code = 128 + signal.SIGPIPE  # 141: what a shell reports for a writer killed by SIGPIPE


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's default raises SystemExit(1): the scan vanished without a word and exit 1
        # read as "an input failed". Stop like an interrupt instead (rows kept, outputs
        # closed); stdout goes to /dev/null, as rich does, so no later flush fails.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise StdoutClosed("standard output was closed (broken pipe): scan stopped, finished rows "
                           "are kept in the outputs (rerun with --resume)")


def config_from_args(args):
    overrides = {k: getattr(args, k) for k in OPTION_KEYS if hasattr(args, k)}
    return build_config(getattr(args, "config", None), overrides)


@dataclass
class Tally:
    """What the summary needs from the rows (counters, not the rows themselves)."""

    videos: int = 0
    verdicts: Counter = field(default_factory=Counter)
    frames: int = 0
    faces: int = 0
    stages: Counter = field(default_factory=Counter)

    def add(self, row: dict) -> None:
        self.videos += 1
        self.verdicts[row["verdict"]] += 1
        self.frames += row.get("frames") or 0
        self.faces += row.get("faces") or 0
        self.stages.update({k: v for k, v in (row.get("timings") or {}).items() if k != "total"})


def _inputs(args, console: Console) -> list[Path]:
    if args.paths:
        aliases: list[tuple[Path, Path]] = []
        unmatched: list[str] = []
        skipped = Skipped()
        paths = expand_inputs(args.paths, aliases, unmatched, skipped)
        if not paths:
            raise ConfigError(f"no video files found in {' '.join(args.paths)}")
        for item in unmatched:  # the other inputs are scanned; this one gets no row to show it
            console.print(f"[yellow]{printable(item)}: no video file found there[/yellow]")
        # Left out without a row: a video saved under no or an unlisted extension must not
        # pass for scanned.
        line = skipped_line(skipped, SCAN_ANYWAY, printable)
        if line:
            console.print(f"[yellow]{line}[/yellow]")
        if aliases:
            alias, kept = aliases[0]
            console.print(f"[dim]{len(aliases)} input(s) name a file listed before (e.g. {printable(str(alias))} is "
                          f"{printable(str(kept))}): scanned once, under the first name[/dim]")
    else:
        paths = bundled_samples()
        console.print(f"[dim]no PATH given: scanning the {len(paths)} bundled sample clips[/dim]")
    # Rows carry absolute paths: a later --resume from another folder still matches them.
    return [absolute_input(p) for p in paths]


def absolute_input(path: Path) -> Path:
    """``path`` made absolute, naming the file the system opens for it.

    Why not ``os.path.abspath``: it drops ``dir/..`` as text, while the system goes up from
    where a symlinked ``dir`` points: ``linkdir/../a.mp4`` (a list's ``../a.mp4`` reached
    through a symlinked folder) was scanned and reported as another ``a.mp4``. Folders
    before a ``..`` are resolved; the name itself is kept (a symlinked video keeps its name)."""
    if ".." not in path.parts:
        return Path(os.path.abspath(path))
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _to_scan(paths: list[Path], cfg, console: Console) -> tuple[list[Path], ResumedOutputs | None, Counter]:
    """``paths`` minus those whose row every existing JSONL/CSV output holds (``--resume``),
    the resume state, and the verdicts of the rows kept for the others (for the exit code)."""
    outs = order_outputs(cfg.outputs)
    if not (cfg.resume or cfg.retry_errors) or not outs or Path(outs[0]).suffix.lower() not in PRIMARY_SUFFIXES:
        return paths, None, Counter()
    state = prepare_outputs(outs, compat_of(cfg), cfg.retry_errors)
    todo = state.todo(paths)
    kept = state.kept_verdicts(paths, todo)
    if len(todo) < len(paths):
        of = ", ".join(f"{kept[v]} {v}" for v in ("fake", "error") if kept[v])
        console.print(f"[dim]--resume: {len(paths) - len(todo)} input(s) already in {printable(outs[0])}"
                      f"{f' ({of}: counted in the exit code)' if of else ''}[/dim]")
        _warn_new_outputs(outs, len(paths) - len(todo), console)
    return todo, state, kept


def _warn_new_outputs(outs: list[str], done: int, console: Console) -> None:
    """An output added on a resumed run gets this run's rows only (done inputs are not
    scanned again for it): say so, or its report would silently show part of the scan."""
    new = [p for p in outs[1:] if Path(p).suffix.lower() in (".jsonl", ".csv") and not os.path.isfile(p)]
    source = next((j for j in outs if Path(j).suffix.lower() == ".jsonl"), None)  # the report's
    report = next((h for h in outs if Path(h).suffix.lower() == ".html"), None)
    for p in new:
        also = f" (and the report {printable(report)} rendered from it)" if report and p == source else ""
        console.print(f"[yellow]--resume: {printable(p)} is new: it{also} gets only the inputs scanned now, "
                      f"not the {done} already in {printable(outs[0])}[/yellow]")


def printable(text: str) -> str:
    """``text`` safe for the terminal (:func:`terminal_safe`), Rich markup escaped."""
    return escape(terminal_safe(text))


def _line(row: dict) -> str:
    v = row["verdict"]
    colour = {"fake": "red", "real": "green", "no_face": "yellow", "error": "magenta"}[v]
    score = "  -   " if row["score"] is None else score_text(row["score"], row.get("threshold"))
    tail = f"  ({row['error']['kind']}: {row['error']['message']})" if row.get("error") else \
        f"  faces={row['faces']} frames={row['frames_with_faces']}/{row['frames']}"
    return f"[{colour}]{v:8s}[/{colour}] {score}  {printable(row['path'] + tail)}"


def _summary(t: Tally, wall: float, console: Console) -> None:
    tab = Table(title="dfscan summary", show_header=True)
    for col in ("videos", "fake", "real", "no face", "error", "frames", "faces", "wall s", "vid/s",
                "faces/s"):
        tab.add_column(col, justify="right", no_wrap=True)
    tab.add_row(str(t.videos), *(str(t.verdicts.get(k, 0)) for k in ("fake", "real", "no_face", "error")),
                str(t.frames), str(t.faces), f"{wall:.1f}", f"{t.videos / max(wall, 1e-9):.2f}",
                f"{t.faces / max(wall, 1e-9):.1f}")
    total = sum(t.stages.values()) or 1.0
    share = "  ".join(f"{k} {100 * v / total:.0f}%" for k, v in t.stages.items())
    if not console.is_terminal:  # in a pipe rich assumes 80 columns and clips the headers
        console = _Console(file=console.file, highlight=False, soft_wrap=True, width=max(console.width, 110))
    console.print(tab)
    if share:
        console.print(f"[dim]stage share: {share}[/dim]")


class GracefulStop:
    """SIGINT/SIGTERM handling around a scan (main thread only).

    Before :meth:`arm`, a signal raises :class:`Interrupted`. Armed with a local
    context, the first signal sets ``ctx.stop`` (finished rows are still
    written) and restores the previous handlers, so a second one acts at once.
    """

    def __init__(self):
        self.signum: int | None = None
        self._event: threading.Event | None = None
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def arm(self, ctx) -> None:
        self._event = getattr(ctx, "stop", None)  # Ray contexts have none: interrupt at once
        # ray.init replaces the SIGTERM handler with its own sys.exit(15) (exit 15, no
        # message): take the signals back while ours are still the ones to restore.
        for s in self._old:
            signal.signal(s, self._handle)
        if self.signum is not None:
            # A signal came during set-up and its Interrupted was swallowed where Python
            # ignores exceptions (raised inside a __del__ or a weakref callback): the scan
            # then ran to its end and exited 143 (seen once in the kill drill). Act on it now.
            self._old = {}
            if self._event is None:
                raise Interrupted(self.signum)
            self._event.set()

    def _handle(self, signum, _frame) -> None:
        self.signum = signum
        self._restore()
        if self._event is None:
            raise Interrupted(signum)
        self._event.set()

    def _restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()


def run_scan(args) -> int:
    with GracefulStop() as stop, OutputLocks() as locks:
        return _run(args, stop, locks)


def _run(args, stop: GracefulStop, locks: OutputLocks) -> int:
    cfg = config_from_args(args)
    interactive = sys.stdout.isatty()
    console = _Console(highlight=False, soft_wrap=not interactive)
    paths = _inputs(args, console)
    for what in cfg.unused():
        log.warning("%s", what)
    if not cfg.ray:
        check_device(cfg.device)
    server = None
    if cfg.metrics_port is not None:
        server, port = metrics.serve(cfg.metrics_port, cfg.metrics_host)
        console.print(f"[dim]metrics on http://{cfg.metrics_host}:{port}/metrics[/dim]")
    metrics.set_scan_state("running")
    pusher = metrics_push.start_for(cfg, console)
    pre: dict = {}
    ended = "failed"  # unless the scan reaches its end
    try:
        outs = order_outputs(cfg.outputs)
        locks.acquire(outs)  # held until the outputs are closed
        paths, resumed, kept = _to_scan(paths, cfg, console)
        t0 = time.perf_counter()
        pre = prestart(paths, cfg)  # decode the first videos while the model loads
        ctx = open_context(cfg, len(paths))  # local pipeline, or Ray actors with --ray
        if pre:
            ctx.prestarted = pre
        _announce(ctx, cfg, console, time.perf_counter() - t0)
        if resumed is not None:
            resumed.check_detector(ctx.detector.weights_hash, ctx.threshold)
            resumed.drop_retried()
        sinks = open_outputs(cfg.outputs, append=cfg.resume or cfg.retry_errors,
                             skip=resumed.skip() if resumed is not None else None)
        locks.acquire_files(outs)  # created or rewritten just now
        tally, t_scan = Tally(), time.perf_counter()
        stop.arm(ctx)
        try:
            _scan_all(paths, ctx, cfg, sinks, tally, console, cfg.progress and interactive)
        finally:
            sinks.close(unscanned=len(paths) - tally.videos)  # said in the HTML report
        ended = "interrupted" if stop.signum is not None else "failed" if sinks.failures else "complete"
    finally:
        metrics.set_scan_state(ended)
        close_all(pre)
        if server is not None:
            server.shutdown()  # stops serving; the socket listens until closed
            server.server_close()
        if pusher is not None:
            pusher.stop()  # the final values, also after an interrupt
    try:
        _summary(tally, time.perf_counter() - t_scan, console)
    except StdoutClosed:  # the reader left after the last row: the exit code is the scan's own
        pass
    return _exit_code(stop, tally, sinks, cfg, len(paths), kept)


def _announce(ctx, cfg, console: Console, elapsed_s: float) -> None:
    """The "ready" line (detector, weights, engine, workers) and a shortcut baseline's warning."""
    from engines.backends import resolve_engine_name  # loaded with the detector by now
    from engines.registry import detector_entry

    info = ctx.engine_info
    engine = resolve_engine_name(cfg.engine, cfg.device) + (" (auto)" if cfg.engine == "auto" else "")
    console.print(f"[dim]detector {cfg.detector} ({ctx.detector.weights_hash}) on {cfg.device}, "
                  f"engine {engine} {cfg.precision}, {ctx.workers} worker(s): ready in "
                  f"{info.get('ready_s') or elapsed_s:.1f}s[/dim]")
    if detector_entry(cfg.detector).shortcut:  # registered like detectors, for evaluations only
        console.print(f"[yellow]{cfg.detector} is a shortcut baseline, not a detector: its verdicts say "
                      "nothing about manipulation[/yellow]")


def _exit_code(stop: GracefulStop, tally, sinks, cfg, n_inputs: int, kept: Counter | None = None) -> int:
    """Interrupted (128 + signal), output failed, an input failed, fakes with --fail-on-fake, else 0.

    ``kept``: verdicts of the rows a ``--resume`` kept for inputs it skipped (they count as
    this run's: the code answers for every input named)."""
    kept = kept or Counter()
    from .cli import EXIT_FAKE, EXIT_INPUT_ERROR, EXIT_OK, EXIT_OUTPUT

    if stop.signum is not None:
        print(f"dfscan: interrupted by {signal.Signals(stop.signum).name}: {tally.videos} row(s) written, "
              f"{n_inputs - tally.videos} input(s) not scanned (rerun with --resume)", file=sys.stderr)
        return 128 + stop.signum
    for msg in sinks.failures:
        print(f"dfscan: error: {msg}", file=sys.stderr)
    if sinks.failures:
        return EXIT_OUTPUT
    if tally.verdicts["error"] or kept["error"]:
        return EXIT_INPUT_ERROR
    if cfg.fail_on_fake and (tally.verdicts["fake"] or kept["fake"]):
        return EXIT_FAKE
    return EXIT_OK


class _Current:
    """The bar's current file: the oldest input taken and not yet returned. Why: with several
    workers the pipeline takes 2 x workers inputs ahead, so the last one taken was a queued
    file, and at the end one long finished while an earlier video was still scanning."""

    def __init__(self, prog: Progress, task):
        self.prog, self.task, self.taken = prog, task, {}  # str(path) -> name, in the order taken

    def track(self, paths):
        for p in paths:
            self.taken[str(p)] = printable(p.name if len(p.name) <= 40 else "..." + p.name[-37:])
            self._show()
            yield p

    def done(self, row: dict) -> None:
        self.taken.pop(row["path"], None)  # rows name their input as given (local and Ray)
        self._show()

    def _show(self) -> None:
        self.prog.update(self.task, current=next(iter(self.taken.values()), ""))


def _scan_all(paths, ctx, cfg, sinks, tally: Tally, console: Console, show_progress: bool) -> None:
    cols = [TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[vps]:.2f} videos/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[current]}")]
    sampling, aggregation, face_search = sampling_of(cfg), aggregation_of(cfg), face_search_of(cfg)
    with Progress(*cols, console=console, transient=True, disable=not show_progress) as prog:
        task = prog.add_task("scan", total=len(paths), vps=0.0, current="")
        t0 = time.perf_counter()
        current = _Current(prog, task)
        source = current.track(paths) if show_progress else paths
        closed = None  # stdout went away: no more lines, the finished rows still written
        for row in scan_rows(source, ctx):
            row.setdefault("sampling", sampling)
            row.setdefault("aggregation", aggregation)
            row.setdefault("face_search", face_search)
            sinks.write(row)  # OutputError (primary failed) ends the scan here
            tally.add(row)
            prog.update(task, advance=1, vps=tally.videos / max(time.perf_counter() - t0, 1e-9))
            if show_progress:
                current.done(row)
            if closed is None:
                closed = _print_line(prog.console, row, ctx)
    if closed is not None:
        raise closed


def _print_line(console: Console, row: dict, ctx) -> StdoutClosed | None:
    """Print ``row``'s line; when stdout is gone, stop the scan as a signal does and return the
    error, raised once the finished videos' rows are written (raised here, it dropped them)."""
    try:
        console.print(_line(row))
    except StdoutClosed as e:
        if getattr(ctx, "stop", None) is None:  # Ray: no graceful stop, end at once as before
            raise
        ctx.stop.set()
        return e
    return None


__all__ = ["run_scan", "OPTION_KEYS", "OutputError", "Tally", "sampling_of", "aggregation_of", "face_search_of"]
