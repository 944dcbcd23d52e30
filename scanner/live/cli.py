"""CLI entry points for live streams: ``dfscan watch`` and ``dfscan serve``.

The main CLI wires them in with :func:`add_watch_parser` and
:func:`add_serve_parser`; each sets ``func`` to a handler ``(args) -> int``.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from engines.errors import DfscanError

from ..argtypes import positive
from ..config import DEFAULT_DETECTOR
from ..output import OutputError
from ..terminal import terminal_safe
from .config import ConfigError, ServeConfig, load_config, parse_config

log = logging.getLogger("dfscan.live")

EXIT_OUTPUT = OutputError.exit_code  # 4, as dfscan scan


def add_watch_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("watch", help="watch live streams/webcams in a terminal table",
                              description="Scan live streams (rtsp, rtmp, http(s)/HLS, udp; srt only through a "
                                          "relay to udp, see the README) or /dev/videoN; arguments are URL or "
                                          "name=URL.")
    p.add_argument("targets", nargs="+", metavar="URL|DEVICE")
    p.add_argument("--detector", default=DEFAULT_DETECTOR)
    p.add_argument("--engine", default="auto", help="auto | eager | compile | onnxruntime | tensorrt")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sample-fps", type=float, default=2.0)
    p.add_argument("--window", type=float, default=10.0, help="rolling window, seconds")
    p.add_argument("--fake-above", type=float, default=None, help="default: detector threshold + 0.1")
    p.add_argument("--real-below", type=float, default=None, help="default: detector threshold - 0.1")
    p.add_argument("--out", "--jsonl", dest="jsonl", default=None, metavar="FILE.jsonl",
                   help="also append verdict events to this JSONL file (--jsonl: old name)")
    # nan never compared as reached (watch ran forever); -1 or 0 stopped at once with exit 0
    p.add_argument("--duration", type=positive, default=None, help="stop after this many seconds")
    p.add_argument("--allow-files", action="store_true", help="accept local files (played in real time)")
    p.add_argument("--rtsp-transport", default="auto", choices=("auto", "tcp", "udp", "udp_multicast", "http", "https"),
                   help="RTSP lower transport; auto: TCP, then UDP if the server refuses TCP or sends nothing")
    p.add_argument("--no-tls-verify", dest="tls_verify", action="store_false",
                   help="take any TLS certificate (a camera's self-signed one); default: verify rtsps/rtmps/https")
    p.add_argument("--ca-file", default=None, metavar="PEM",
                   help="trust this CA bundle or camera certificate instead of the public CAs (certifi)")
    p.set_defaults(func=watch_main)
    return p


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the live scanning service with an HTTP API",
                              description="Long-running service: streams from --config, HTTP API, "
                                          "metrics, webhook alerts.")
    p.add_argument("--config", required=True, help="YAML config (see configs/serve.yaml)")
    p.add_argument("--host", default=None, help="override api.host (non-loopback needs a token)")
    p.add_argument("--port", type=int, default=None, help="override api.port")
    # An unknown level ("verbose", "trace") silently ran at INFO.
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    p.set_defaults(func=serve_main)
    return p


def watch_main(args) -> int:
    from .watch import all_stopped, parse_targets, run_watch

    # Errors only: the table already shows each stream's state and last error.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("scanner.live").setLevel(logging.ERROR)
    # ...but a sink that cannot deliver (a full disk under --out) says so: events are being lost.
    logging.getLogger("scanner.live.sinks").setLevel(logging.WARNING)
    try:
        from ..config import check_device

        check_device(args.device)  # one line, not a CUDA traceback, without a GPU
        streams = parse_targets(args.targets)
        sinks = [{"type": "jsonl", "path": args.jsonl}] if args.jsonl else []
        cfg = parse_config({
            "api": {"enabled": False},
            "model": {"detector": args.detector, "weights": args.weights, "devices": [args.device],
                      "engine": args.engine},
            "defaults": {"sample_fps": args.sample_fps, "rtsp_transport": args.rtsp_transport,
                         "tls_verify": args.tls_verify, "ca_file": args.ca_file},
            "verdict": {"window_s": args.window, "fake_above": args.fake_above, "real_below": args.real_below},
            "sinks": sinks, "allow_files": args.allow_files,
            "streams": [s.model_dump(exclude_none=True) for s in streams],
        })
        signals: list[int] = []
        sink_stats: list[dict] = []
        rows = run_watch(cfg, duration_s=args.duration, signals=signals, sink_stats=sink_stats)
    except (DfscanError, ValueError) as e:
        print(f"dfscan: error: watch: {e}", file=sys.stderr)  # the one error line every command prints
        return EXIT_OUTPUT if isinstance(e, OutputError) else 2  # --out not writable: 4, as dfscan scan
    lost = sum(s["failed"] + s["dropped"] for s in sink_stats)
    if lost:  # as a scan whose output failed: exit 4, not a clean 0 over a file missing events
        print(f"dfscan: error: watch: {lost} event(s) could not be written to {terminal_safe(str(args.jsonl))}",
              file=sys.stderr)
    if signals:  # 130 / 143 as dfscan scan: a script can tell a stop from a --duration run's end
        kept = f"; events already written to {terminal_safe(str(args.jsonl))} are kept" if args.jsonl else ""
        print(f"dfscan: interrupted{kept}", file=sys.stderr)
        return 128 + signals[0]
    if lost:
        return EXIT_OUTPUT
    if all_stopped(rows):  # nothing left to watch: each stream's reason, exit 1 as a scan's error row
        for r in rows:
            print(f"dfscan: error: watch: stream {r['name']} stopped: {terminal_safe(r['last_error'] or 'ended')}",
                  file=sys.stderr)
        return 1
    return 0


def serve(cfg: ServeConfig, stop: threading.Event, on_ready=None) -> int:
    """Run the service until ``stop`` is set; API per ``cfg.api``. Returns an exit code."""
    from .server import ApiServer
    from .service import LiveService

    token = cfg.api.check_auth()
    svc = LiveService(cfg)
    api = None
    try:
        svc.start()
        if cfg.api.enabled:
            api = ApiServer(svc, cfg.api.host, cfg.api.port, token, cfg.api.max_body_bytes, api=cfg.api).start()
            log.info("API on http://%s:%d (auth %s)", cfg.api.host, api.port, "on" if token else "off")
        if on_ready is not None:
            on_ready(svc, api)
        stop.wait()
        log.info("shutting down")
    finally:
        if api is not None:
            api.stop()
        svc.stop()
    return 0


def serve_main(args) -> int:
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("scanner.live", "scanner.durable", "dfscan.live"):  # the root logger may be configured already
        logging.getLogger(name).setLevel(level)
    try:
        cfg = load_config(args.config)
        from ..config import check_device

        for device in cfg.model.devices:
            check_device(device)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if overrides:  # validated like the file (model_copy does not: --port 99999 was a traceback)
            cfg = parse_config({**cfg.model_dump(), "api": {**cfg.api.model_dump(), **overrides}})
        stop = threading.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: stop.set())
        return serve(cfg, stop)
    except ConfigError as e:
        print(f"dfscan: error: serve: invalid config: {e}", file=sys.stderr)
        return 2
    except (DfscanError, OSError) as e:  # OSError: e.g. the API port is already in use
        print(f"dfscan: error: serve: {e}", file=sys.stderr)
        return 1
