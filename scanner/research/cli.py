"""``dfscan train`` command line (registered through ``scanner.cli.EXTRA_COMMANDS``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..argtypes import MAX_SIDE, SEED, fraction, int_in, positive

MEDIA = "../shared/media"


def _default_cache() -> str:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(base / "dfscan" / "train" / "faces")


class _Bar:
    """tqdm-like wrapper over a rich progress bar: loss while training, val AUC per epoch."""

    def __init__(self, loader, epoch: int, epochs: int, progress):
        self.loader, self.progress = loader, progress
        self.task = progress.add_task(f"epoch {epoch + 1}/{epochs}", total=len(loader), info="")

    def __iter__(self):
        for b in self.loader:
            yield b
            self.progress.advance(self.task)

    def set_postfix(self, loss: float) -> None:
        self.progress.update(self.task, info=f"loss {loss:.4f}")

    def epoch_done(self, rec: dict) -> None:
        self.progress.update(self.task, info=f"loss {rec['loss']:.4f}  val AUC {rec['auc']:.4f} "
                                             f"(sbi {rec.get('auc_sbi', float('nan')):.3f}, "
                                             f"mfs {rec.get('auc_mfs', float('nan')):.3f})")


CACHE_FRAMES = 24  # frames per clip in a face cache, unless --cache-frames
IDENTITY_MODES = ("name", "folder")  # see scanner.research.data.identity


def add_identity_arg(p: argparse.ArgumentParser) -> None:
    """``--identity`` of ``train`` and ``synth``: one option, so both name the people alike
    (synth's manifest groups are what ``probe fit`` splits by)."""
    p.add_argument("--identity", choices=IDENTITY_MODES, default="name",
                   help="who is who, for the identity split: name (default: each file is one person, MEAD/GRID "
                        "by their file names) or folder (each folder holds one person's files)")


def _roots(args) -> list:
    """``--data``, or the shared media's real footage by default."""
    return args.data or [f"{MEDIA}/train_real", f"{MEDIA}/portrait", f"{MEDIA}/train_stills"]


def _files(args) -> list[Path]:
    """Every N-th file of ``--data`` in sorted order: a fixed subset, so a recipe names its data exactly."""
    from .data import sources

    return sources(_roots(args))[::args.every]


def _build_cache(args, cache: Path) -> None:
    from engines.detectors.effnet_lite import lite_spec

    from .data import CacheConfig, CacheError, build_cache

    roots = _roots(args)
    files = _files(args)
    if not files:
        raise CacheError(f"no videos or images in {', '.join(map(str, roots))}")
    print(f"building the face cache {cache} from {len(files)} files of {', '.join(map(str, roots))} (once)")
    res = build_cache(files, cache, lite_spec(224),
                      CacheConfig(frames=args.cache_frames, device=args.device, identity=args.identity))
    print(f"{res['faces']} faces of {res['groups']} identities from {res['files']} files; "
          f"{len(res['skipped'])} skipped")
    if args.identity == "name":  # validation is only held out if no person has two files
        print("identities by file name: each clip or still is one person (MEAD and GRID by their names); "
              "several files of one person? put each person's files in a folder of their own and use "
              "--identity folder, or one person lands on both sides of the split")


def _train(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from engines.errors import DfscanError

    from .train import TrainConfig, train

    from .data import check_built_from

    caches = [Path(c) for c in args.cache]
    if not args.cache_only and not args.out:
        raise DfscanError("train: --out DIR is required (or --cache-only to build a face cache)")
    if (args.cache_only or args.data) and len(caches) != 1:  # --data would be ignored
        raise DfscanError("train: --cache-only and --data build one cache: give one --cache folder")
    if len(caches) == 1 and not (caches[0] / "index.csv").is_file():  # written last: a complete cache
        _build_cache(args, caches[0])
    elif len(caches) == 1 and args.data:
        check_built_from(caches[0], _files(args), args.cache_frames, args.identity)
    elif args.every != 1 or args.cache_frames != CACHE_FRAMES or args.identity != "name":  # they shape a build
        raise DfscanError("train: --every, --cache-frames and --identity choose what a cache is built from: "
                          "give --data too (the cache is checked against them), or leave them out")
    if args.cache_only:
        print(f"face cache ready: {caches[0]}")
        return 0
    cfg = TrainConfig(arch=args.arch, size=args.size, epochs=args.epochs, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, freeze=args.freeze, seed=args.seed,
                      threads=args.threads, max_minutes=args.max_minutes, init=args.init, p_mfs=args.p_mfs,
                      p_global=args.p_global, recon=args.recon, p_recon=args.p_recon,
                      p_edge=args.p_edge, p_low_res=args.p_low_res, split=args.split,
                      device=args.device, val_size=args.val_size, workers=args.workers)
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"))
    try:
        with Progress(*cols, disable=args.quiet) as progress:
            card = train(cfg, caches, args.out, lambda loader, ep: _Bar(loader, ep, cfg.epochs, progress))
    except OSError as e:  # an --out under a file, a read-only folder, a full disk: were tracebacks
        where = f" ({e.filename})" if e.filename else ""
        raise DfscanError(f"train: cannot write the run folder {args.out}: {e.strerror or e}{where}; "
                          "files already there are whole (a resume continues from last.pt)") from e
    print(f"best validation AUC {card['best_val_auc']:.4f} (epoch {card['best_epoch']}); "
          f"weights {args.out}/best.safetensors, card {args.out}/card.json")
    if len(card["history"]) < cfg.epochs:  # read as a finished run, then shipped as one
        print(f"stopped by --max-minutes after {len(card['history'])} of {cfg.epochs} epochs: "
              "the same command continues the run")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """``dfscan train --out DIR [--arch NAME] [--data ROOT ...] [--init FILE]``, or
    ``dfscan train --cache-only --cache DIR [--data ROOT ...] [--every N]``."""
    p = subparsers.add_parser("train", help="train a detector on real faces + self-blended/swapped fakes")
    p.add_argument("--out", metavar="DIR", help="run folder (resumes from DIR/last.pt); not with --cache-only")
    p.add_argument("--arch", default="effnet_lite0_sbi",
                   help="effnet_lite0_sbi, effnet_lite2_sbi, effnet_lite0_adm, or a test_* variant")
    p.add_argument("--data", nargs="*", help=f"real face videos/photos or folders (default {MEDIA}/train_real, "
                                             "portrait, train_stills)")
    p.add_argument("--cache", nargs="+", default=[_default_cache()],
                   help="face-crop cache folder (built from --data when missing), or several built ones")
    # Numbers are refused as they are parsed, before any work (scanner.argtypes): counts below 1
    # divided by zero in the schedule, a --val-size below 2 left validation without both classes,
    # shares outside [0, 1] or NaN were taken silently, bad threads/workers/freeze/seed/lr were
    # torch or numpy tracebacks once the cache was loaded, --max-minutes 0 or NaN meant no budget,
    # and --size 0 trained at the default side under a recipe saying 0.
    p.add_argument("--cache-frames", type=int_in(1), default=CACHE_FRAMES, help="frames per clip in the cache (default 24)")
    p.add_argument("--every", type=int_in(1), default=1, metavar="N",
                   help="build the cache from every N-th file of --data, in sorted order (default 1: all)")
    add_identity_arg(p)
    p.add_argument("--cache-only", action="store_true", help="build the face cache from --data, then stop")
    p.add_argument("--init", help="ImageNet backbone (.safetensors/.pth) or a trained detector to start from")
    p.add_argument("--size", type=int_in(32, MAX_SIDE), help="input side (binary models; default 160)")
    p.add_argument("--epochs", type=int_in(1), default=8)
    p.add_argument("--steps", type=int_in(1), default=150, help="batches per epoch")
    p.add_argument("--batch-size", type=int_in(1), default=32)
    p.add_argument("--lr", type=positive, default=1e-3)
    p.add_argument("--freeze", type=int_in(0), default=3, help="frozen backbone stages (default 3 of 7)")
    p.add_argument("--p-mfs", type=fraction, default=0.35, help="share of fakes made by MFS (rest self-blended)")
    p.add_argument("--p-global", type=fraction, default=0.0,
                   help="share of real faces given the self-blend colour/scale/blur change over the whole crop")
    p.add_argument("--recon", metavar="AE", help="autoencoder weights for reconstruction fakes "
                                                 "(python -m scanner.research.recon)")
    p.add_argument("--p-recon", type=fraction, default=0.0, help="share of fakes that are --recon reconstructions")
    p.add_argument("--p-edge", type=fraction, default=0.0,
                   help="share of training crops (real and fake alike) cut by a simulated frame edge, black "
                        "beyond it as when a face's context runs past the video frame")
    p.add_argument("--p-low-res", type=fraction, default=0.0,
                   help="share of training crops (real and fake alike) degraded as a small face of a compressed "
                        "video: shrunk, compressed at that size, magnified back")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--split", choices=("persons", "groups"), default="persons",
                   help="persons (default): groups sharing footage (a file, a byte-identical crop) count as "
                        "one person; groups: the cache's groups as they are (the shipped weights' split)")
    p.add_argument("--threads", type=int_in(1), default=2)
    p.add_argument("--max-minutes", type=positive, help="stop after the epoch that crosses this budget")
    p.add_argument("--device", default="cpu", help="training device (and face detection when building the cache)")
    p.add_argument("--val-size", type=int_in(2), default=600, help="held-out-identity validation samples (default 600)")
    p.add_argument("--workers", type=int_in(0), default=0, help="DataLoader worker processes making fakes (GPU recipe)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)
    return p
