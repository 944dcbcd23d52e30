"""``dfscan scan``: inputs -> pipeline -> sinks, with progress and a summary."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import metrics
from .config import build_config
from .output import SinkSet, done_paths, open_sink
from .pipeline import build_context, scan_paths
from .sources import bundled_samples, expand_inputs
from .warmstart import close_all, prestart

OPTION_KEYS = ("frames", "fps", "detector", "weights", "device", "engine", "precision", "batch_size",
               "threshold", "max_faces", "min_face", "det_max_side", "frame_agg", "video_agg", "workers", "out",
               "resume", "metrics_port", "metrics_host", "fail_on_fake", "progress", "details")


def config_from_args(args):
    overrides = {k: getattr(args, k) for k in OPTION_KEYS if hasattr(args, k)}
    return build_config(getattr(args, "config", None), overrides)


def _inputs(args, cfg, console: Console) -> list[Path]:
    if args.paths:
        paths = expand_inputs(args.paths)
    else:
        paths = bundled_samples()
        console.print(f"[dim]no PATH given: scanning the {len(paths)} bundled sample clips[/dim]")
    if cfg.resume and cfg.out:
        done = done_paths(cfg.out)
        skipped = [p for p in paths if str(p) in done]
        paths = [p for p in paths if str(p) not in done]
        if skipped:
            console.print(f"[dim]--resume: {len(skipped)} input(s) already in {cfg.out}[/dim]")
    return paths


def _line(row: dict) -> str:
    v = row["verdict"]
    colour = {"fake": "red", "real": "green", "no_face": "yellow", "error": "magenta"}[v]
    score = "  -   " if row["score"] is None else f"{row['score']:.3f}"
    tail = f"  ({row['error']['kind']}: {row['error']['message']})" if row.get("error") else \
        f"  faces={row['faces']} frames={row['frames_with_faces']}/{row['frames']}"
    return f"[{colour}]{v:8s}[/{colour}] {score}  {row['path']}{tail}"


def _summary(rows: list[dict], wall: float, console: Console) -> None:
    counts = Counter(r["verdict"] for r in rows)
    faces = sum(r["faces"] for r in rows)
    frames = sum(r["frames"] for r in rows)
    t = Table(title="dfscan summary", show_header=True)
    for col in ("videos", "fake", "real", "no face", "error", "frames", "faces", "wall s", "vid/s",
                "faces/s"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_row(str(len(rows)), *(str(counts.get(k, 0)) for k in ("fake", "real", "no_face", "error")),
              str(frames), str(faces), f"{wall:.1f}", f"{len(rows) / max(wall, 1e-9):.2f}",
              f"{faces / max(wall, 1e-9):.1f}")
    stages = Counter()
    for r in rows:
        stages.update({k: v for k, v in (r.get("timings") or {}).items() if k != "total"})
    total = sum(stages.values()) or 1.0
    share = "  ".join(f"{k} {100 * v / total:.0f}%" for k, v in stages.items())
    console.print(t)
    if share:
        console.print(f"[dim]stage share: {share}[/dim]")


def run_scan(args) -> int:
    from .cli import EXIT_FAKE, EXIT_INPUT_ERROR, EXIT_OK

    cfg = config_from_args(args)
    console = Console(stderr=False, highlight=False)
    paths = _inputs(args, cfg, console)
    server = None
    if cfg.metrics_port is not None:
        server, port = metrics.serve(cfg.metrics_port, cfg.metrics_host)
        console.print(f"[dim]metrics on http://{cfg.metrics_host}:{port}/metrics[/dim]")
    t0 = time.perf_counter()
    pre = prestart(paths, cfg)  # decode the first videos while the model loads
    try:
        ctx = build_context(cfg)
    except BaseException:
        close_all(pre)
        raise
    if pre:
        ctx.prestarted = pre
    info = ctx.engine_info
    console.print(f"[dim]detector {cfg.detector} ({ctx.detector.weights_hash}) on {cfg.device}, "
                  f"engine {info.get('backend')} {cfg.precision}, {ctx.workers} worker(s): ready in "
                  f"{info.get('ready_s') or time.perf_counter() - t0:.1f}s[/dim]")
    sinks = SinkSet([open_sink(cfg.out, append=cfg.resume)] if cfg.out else [])
    rows: list[dict] = []
    t_scan = time.perf_counter()
    try:
        _scan_all(paths, ctx, sinks, rows, console, cfg.progress)
    finally:
        close_all(pre)
        sinks.close()
        if server is not None:
            server.shutdown()
    _summary(rows, time.perf_counter() - t_scan, console)
    if any(r["verdict"] == "error" for r in rows):
        return EXIT_INPUT_ERROR
    if cfg.fail_on_fake and any(r["verdict"] == "fake" for r in rows):
        return EXIT_FAKE
    return EXIT_OK


def _scan_all(paths, ctx, sinks, rows, console, show_progress: bool) -> None:
    cols = [TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[vps]:.2f} videos/s  {task.fields[fps]:.1f} faces/s"),
            TimeElapsedColumn()]
    with Progress(*cols, console=console, transient=True, disable=not show_progress) as prog:
        task = prog.add_task("scan", total=len(paths), vps=0.0, fps=0.0)
        t0, faces = time.perf_counter(), 0
        for row in scan_paths(paths, ctx=ctx):
            sinks.write(row)
            rows.append(row)
            faces += row["faces"]
            dt = max(time.perf_counter() - t0, 1e-9)
            prog.update(task, advance=1, vps=len(rows) / dt, fps=faces / dt)
            prog.console.print(_line(row))
