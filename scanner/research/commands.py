"""Research subcommands: `probe fit`, `eval`, `separability`, `synth`.

Each ``add_*_parser(subparsers)`` adds one subcommand whose parsed namespace
carries ``func(args) -> int`` (the exit code). Handlers import their modules
lazily, so ``dfscan scan`` never pays for scikit-learn or matplotlib.
"""
from __future__ import annotations

import argparse
import os

from ..argtypes import MAX_SIDE, SEED, Parser, comma_list, finite, float_in, int_in, positive

LABELS_HELP = ("labelled set: a folder with real/ and fake/ sub-folders (or a manifest.csv inside), "
               "or a CSV with path,label[,group][,subset][,landmarks]")


def _add_backbone_args(p: argparse.ArgumentParser, required: bool) -> None:
    from engines.backbones import list_sources

    p.add_argument("--backbone", required=required, choices=list_sources(),
                   help="backbone source / checkpoint format")
    p.add_argument("--backbone-weights", metavar="FILE", help="local backbone checkpoint file")
    p.add_argument("--arch", help="resnet18..resnet152 (default resnet50), or the timm model name")
    p.add_argument("--size", type=int_in(32, MAX_SIDE), help="crop side in pixels (default 224; facenet 160)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int_in(1), default=32, help="frames sampled per video (default 32)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _cache_arg(p: argparse.ArgumentParser) -> None:
    from engines.cache import cache_root

    p.add_argument("--cache", default=str(cache_root() / "features"),
                   help="feature cache folder ('' disables)")


def _default_out(args, command: str, name: str) -> None:
    """``--out`` left out: ``name`` in the current folder, unless that file or its plot is
    there already. The second run in a folder replaced the first one's report and plot without
    a word; now it is refused before any work (exit 2). An --out given is replaced, as
    ``dfscan scan --out`` replaces its file without --resume."""
    if args.out is not None:
        # The plot goes to --out's .png: `--out roc.png` wrote the JSON and then the plot over
        # it (the metrics lost, "wrote roc.png and roc.png"); .PNG too (one file where case is folded).
        if os.path.splitext(args.out)[1].lower() == ".png":
            from engines.errors import DfscanError

            raise DfscanError(f"{command}: --out {args.out} would be replaced by the plot written beside "
                              "the JSON as .png: name the JSON file (e.g. --out result.json)")
        return
    png = os.path.splitext(name)[0] + ".png"
    there = [f for f in (name, png) if os.path.lexists(f)]
    if there:
        from engines.errors import DfscanError

        raise DfscanError(f"{command}: {' and '.join(there)} from an earlier run "
                          f"{'are' if len(there) > 1 else 'is'} in this folder and would be replaced: "
                          "pass --out FILE.json (a new name, or that one to replace it)")
    args.out = name


def _probe(args) -> int:
    # DfscanError, not SystemExit(text): that printed the bare text and exited 1, not as a usage error
    from engines.errors import DfscanError

    if args.probe_cmd != "fit":
        raise DfscanError("usage: dfscan probe fit ...")
    if not args.backbone_weights:
        raise DfscanError("probe fit: --backbone-weights FILE is required")
    from .probe import run_probe_fit

    return run_probe_fit(args)


def add_probe_parser(subparsers) -> argparse.ArgumentParser:
    """``dfscan probe fit LABELS --backbone SRC --backbone-weights FILE --out DIR``."""
    p = subparsers.add_parser("probe", help="linear probes on frozen backbones")
    sub = p.add_subparsers(dest="probe_cmd", required=True)
    f = sub.add_parser("fit", help="fit a linear probe and save it as a detector directory")
    f.add_argument("labels", help=LABELS_HELP)
    _add_backbone_args(f, required=True)
    f.add_argument("--out", required=True, metavar="DIR", help="probe directory to write")
    # A C that is not a positive number, a held-out share outside (0, 1) or a seed outside
    # [0, 2**32) failed in scikit-learn after every feature was computed: refused as parsed.
    f.add_argument("--C", type=comma_list(positive),
                   help="comma-separated inverse L2 strengths to select from (default 1e-4..10)")
    f.add_argument("--heldout", type=float_in(0.0, 1.0, open_=True), default=0.3,
                   help="held-out share of groups (default 0.3)")
    f.add_argument("--seed", type=SEED, default=0)
    f.add_argument("--batch-size", type=int_in(1), default=32)
    f.add_argument("--json", metavar="FILE", help="also write the training summary here")
    _add_common(f)
    _cache_arg(f)
    p.set_defaults(func=_probe)
    f.set_defaults(func=_probe)
    return p


def _eval(args) -> int:
    # Without --detector/--config/--from-jsonl, eval scores with the scan's default detector
    # (ScanConfig), so `dfscan eval` measures exactly what `dfscan scan` reports.
    from .evaluate import run_eval

    _default_out(args, "eval", "eval.json")
    return run_eval(args)


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """``dfscan eval LABELS [--detector NAME [--weights W] | --from-jsonl FILE] --out FILE.json``.

    The detector defaults to ``dfscan scan``'s (``meso4_df``).

    Takes every ``dfscan scan`` option (``--config``, ``--engine``, ``--frames`` ...)
    for the scan it runs; ``--threshold`` is the scan's verdict threshold, while
    metrics use ``--acc-threshold`` (0.5) and the EER threshold.
    """
    from ..cli import add_scan_options

    p = subparsers.add_parser("eval", help="ACC/AUC/EER/HTER/TPR/TNR of a detector on labelled videos")
    p.add_argument("labels", help=LABELS_HELP)
    add_scan_options(p)
    p.add_argument("--from-jsonl", metavar="FILE", help="read video scores from a `dfscan scan` JSONL")
    p.add_argument("--score-key", default="score", help="JSONL field holding P(fake) (default score)")
    # A NaN threshold called every video real (s >= nan is false) and reported no threshold.
    p.add_argument("--acc-threshold", type=finite, default=0.5,
                   help="P(fake) threshold for ACC/TPR/TNR/HTER (default 0.5)")
    p.add_argument("--out", metavar="FILE",
                   help="JSON report file (not a folder; default eval.json here, refused when an earlier "
                        "run's eval.json or eval.png is there); the ROC plot goes next to it as .png")
    p.add_argument("--perturb", metavar="SPEC",
                   help="degrade every aligned face crop first, e.g. jpeg:40,blur:1.5,downscale:0.5,noise:5 "
                        "(also h264:CRF); applied in the order given")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_eval)
    return p


def _separability(args) -> int:
    from engines.errors import DfscanError

    if bool(args.backbone) == bool(args.detector):
        raise DfscanError("separability: give exactly one of --backbone or --detector")
    if args.backbone and not args.backbone_weights:
        raise DfscanError("separability: --backbone-weights FILE is required with --backbone")
    # Given to the other model kind they were ignored: a detector's crops kept its own size
    # under a result read as of the --size asked for.
    other = (["--backbone-weights", "--arch", "--size"] if args.detector else ["--weights"])
    given = [f for f in other if getattr(args, f[2:].replace("-", "_")) is not None]
    if given:
        raise DfscanError(f"separability: {', '.join(given)} would be ignored with "
                          f"{'--detector' if args.detector else '--backbone'}: leave "
                          f"{'them' if len(given) > 1 else 'it'} out")
    from .separability import run_separability

    _default_out(args, "separability", "separability.json")
    return run_separability(args)


def add_separability_parser(subparsers) -> argparse.ArgumentParser:
    """``dfscan separability LABELS (--backbone SRC --backbone-weights F | --detector NAME)``."""
    p = subparsers.add_parser("separability", help="PCA-2D + K-means separability of a backbone or detector")
    p.add_argument("labels", help=LABELS_HELP)
    _add_backbone_args(p, required=False)
    p.add_argument("--detector", help="registered detector (its penultimate features)")
    p.add_argument("--weights", help="detector weights")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", metavar="FILE",
                   help="JSON result file (not a folder; default separability.json here, refused when an "
                        "earlier run's separability.json or .png is there); the scatter plot goes next to it")
    _add_common(p)
    _cache_arg(p)
    p.set_defaults(func=_separability)
    return p


def _synth(args) -> int:
    from .synth import run_synth

    return run_synth(args)


def add_synth_parser(subparsers) -> argparse.ArgumentParser:
    """``dfscan synth INPUT... --out DIR``: self-blended fakes from real faces."""
    p = subparsers.add_parser("synth", help="self-blended fake faces from real images/videos")
    p.add_argument("inputs", nargs="+", help="real face images/videos or folders of them")
    p.add_argument("--out", required=True, metavar="DIR")
    # --size 0 made cv2 keep the whole frame as the "chip"; counts below 1 or a context <= 0 make no chips.
    p.add_argument("--frames", type=int_in(1), default=8, help="frames sampled per video (default 8)")
    p.add_argument("--size", type=int_in(16, MAX_SIDE), default=256, help="chip side in pixels (default 256)")
    p.add_argument("--context", type=positive, default=1.8, help="chip side / face box side (default 1.8)")
    p.add_argument("--mode", choices=["global", "partial", "mixed"], default="mixed")
    p.add_argument("--max-faces", type=int_in(1), default=1, help="faces per frame (largest first)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu")
    from .cli import add_identity_arg  # train's option, so manifest groups match its split

    add_identity_arg(p)
    p.set_defaults(func=_synth)
    return p


def add_research_parsers(subparsers) -> None:
    """All four research subcommands at once."""
    for add in (add_probe_parser, add_eval_parser, add_separability_parser, add_synth_parser):
        add(subparsers)


def main(argv=None) -> int:
    """Stand-alone entry (``python -m scanner.research.commands ...``); ``dfscan`` wires them in lazily."""
    parser = Parser(prog="dfscan")
    add_research_parsers(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
