"""``dfscan bench`` and ``dfscan engines build|list|clear`` sub-commands.

Wire into the main parser with ``add_bench_parser(subparsers)`` and
``add_engines_parser(subparsers)``; each sub-parser sets ``func(args) -> int``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engines.errors import DfscanError

from .argtypes import int_in

DEFAULT_ENGINES = ["eager", "eager-cl", "compile", "onnxruntime"]
# = engines.backends.base.MAX_BATCH (and scan's --batch-size cap); not imported, as that
# module imports torch and building this parser should not.
MAX_BATCH = 4096


def _weights_map(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        name, sep, path = p.partition("=")
        if not sep:
            raise DfscanError(f"--weights expects NAME=PATH, got {p!r}")
        out[name] = path
    return out


def _default_detectors() -> list[str]:
    """Every shipped detector that runs without a weights file of the user's (ADM,
    probes and Lite2 need one: name them with --detectors and --weights); not the
    shortcut baselines, which are no detectors."""
    from engines.registry import detector_entry, list_detectors

    real = [n for n in list_detectors() if not n.startswith("test_") and not detector_entry(n).shortcut
            and not (detector_entry(n).needs_weights and not detector_entry(n).default_weights)]
    return real or ["test_tiny"]


def device_name(v: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N`` (torch raised a traceback for another
    name). Whether the GPU exists is checked when the command runs (``config.check_device``, as ``dfscan scan`` does):
    GPU plans are parsed on machines without one (bench/gpu/run.py --plan)."""
    if v != "cpu" and v != "cuda" and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise argparse.ArgumentTypeError(f"{v!r}: must be cpu, cuda or cuda:N")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--batch-sizes", type=int_in(1, MAX_BATCH), nargs="+", default=[1, 8, 32], metavar="N",
                   help="allowed batch sizes; other batches are padded up to the next one")
    p.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda or cuda:N")
    p.add_argument("--cache-dir", default=None, help="engine cache (default: $DFSCAN_CACHE_DIR or "
                                                      "$XDG_CACHE_HOME/dfscan/engines)")
    p.add_argument("--allow-parity-failure", action="store_true",
                   help="keep engines that disagree with eager fp32 (numbers are still reported)")
    p.add_argument("--threads", type=int_in(1), default=None, help="torch/onnxruntime intra-op threads")


def _set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


# -- bench --------------------------------------------------------------------


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="latency/throughput per detector x engine x batch size",
                              description="Benchmark inference engines (table, JSON and PNG plot), or with "
                                          "--pipeline the whole scan pipeline on videos.")
    p.add_argument("--detectors", nargs="+", default=None, metavar="NAME",
                   help="registered detectors (default: all non-test ones)")
    p.add_argument("--weights", action="append", metavar="NAME=PATH", help="weights file for a detector")
    p.add_argument("--engines", nargs="+", default=None, metavar="ENGINE",
                   help="engine names: eager eager-cl compile compile-cl compile-cg onnxruntime ort-trt tensorrt "
                        f"(default: {' '.join(DEFAULT_ENGINES)}; with --pipeline: auto, as dfscan scan)")
    _common(p)
    # None = not given: --pipeline refuses them (see _pipeline_ignores) instead of ignoring them.
    p.add_argument("--iters", type=int_in(1), default=None, help="timed calls per batch size (default 50)")
    p.add_argument("--warmup", type=int_in(0), default=None, help="untimed calls per batch size (default 5)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for JSON and PNG")
    p.add_argument("--name", default=None, help="file stem (default engines_<device type>)")
    p.add_argument("--pipeline", nargs="+", metavar="VIDEO", default=None,
                   help="end-to-end mode: benchmark the scan pipeline on these videos")
    p.set_defaults(func=bench_command)
    return p


def bench_json(args) -> Path:
    """The JSON file bench writes: ``--out/--name.json``, by default named after the mode and device."""
    stem = args.name or f"{'pipeline' if args.pipeline else 'engines'}_{args.device.split(':')[0]}"
    return args.out / f"{stem}.json"


def _writer(args, path: Path):
    """``result -> None`` writing the JSON (engines.benchmark.write_json, one writer for both
    modes) and recording on ``args`` that it did, for :func:`bench_interrupted_note`."""
    from engines import benchmark as B

    def write(result: dict) -> None:
        B.write_json(result, path)
        args.bench_wrote = {"path": path, "complete": bool(result.get("complete"))}

    return write


def bench_interrupted_note(args) -> str:
    """What a bench stopped by Ctrl-C leaves: the file is named as holding this run's results
    only once it does (before the first write it said so of an earlier run's file)."""
    from .terminal import terminal_safe

    wrote = getattr(args, "bench_wrote", None)
    if wrote:
        return f"{terminal_safe(str(wrote['path']))} holds what was measured so far" + (
            "" if wrote["complete"] else ", marked complete: false")
    path = bench_json(args)
    return "nothing written" + (f" ({terminal_safe(str(path))} from before is left as it was)"
                                if path.exists() else "")


def bench_command(args) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    _set_threads(args)
    stem = bench_json(args).stem
    try:
        from .config import check_device  # ConfigError (one line, exit 2) without the GPU

        check_device(args.device)
        from .output import writable

        # An --out under a file was an OSError traceback once the engines were built (or the
        # pipeline timed): checked before any of it.
        writable(args.out / f"{stem}.json")
        if args.pipeline:
            _pipeline_ignores(args)
            return _bench_pipeline(args, stem)
        from engines import benchmark as B

        engines = args.engines or DEFAULT_ENGINES
        path = args.out / f"{stem}.json"
        write = _writer(args, path)
        # Written as it goes: a bench killed by a time limit keeps the sizes it timed.
        res = B.bench_engines(args.detectors or _default_detectors(), engines, args.batch_sizes,
                              args.precision, args.device, 50 if args.iters is None else args.iters,
                              5 if args.warmup is None else args.warmup,
                              weights=_weights_map(args.weights), cache_dir=args.cache_dir,
                              allow_parity_failure=args.allow_parity_failure, progress=console.print,
                              on_update=write)
    except DfscanError as e:
        print(f"dfscan: error: {e}", file=sys.stderr)  # one line, as every command's
        return 2
    B.print_table(res)
    write(res)
    png = B.plot(res, args.out / f"{stem}.png")
    console.print(f"wrote {path}" + (f" and {png}" if png else " (no plot: pip install matplotlib)"))
    return 0 if res["results"] else 1


def _pipeline_ignores(args) -> None:
    """--pipeline times whole scans as `dfscan scan` runs them (threads per worker, one
    warm-up video, engines that pass parity): these engine-timing options were ignored."""
    given = [flag for flag, v in (("--iters", args.iters), ("--warmup", args.warmup), ("--threads", args.threads),
                                  ("--allow-parity-failure", args.allow_parity_failure or None)) if v is not None]
    if given:
        raise DfscanError(f"--pipeline scans as dfscan scan does and would ignore {', '.join(given)}; "
                          "leave them out (they time engines without --pipeline)")


def _bench_pipeline(args, stem: str) -> int:
    # Lazy: the pipeline (decode, face detection) is heavy and only needed here.
    from scanner.pipeline_bench import benchmark_pipeline

    cfg = {
        "detectors": args.detectors, "weights": _weights_map(args.weights), "engines": args.engines,
        "precision": args.precision, "batch_sizes": args.batch_sizes, "device": args.device,
        "cache_dir": args.cache_dir,
    }
    path = args.out / f"{stem}.json"
    write = _writer(args, path)  # after each detector x engine, as engine mode (it wrote only at the end)
    res = benchmark_pipeline(args.pipeline, cfg, on_update=write)
    write(res)
    _pipeline_table(res)
    print(f"wrote {path}", file=sys.stderr)
    # Exit 1 (as bench without results) when no video could be scanned: the numbers are empty.
    return 1 if not res["results"] or any(r["errors"] == r["videos"] for r in res["results"]) else 0


def _pipeline_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"dfscan pipeline benchmark ({len(res['videos'])} videos)")
    for col in ("detector", "engine", "videos", "errors", "videos/s", "frames/s", "faces/s"):
        t.add_column(col, justify="left" if col in ("detector", "engine") else "right", no_wrap=True)
    for r in res["results"]:
        t.add_row(r["detector"], r["engine"], str(r["videos"]), str(r["errors"]), f"{r['videos_per_s']:.2f}",
                  f"{r['frames_per_s']:.1f}", f"{r['faces_per_s']:.1f}")
    console = Console()
    console.print(t)
    for r in res["results"]:
        share = "  ".join(f"{k} {100 * v:.0f}%" for k, v in r["stage_share"].items())
        console.print(f"{r['detector']} / {r['engine']}: ready in {r['ready_s']:.1f} s; {r['workers']} worker(s) "
                      f"x {r['threads']} thread(s), as dfscan scan; stage share: {share}")
    for s in res["skipped"]:
        console.print(f"[yellow]skipped[/] {s['detector']} / {s['engine']}: {s['error']}")


# -- engines ------------------------------------------------------------------


def add_engines_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("engines", help="build, list or clear cached inference engines")
    sub = p.add_subparsers(dest="engines_cmd", required=True)
    b = sub.add_parser("build", help="build (or load from cache) an engine and check its parity")
    b.add_argument("--detector", required=True)
    b.add_argument("--weights", default=None, help="weights file (default: the packaged one)")
    b.add_argument("--engine", default="onnxruntime", help="engine name (see `dfscan bench --help`)")
    _common(b)
    b.set_defaults(func=engines_build)
    ls = sub.add_parser("list", help="list cache entries and which backends can run here")
    ls.add_argument("--cache-dir", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=engines_list)
    c = sub.add_parser("clear", help="delete cache entries")
    c.add_argument("keys", nargs="*", help="key prefixes to delete (see `engines list`)")
    c.add_argument("--all", action="store_true", help="delete every entry")
    c.add_argument("--cache-dir", default=None)
    c.set_defaults(func=engines_clear)
    return p


def engines_build(args) -> int:
    from engines.backends import build_engine, engine_config
    from engines.registry import create_detector

    _set_threads(args)
    try:
        from .config import check_device

        check_device(args.device)
        det = create_detector(args.detector, weights=args.weights, device=args.device)
        cfg = engine_config(args.engine, precision=args.precision, batch_sizes=tuple(args.batch_sizes),
                            device=args.device, cache_dir=args.cache_dir,
                            allow_parity_failure=args.allow_parity_failure)
        engine = build_engine(det, cfg)
    except DfscanError as e:
        print(f"dfscan: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(engine.describe(), indent=1))
    return 0


def backend_availability() -> dict[str, str]:
    """Backend kind -> "ok" or why it cannot run on this machine."""
    import torch

    out = {"eager": "ok", "compile": "ok"}
    try:
        import onnxruntime as ort

        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
        out["onnxruntime"] = f"ok ({'cpu+cuda' if gpu else 'cpu only'})"
    except Exception as e:
        out["onnxruntime"] = f"unavailable: {type(e).__name__} (pip install onnxruntime)"
    from engines.backends.tensorrt import tensorrt_available

    ok, why = tensorrt_available()
    out["tensorrt"] = "ok" if ok else why
    out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v, fmt: str) -> str:
    """``v`` formatted when it is a number, else as text: a hand-edited or foreign meta.json
    (``"size_bytes": "big"``, ``"parity": "ok"``) made `engines list` a ValueError traceback."""
    return format(v, fmt) if _is_number(v) else str(v)


def engines_list(args) -> int:
    from engines.cache import EngineCache

    cache = EngineCache(args.cache_dir)
    rows = cache.list()
    if args.json:
        print(json.dumps({"cache_dir": str(cache.root), "entries": rows,
                          "backends": backend_availability()}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"engine cache: {cache.root}")
    for col in ("key", "detector", "backend", "precision", "batch sizes", "arch", "MB", "parity cos", "created"):
        t.add_column(col)
    for r in rows:
        par = r.get("parity") if isinstance(r.get("parity"), dict) else {}
        size = r.get("size_bytes")
        t.add_row(r["key"][:12], str(r.get("detector")), str(r.get("backend")), str(r.get("precision")),
                  str(r.get("batch_sizes")), str(r.get("arch")),
                  _number(size / 2**20 if _is_number(size) else size or 0, ".1f"),
                  _number(par.get("cosine", "-"), ".5f"), str(r.get("created") or r.get("error")))
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    console.print(t)
    for kind, status in backend_availability().items():
        console.print(f"{kind:12s} {status}")
    return 0


def engines_clear(args) -> int:
    from engines.cache import EngineCache

    if not args.keys and not args.all:
        print("dfscan: error: give key prefixes or --all", file=sys.stderr)
        return 2
    if not all(k.strip() for k in args.keys):
        # Every key starts with "": `engines clear "$KEY"` with KEY unset deleted the whole cache.
        print("dfscan: error: an empty key prefix would match every entry; use --all for that", file=sys.stderr)
        return 2
    cache = EngineCache(args.cache_dir)
    n = cache.clear(None if args.all else args.keys)
    print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {cache.root}")
    return 0
