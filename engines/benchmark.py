"""Latency / throughput benchmark of detectors x engines x batch sizes.

Per detector: build every engine (recording build time and parity) and warm it
up; then, for every batch size, time ``iters`` calls of each engine on a batch
of crops already on the device, the engines' calls interleaved round-robin so
that load changes on a shared machine hit all engines alike. GPU timings use
CUDA events bracketing each call and one synchronise at the end; CPU timings
use ``time.perf_counter``. Peak memory is
``torch.cuda.max_memory_allocated`` on GPU (torch allocations only: ONNX
Runtime's own arena is not visible there) and the process's peak RSS on CPU
(``VmHWM``, reset per measurement through ``/proc/self/clear_refs`` where the
kernel allows it, else the never-reset ``ru_maxrss``).
"""
from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .detector import Detector
from .errors import DfscanError, EngineUnavailable

# -- machine ----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    """CPU/GPU model, cores, library versions: enough to compare result files."""
    info = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": device,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    for mod in ("onnxruntime", "onnx", "torch_tensorrt", "tensorrt"):
        try:
            info["versions"][mod] = __import__(mod).__version__
        except Exception:  # optional; torch_tensorrt raises plain Exception without its libs
            pass
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        dev = torch.device(device)
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["gpu_capability"] = "sm_%d%d" % torch.cuda.get_device_capability(dev)
        info["cuda"] = torch.version.cuda
    return info


# -- memory -----------------------------------------------------------------


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# -- timing -----------------------------------------------------------------


def time_interleaved(fns: dict[str, Callable[[], object]], iters: int, warmup: int,
                     cuda: torch.device | None = None) -> dict[str, list[float]]:
    """Milliseconds per call of each ``fns[name]``, calls interleaved round-robin.

    Interleaving (A B C A B C ...) spreads any change in machine load evenly
    over the engines being compared, instead of penalising whichever ran
    during a busy minute. GPU (``cuda``: the engines' CUDA device): CUDA events
    around each call, one synchronise at the end; CPU: ``perf_counter``.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    if cuda is not None:
        with torch.cuda.device(cuda):  # events and synchronise act on the current device (cuda:N)
            return _time_cuda(fns, names, iters)
    out = {n: [] for n in names}
    for _ in range(iters):
        for n in names:
            t0 = time.perf_counter()
            fns[n]()
            out[n].append((time.perf_counter() - t0) * 1e3)
    return out


def _time_cuda(fns: dict, names: list, iters: int) -> dict[str, list[float]]:
    torch.cuda.synchronize()
    ev = {n: [] for n in names}
    for _ in range(iters):
        for n in names:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fns[n]()
            e.record()
            ev[n].append((s, e))
    torch.cuda.synchronize()
    return {n: [s.elapsed_time(e) for s, e in ev[n]] for n in names}


def summarize(ms: Sequence[float], batch: int) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "latency_ms": {"p50": float(p50), "p95": float(p95), "p99": float(p99),
                       "mean": float(a.mean()), "min": float(a.min())},
        "faces_per_s": float(batch * 1e3 / p50),
        "iters": int(a.size),
    }


def peak_memory(engine, x: torch.Tensor, calls: int = 2) -> tuple[float, str]:
    """Peak memory (MiB, kind) over ``calls`` runs of ``engine`` on ``x``, measured alone.

    CUDA: the peak above what was allocated before the calls (other engines' weights
    and graph pools stay allocated meanwhile and are not this engine's run)."""
    with torch.no_grad():
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
            torch.cuda.reset_peak_memory_stats(engine.device)
            base = torch.cuda.memory_allocated(engine.device)
            for _ in range(calls):
                engine(x)
            torch.cuda.synchronize(engine.device)
            peak = torch.cuda.max_memory_allocated(engine.device) - base
            return peak / 2**20, "torch.cuda.max_memory_allocated - allocated before the calls"
        exact = _reset_rss_peak()
        for _ in range(calls):
            engine(x)
        return _rss_peak_mb(), "process VmHWM" if exact else "process ru_maxrss (not reset)"


# -- driver -----------------------------------------------------------------


def load_detectors(detectors: Iterable, device: str = "cpu", weights: dict | None = None) -> list[Detector]:
    """Every detector (a name, or a :class:`Detector` as is) created up front through
    ``create_detector``: an unknown name, a detector needing --weights without them or a
    weights file that does not load is an error before any result is written or engine
    built. Created one at a time, a later one failed after the first's results had
    replaced an earlier run's file (``--detectors test_tiny probe``)."""
    from .registry import create_detector

    detectors = list(detectors)
    names = [d.name if isinstance(d, Detector) else d for d in detectors]
    # A --weights NAME that names no detector benchmarked (a typo) was ignored: the run timed
    # and parity-checked the packaged weights as if they were the file given.
    unused = sorted(set(weights or {}) - set(names))
    if unused:
        raise DfscanError(f"--weights names {', '.join(unused)}, not among the detectors benchmarked "
                          f"({', '.join(names)})")
    return [d if isinstance(d, Detector) else create_detector(d, weights=(weights or {}).get(d), device=device)
            for d in detectors]


def engine_configs(names, batch_sizes, precision, device, opts) -> dict:
    """``EngineConfig`` of every engine name, made up front: an unknown name (a typo,
    ``auto``) was found only once the first detector's other engines were built, after
    the first write had replaced an earlier run's file with an empty one."""
    from .backends import engine_config

    return {name: engine_config(name, precision=precision, batch_sizes=tuple(batch_sizes), device=device, **opts)
            for name in names}


def _build_all(det: Detector, cfgs: dict) -> tuple[dict, list]:
    """Build + warm every engine; unavailable/failed ones go to the skip list."""
    from .backends import build_engine

    engines, skipped = {}, []
    for name, cfg in cfgs.items():
        try:
            engine = build_engine(det, cfg)
            engine.warmup()
            engines[name] = engine  # only an engine that built and warmed up is timed
        except EngineUnavailable as e:
            skipped.append({"detector": det.name, "engine": name, "status": "unavailable", "error": str(e)})
        except DfscanError as e:
            skipped.append({"detector": det.name, "engine": name, "status": "failed", "error": str(e)})
        except Exception as e:  # noqa: BLE001 - a runtime error (CUDA OOM, graph capture) fails one engine
            skipped.append({"detector": det.name, "engine": name, "status": "failed",
                            "error": f"{type(e).__name__}: {e}"})
    return engines, skipped


def _bench_detector(det: Detector, engines: dict, batch_sizes, precision, iters, warmup) -> Iterator[list[dict]]:
    """Rows of every engine, one list per batch size as soon as that size is timed."""
    cuda = next((e.device for e in engines.values() if e.device.type == "cuda"), None)
    for b in batch_sizes:
        rows = []
        xs = {n: e.spec.example_input(b, device=e.device) for n, e in engines.items()}
        mem = {n: peak_memory(e, xs[n]) for n, e in engines.items()}
        fns = {n: (lambda e=e, x=xs[n]: e(x)) for n, e in engines.items()}
        with torch.no_grad():
            times = time_interleaved(fns, iters, warmup, cuda)
        for n, e in engines.items():
            d = e.describe()
            row = {"detector": det.name, "engine": n, "kind": e.kind, "precision": precision, "batch_size": b,
                   "build_s": d["build_s"], "cache": d["cache"], "parity": d["parity"]}
            row.update(summarize(times[n], b))
            row["peak_mem_mb"], row["mem_kind"] = mem[n]
            rows.append(row)
        yield rows


def add_speedups(rows: list[dict], baseline: str = "eager") -> None:
    """``speedup``: faces/s over the ``baseline`` engine, same detector, precision and batch."""
    base = {(r["detector"], r["precision"], r["batch_size"]): r["faces_per_s"] for r in rows if r["engine"] == baseline}
    for r in rows:
        b = base.get((r["detector"], r["precision"], r["batch_size"]))
        r["speedup"] = r["faces_per_s"] / b if b else None


def bench_engines(detectors: Iterable, kinds: Iterable[str], batch_sizes=(1, 8, 32), precision: str = "fp32",
                  device: str = "cpu", iters: int = 50, warmup: int = 5, *, weights: dict | None = None,
                  cache_dir: str | None = None, allow_parity_failure: bool = False,
                  progress: Callable[[str], None] | None = None,
                  on_update: Callable[[dict], None] | None = None) -> dict:
    """Benchmark every detector (names or :class:`Detector`) x engine name x batch size.

    Engines of one detector are built first, then timed interleaved per batch
    size. Returns ``{"machine", "settings", "results": [row...], "skipped",
    "best"}``; each row has ``latency_ms`` p50/p95/p99/mean/min, ``faces_per_s``
    (batch / p50), ``peak_mem_mb``, ``build_s``, ``parity``, ``speedup`` vs eager.
    ``on_update(result)`` is called with the result so far (``complete`` False) after each
    detector's builds and each timed batch size, so a run cut short keeps what it measured.
    """
    kinds, batch_sizes = list(kinds), sorted({int(b) for b in batch_sizes})
    cfgs = engine_configs(kinds, batch_sizes, precision, device,
                          {"cache_dir": cache_dir, "allow_parity_failure": allow_parity_failure})
    detectors = load_detectors(detectors, device, weights)
    out = {
        "machine": machine_info(device),
        "settings": {"engines": kinds, "batch_sizes": batch_sizes, "precision": precision, "device": device,
                     "iters": iters, "warmup": warmup, "timing": "engines interleaved round-robin per batch size",
                     "input": "float32 (N,3,S,S) RGB [0,255] on device",
                     # Says how little a p99 of a short run rests on (iters 20: the slowest two calls).
                     "percentiles": "numpy linear interpolation over the iters calls of a row; with "
                                    "fewer than 100 calls p99 lies between the two slowest"},
        "results": [], "skipped": [], "complete": False,
    }
    update = on_update or (lambda result: None)
    # Once every detector loaded (a refused one leaves an earlier run's file as it was) and
    # before any build: a run stopped while building must not leave that file marked complete.
    update(out)
    while detectors:
        det = detectors.pop(0)  # dropped once timed: a detector's weights are not held to the end
        if progress:
            progress(f"{det.name}: building {', '.join(kinds)} ({precision}, {device}) ...")
        engines, skipped = _build_all(det, cfgs)
        out["skipped"].extend(skipped)
        update(out)
        if progress:
            progress(f"{det.name}: timing {len(engines)} engines x batch {batch_sizes} ...")
        for rows in _bench_detector(det, engines, batch_sizes, precision, iters, warmup):
            out["results"].extend(rows)
            update(out)
        del engines
    add_speedups(out["results"])
    out["best"] = best_engines(out["results"])
    out["complete"] = True
    out["machine"]["load_avg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return out


def parity_ok(row: dict) -> bool:
    """False only for a row whose engine ran the parity check and failed it."""
    par = row.get("parity")
    return not (isinstance(par, dict) and par.get("passed") is False)


def best_engines(rows: list[dict]) -> list[dict]:
    """Fastest engine (faces/s) per detector, precision and batch size, among the engines
    that passed parity: one kept by --allow-parity-failure is timed and listed, but named
    best it was the engine to use though its scores disagree with eager."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if not parity_ok(r):
            continue
        k = (r["detector"], r["precision"], r["batch_size"])
        if k not in best or r["faces_per_s"] > best[k]["faces_per_s"]:
            best[k] = r
    return [{"detector": r["detector"], "precision": r["precision"], "batch_size": r["batch_size"],
             "engine": r["engine"], "faces_per_s": r["faces_per_s"], "speedup_vs_eager": r.get("speedup")}
            for r in best.values()]


# -- output -----------------------------------------------------------------


def print_table(result: dict, console=None) -> None:
    """Rich table of the rows and a line per skipped engine."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped/CI: rich would squeeze 13 columns into 80
            console = Console(width=170)
    t = Table(title=f"dfscan bench — {result['machine'].get('gpu') or result['machine']['cpu']}")
    for col in ("detector", "engine", "prec", "batch", "p50 ms", "p95 ms", "p99 ms", "faces/s",
                "× eager", "peak MB", "build s", "parity cos", "flips"):
        t.add_column(col, justify="left" if col in ("detector", "engine", "prec") else "right")
    for r in result["results"]:
        lat, par = r["latency_ms"], r.get("parity") or {}
        t.add_row(r["detector"], r["engine"], r["precision"], str(r["batch_size"]), f"{lat['p50']:.2f}",
                  f"{lat['p95']:.2f}", f"{lat['p99']:.2f}", f"{r['faces_per_s']:.0f}",
                  f"{r['speedup']:.2f}" if r.get("speedup") else "-", f"{r['peak_mem_mb']:.0f}",
                  f"{r['build_s']:.2f}", _parity_cell(par),
                  str(par.get("verdict_flips", "-")))
    console.print(t)
    for s in result["skipped"]:
        console.print(f"[yellow]skipped[/] {s['detector']} / {s['engine']}: {s['error']}")


def _parity_cell(par: dict) -> str:
    # A failed check is said in the table, not only in the JSON's parity.passed.
    if "cosine" not in par:
        return "-"
    return f"{par['cosine']:.5f}" + (" FAILED" if par.get("passed") is False else "")


def write_json(result: dict, path: str | Path) -> Path:
    """``result`` replacing ``path`` whole (temp file + rename: a kill mid-write keeps the
    previous file); both bench modes write through it. ``default=str``: a value JSON has no
    type for is written as text rather than losing the run at its last write."""
    from .files import write_json as write

    return write(result, path, indent=1, default=str)


def plot(result: dict, path: str | Path) -> Path | None:
    """PNG: p50 latency and faces/s vs batch size, one line per detector/engine.

    Returns ``None`` (no file) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[tuple, list] = {}
    for r in result["results"]:
        series.setdefault((r["detector"], r["engine"], r["precision"]), []).append(r)
    # Colour = engine, line style = detector, so engines compare at a glance.
    engines = sorted({k[1] for k in series})
    dets = sorted({k[0] for k in series})
    colours = {e: f"C{i % 10}" for i, e in enumerate(engines)}
    styles = {d: ("-", "--", ":", "-.")[i % 4] for i, d in enumerate(dets)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    for (det, eng, prec), rows in series.items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        bs = [r["batch_size"] for r in rows]
        kw = {"marker": "o", "color": colours[eng], "linestyle": styles[det], "label": f"{det} / {eng} {prec}"}
        ax1.plot(bs, [r["latency_ms"]["p50"] for r in rows], **kw)
        ax2.plot(bs, [r["faces_per_s"] for r in rows], **kw)
    ticks = sorted({r["batch_size"] for r in result["results"]})
    for ax, ylabel in ((ax1, "p50 latency per batch (ms)"), (ax2, "throughput (faces/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    m = result["machine"]
    fig.suptitle(f"{m.get('gpu') or m['cpu']} · {m['torch_threads']} threads · torch {m['versions']['torch']}")
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
