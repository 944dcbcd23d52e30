"""``dfscan`` command line.

Exit codes of ``dfscan scan`` (the first that applies):
    130 / 143  interrupted by SIGINT / SIGTERM (128 + signal number): every finished
        row is written, the outputs are closed, ``--resume`` continues
    141  standard output was closed (a pipe into ``head``): stopped the same way
    4  an output could not be written: the primary output (first .jsonl/.csv) stops
       the scan at once; a secondary one (e.g. .html) is disabled and reported
    2  bad usage or configuration, nothing scanned: unknown option or key, bad value,
       no video among the inputs, a URL among them (scan reads local files; live streams
       are dfscan watch's), --device cuda without a GPU, --metrics-port busy,
       --resume into a file written with another detector, weights or sampling
    1  at least one input produced an ``error`` row
    3  ``--fail-on-fake`` and at least one video was judged fake
    0  every input was scanned (whatever the verdicts)
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading

from engines.errors import DfscanError

from . import __version__
from .terminal import SafeFormatter, terminal_safe

EXIT_OK, EXIT_INPUT_ERROR, EXIT_USAGE, EXIT_FAKE, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a writer killed by it

# Sub-commands defined in other modules: name -> (module, parser adder, one-line help).
# Only the module of the command being run is imported; every other command gets a
# stub with its help line, so `dfscan --help` and `dfscan scan` import none of them
# (tests/test_startup.py checks the stub help matches the module's). A module that is
# missing or fails to import only hides its commands.
EXTRA_COMMANDS = {
    "bench": ("scanner.cli_engines", "add_bench_parser", "latency/throughput per detector x engine x batch size"),
    "engines": ("scanner.cli_engines", "add_engines_parser", "build, list or clear cached inference engines"),
    "probe": ("scanner.research.commands", "add_probe_parser", "linear probes on frozen backbones"),
    "eval": ("scanner.research.commands", "add_eval_parser",
             "ACC/AUC/EER/HTER/TPR/TNR of a detector on labelled videos"),
    "separability": ("scanner.research.commands", "add_separability_parser",
                     "PCA-2D + K-means separability of a backbone or detector"),
    "synth": ("scanner.research.commands", "add_synth_parser", "self-blended fake faces from real images/videos"),
    "watch": ("scanner.live.cli", "add_watch_parser", "watch live streams/webcams in a terminal table"),
    "serve": ("scanner.live.cli", "add_serve_parser", "run the live scanning service with an HTTP API"),
    "report": ("scanner.report.cli", "add_report_parser",
               "render scan results (JSONL) as a self-contained HTML report"),
    "train": ("scanner.research.cli", "add_train_parser",
              "train a detector on real faces + self-blended/swapped fakes"),
}


# What a command interrupted by Ctrl-C leaves behind, said after "dfscan: interrupted"
# ("rows already written are kept" was said for every command, though only scan writes
# rows as it goes). Commands not named (detectors, engines, watch, serve) say nothing more.
INTERRUPTED_KEEPS = {
    "scan": "rows already written are kept",
    "eval": "nothing written (the report and its plot are written once every video is scored)",
    "probe": "nothing written to --out; embeddings already computed stay in --cache for the next run",
    "separability": "nothing written to --out; embeddings already computed stay in --cache for the next run",
    "synth": "chips already written are kept, each finished pair listed in --out's manifest.csv",
    "train": "finished epochs are kept in --out's last.pt (the same command resumes from it); "
             "a face cache left unfinished is built again",
    "report": "the report was not written (a file of that name from before is left as it was)",
}


def interrupted_note(args) -> str:
    """The line printed when ``args.command`` is interrupted (see :data:`INTERRUPTED_KEEPS`)."""
    keeps = INTERRUPTED_KEEPS.get(args.command)
    if args.command == "bench":  # the bench module is loaded by now: it was running
        from .cli_engines import bench_interrupted_note

        keeps = bench_interrupted_note(args)  # names the file only once this run wrote it
    return "dfscan: interrupted" + (f"; {keeps}" if keeps else "")


def add_scan_options(p: argparse.ArgumentParser) -> None:
    """Scan options shared by ``scan`` and commands that run scans (defaults come from ScanConfig)."""
    from .argtypes import seconds_or_none

    S = argparse.SUPPRESS
    p.add_argument("--config", help="YAML file with any of the options below (flags win)")
    p.add_argument("--frames", type=int, default=S, help="evenly spaced frames per video (default 32)")
    p.add_argument("--fps", type=float, default=S, help="sample F frames per second instead of --frames")
    p.add_argument("--detector", default=S, help="detector name (dfscan detectors lists them)")
    p.add_argument("--weights", default=S, help="weights file/dir overriding the detector's default")
    p.add_argument("--device", default=S, help="cpu, cuda or cuda:N")
    p.add_argument("--engine", default=S, help="eager, compile, onnxruntime, tensorrt, ...")
    p.add_argument("--precision", default=S, choices=["fp32", "fp16", "bf16"])
    p.add_argument("--batch-size", type=int, default=S, help="face crops per inference batch")
    p.add_argument("--threshold", type=float, default=S, help="P(fake) threshold (default: detector's)")
    p.add_argument("--max-faces", type=int, default=S, help="faces per frame, largest first")
    p.add_argument("--min-face", type=int, default=S, help="smallest face side in pixels")
    p.add_argument("--det-max-side", type=int, default=S, help="longest side seen by MTCNN")
    p.add_argument("--frame-agg", default=S, choices=["max", "mean", "largest"])
    p.add_argument("--video-agg", default=S, choices=["mean", "median", "topk", "max"])
    p.add_argument("--topk", type=int, default=S, help="K of --video-agg topk: mean of the K highest frame scores "
                   "(default 5)")
    p.add_argument("--aggregate", default=S, choices=["frames", "tracks"],
                   help="video score from frames (frame/video agg) or from face tracks (max over tracks)")
    p.add_argument("--workers", type=int, default=S, help="videos scanned in parallel (default: one per usable core on CPU)")
    p.add_argument("--video-timeout", dest="video_timeout_s", type=seconds_or_none, default=S, metavar="SECONDS",
                   help="a video not finished this long after its scan began is an error row (kind timeout) "
                        "and the scan goes on (default 3600; 0: no limit)")


def _add_scan_parser(sub) -> None:
    p = sub.add_parser("scan", help="scan video files/folders/globs/lists; one row per input",
                       description="Scan videos for deepfaked faces. With no PATH, scans the bundled sample clips.")
    p.add_argument("paths", nargs="*", help="files, folders (recursive), globs, or .txt lists of paths")
    add_scan_options(p)
    S = argparse.SUPPRESS
    p.add_argument("--out", action="append", default=S,
                   help="output file: .jsonl, .csv or .html; repeat to write several (the first "
                        ".jsonl/.csv is primary)")
    p.add_argument("--resume", action="store_true", default=S,
                   help="append to --out, skipping inputs already in it (same detector/weights/sampling)")
    p.add_argument("--retry-errors", action="store_true", default=S,
                   help="with --resume: scan inputs whose row is an error again (implies --resume)")
    p.add_argument("--metrics-port", type=int, default=S, help="serve Prometheus /metrics on this port")
    p.add_argument("--metrics-host", default=S, help="bind address for /metrics (default 127.0.0.1)")
    p.add_argument("--metrics-push", default=S, metavar="URL",
                   help="push metrics to this Prometheus Pushgateway periodically and at the end")
    p.add_argument("--metrics-instance", dest="metrics_push_instance", default=S, metavar="NAME",
                   help="instance label of the pushed group (default: the host name)")
    p.add_argument("--fail-on-fake", action="store_true", default=S, help="exit 3 if any video is fake")
    p.add_argument("--ray", default=S, metavar="ADDRESS",
                   help="scan on a Ray cluster: auto (RAY_ADDRESS), local, or host:port (needs Ray: pip install 'ray>=2.9')")
    p.add_argument("--ray-cpus-per-actor", type=float, default=S, help="CPUs per Ray scan actor (default 1)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=S, help="GPUs per Ray scan actor (default 0)")
    p.add_argument("--ray-actors", type=int, default=S, help="Ray scan actors (default: cluster CPUs / CPUs per actor)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S)
    p.add_argument("--no-details", dest="details", action="store_false", default=S,
                   help="omit per-frame details from rows")
    p.set_defaults(func=_run_scan)


def _run_scan(args) -> int:
    from .run import run_scan

    return run_scan(args)


def _list_detectors(args) -> int:
    from engines.registry import detector_entry, list_detectors

    for name in list_detectors(args.pattern):
        e = detector_entry(name)
        note = "needs --weights" if e.needs_weights else ("packaged weights" if e.default_weights else "")
        print(f"{name:24s} {note:16s} {e.description}")
    return EXIT_OK


def _add_command(sub, name: str, full: bool) -> None:
    module, adder, help_ = EXTRA_COMMANDS[name]
    if full:
        try:
            getattr(importlib.import_module(module), adder)(sub)
            return
        except ImportError as e:
            logging.getLogger("dfscan").debug("command %s unavailable: %s", name, e)
            return
    sub.add_parser(name, help=help_, add_help=False)  # stub: only its help line is ever shown


def selected_command(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (first non-option word), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The ``dfscan`` parser. ``command`` names the one sub-command whose module is
    imported for its full parser (``"*"``: all of them, ``None``: none)."""
    from .argtypes import Parser  # one-line usage errors, the sub-commands' too

    parser = Parser(prog="dfscan", description="High-throughput deepfake video scanner.")
    parser.add_argument("--version", action="version", version=f"dfscan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_scan_parser(sub)
    d = sub.add_parser("detectors", help="list registered detectors")
    d.add_argument("pattern", nargs="?", help="glob filter, e.g. 'meso*'")
    d.set_defaults(func=_list_detectors)
    for name in EXTRA_COMMANDS:
        _add_command(sub, name, command in ("*", name))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(selected_command(argv))
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()  # stderr; file names in messages are made terminal-safe
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .allocator import keep_freed_memory

    keep_freed_memory()  # before torch allocates anything (see scanner/allocator.py)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:  # SIGTERM arrives as one too while a scan sets up
        print(interrupted_note(args), file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    except DfscanError as e:
        print(f"dfscan: error: {terminal_safe(str(e))}", file=sys.stderr)  # it may quote a file name
        return getattr(e, "exit_code", EXIT_USAGE)
    except BrokenPipeError:  # e.g. `dfscan detectors | head`: the reader left (scan has its own)
        _stdout_gone()
        print(f"dfscan: {args.command}: standard output was closed (broken pipe)", file=sys.stderr)
        return EXIT_STDOUT_CLOSED


def _stdout_gone() -> None:
    """Point stdout at /dev/null: its buffered rest would raise again when flushed at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def entry() -> None:
    """Console-script entry: :func:`main`, then exit without tearing the interpreter down.

    When a command returns, its outputs are written and closed; what is left is the
    interpreter freeing torch, ONNX Runtime and their thread pools object by object,
    0.5-0.9 s after a scan on a small CPU machine. Exit handlers still run; the fast exit
    is skipped while any other non-daemon thread runs or Ray was used (its shutdown
    hook stops the local cluster)."""
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others or "ray" in sys.modules:
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe or stream: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
