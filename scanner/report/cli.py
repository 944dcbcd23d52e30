"""``dfscan report RESULTS.jsonl --out report.html``."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from ..argtypes import int_in
from ..cli_engines import device_name


def add_report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="render scan results (JSONL) as a self-contained HTML report",
        description="Render a JSONL results file as one self-contained HTML file: header, sortable "
                    "and filterable table, per-video score timeline, face thumbnails of the most "
                    "suspicious frames (re-decoded from the videos), ADM artifact boxes and, with "
                    "--explain gradcam, Grad-CAM heatmaps. No network access, from the file or the page.")
    p.add_argument("results", help="JSONL results written by dfscan scan")
    p.add_argument("--out", "-o", help="HTML file to write (default: RESULTS with .html)")
    p.add_argument("--video-root", help="where the videos are now: NEW (the longest trailing part of "
                   "each recorded path found under NEW) or OLD=NEW (leading folders OLD replaced)")
    p.add_argument("--top-k", type=int_in(0), default=4, help="face thumbnails per video (default 4)")
    p.add_argument("--open", dest="open_sections", type=int_in(0), default=50,
                   help="sections shown expanded; later ones start collapsed (default 50)")
    p.add_argument("--no-thumbnails", dest="thumbnails", action="store_false",
                   help="do not open the videos (timelines and tables only)")
    p.add_argument("--no-verify", dest="verify_hash", action="store_false",
                   help="skip the SHA-256 check of each video against its row (size is still checked)")
    p.add_argument("--explain", choices=["gradcam"], help="add Grad-CAM heatmaps of the top-k faces")
    p.add_argument("--weights", help="detector weights for --explain (default: the packaged ones; "
                   "must hash like the scan's)")
    p.add_argument("--device", default="cpu", type=device_name, help="device for --explain (cpu, cuda, cuda:N)")
    p.set_defaults(func=run_report)
    return p


def run_report(args) -> int:
    from ..cli import EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
    from ..terminal import terminal_safe
    from .render import ReportOptions

    src = Path(args.results)
    if not src.is_file():
        print(f"dfscan report: results file not found: {terminal_safe(str(src))}", file=sys.stderr)
        return EXIT_USAGE
    if args.out and args.out.endswith(("/", os.sep)):  # Path() drops it: `--out reports/` wrote a file "reports"
        print(f"dfscan report: cannot write {terminal_safe(args.out)}: names a directory, and a file name "
              "is needed here (e.g. --out reports/report.html)", file=sys.stderr)
        return EXIT_OUTPUT
    if args.explain:  # without the GPU Grad-CAM was skipped inside the page and the report exited 0
        from ..config import check_device  # ConfigError: one line, exit 2, as scan/bench/engines build

        check_device(args.device)
    out = Path(args.out) if args.out else src.with_suffix(".html")
    if out.resolve() == src.resolve():
        print("dfscan report: --out would overwrite the results file", file=sys.stderr)
        return EXIT_USAGE
    opts = ReportOptions(top_k=args.top_k, open_sections=args.open_sections, video_root=args.video_root,
                         verify_hash=args.verify_hash, thumbnails=args.thumbnails and args.top_k > 0,
                         explain=args.explain, weights=args.weights, device=args.device)
    try:
        with _sigterm_interrupts():
            stats = _render(src, out, opts, _notes(opts))
    except OSError as e:  # --out a folder, unwritable, disk full: one line, not a traceback
        print(f"dfscan report: cannot write {terminal_safe(str(out))}: {e.strerror or e}"
              + (f" ({terminal_safe(str(e.filename))})" if e.filename and str(e.filename) != str(out) else ""), file=sys.stderr)
        return EXIT_OUTPUT
    print(f"{terminal_safe(str(out))}: {stats['videos']} videos, {stats['bytes'] / 1e6:.2f} MB"
          + (f" ({stats['bad_lines']} unreadable lines skipped)" if stats["bad_lines"] else ""))
    return EXIT_OK


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt (exit 143, see scanner.cli) while the report is
    written, so the half-written ``.NAME.PID.tmp`` beside it is removed, not left behind."""
    def interrupt(signum, frame):
        from ..run import Interrupted  # the scan's (exit code from its signum)

        raise Interrupted(signum)

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _notes(opts) -> dict:
    """Header notes for the flags a reader of the page cannot otherwise see: with
    ``--no-verify`` the thumbnails came from files checked by size only, and the page
    read as if each had matched its row's SHA-256."""
    if opts.verify_hash or not opts.thumbnails:
        return {}
    return {"notes": [("--no-verify: each video was checked against its row by size only, not by "
                       "SHA-256: a thumbnail may show a file changed since the scan")]}


def _render(src: Path, out: Path, opts, meta: dict) -> dict:
    """:func:`write_report`, with a progress bar on a terminal."""
    from .render import write_report

    if not sys.stderr.isatty():
        return write_report(src, out, opts, meta)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task("rendering", total=None)
        return write_report(src, out, opts, meta, progress=lambda n, total: prog.update(task, completed=n, total=total))
