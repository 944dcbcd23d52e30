"""``dfscan`` command line.

Exit codes of ``dfscan scan``:
    0  every input was scanned (whatever the verdicts)
    1  at least one input produced an ``error`` row
    2  bad usage or configuration (nothing scanned)
    3  ``--fail-on-fake`` and at least one video was judged fake (no input errors)
    130 interrupted (rows already written are kept)
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engines.errors import DfscanError

from . import __version__

EXIT_OK, EXIT_INPUT_ERROR, EXIT_USAGE, EXIT_FAKE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Optional command groups: (module, parser-adding functions). A module that is
# missing or fails to import only hides its commands.
EXTRA_COMMANDS = [
    ("scanner.cli_engines", ("add_bench_parser", "add_engines_parser")),
    ("scanner.cli_research", ("add_probe_parser", "add_eval_parser",
                              "add_separability_parser", "add_synth_parser")),
    ("scanner.live.cli", ("add_watch_parser", "add_serve_parser")),
]


def add_scan_options(p: argparse.ArgumentParser) -> None:
    """Scan options shared by ``scan`` and commands that run scans (defaults come from ScanConfig)."""
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
    p.add_argument("--workers", type=int, default=S, help="videos scanned in parallel (default: one per core on CPU)")


def _add_scan_parser(sub) -> None:
    p = sub.add_parser("scan", help="scan video files/folders/globs/lists; one row per input",
                       description="Scan videos for deepfaked faces. With no PATH, scans the bundled sample clips.")
    p.add_argument("paths", nargs="*", help="files, folders (recursive), globs, or .txt lists of paths")
    add_scan_options(p)
    S = argparse.SUPPRESS
    p.add_argument("--out", default=S, help="output file: .jsonl (default format), .csv or .html")
    p.add_argument("--resume", action="store_true", default=S, help="skip inputs already in --out")
    p.add_argument("--metrics-port", type=int, default=S, help="serve Prometheus /metrics on this port")
    p.add_argument("--metrics-host", default=S, help="bind address for /metrics (default 127.0.0.1)")
    p.add_argument("--fail-on-fake", action="store_true", default=S, help="exit 3 if any video is fake")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfscan", description="High-throughput deepfake video scanner.")
    parser.add_argument("--version", action="version", version=f"dfscan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_scan_parser(sub)
    d = sub.add_parser("detectors", help="list registered detectors")
    d.add_argument("pattern", nargs="?", help="glob filter, e.g. 'meso*'")
    d.set_defaults(func=_list_detectors)
    for module, adders in EXTRA_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            logging.getLogger("dfscan").debug("commands of %s unavailable: %s", module, e)
            continue
        for name in adders:
            if hasattr(mod, name):
                getattr(mod, name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; rows already written are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DfscanError as e:
        print(f"dfscan: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
