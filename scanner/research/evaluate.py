"""`dfscan eval`: video-level ACC, AUC, EER, HTER, TPR and TNR of any detector.

Definitions (label 1 = fake, score = P(fake), predicted fake when score >= t):

* ACC, TPR (fakes caught), TNR (reals passed) at ``t`` = 0.5 (``--acc-threshold``);
* AUC: ``sklearn.metrics.roc_auc_score``;
* EER: on ``sklearn.metrics.roc_curve`` (all thresholds), the ROC point where
  |FNR - FPR| is smallest (ties: lowest mean, then highest threshold),
  EER = (FPR + FNR) / 2 there, with its threshold;
* HTER(t) = (FPR(t) + FNR(t)) / 2, reported at 0.5 and at the EER threshold.

Scores come from a JSONL written by ``dfscan scan`` (``--from-jsonl``, read and matched to the
labelled files by :mod:`scanner.research.jsonl_scores`), or from
running the scan here: videos go through ``scanner.pipeline.scan_paths`` (the
scan's own sampling, faces, engine and frame/video aggregation); images (e.g.
``dfscan synth`` chips) are scored on their largest face with the same detector and engine.
Files without a score (no face, error) are excluded and counted.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score, roc_curve

from engines.errors import DfscanError
from engines.files import write_json

from ..output import writable
from .jsonl_scores import scores_from_jsonl
from .labelled import Item, read_labelled
from .stats import SMALL_CLASS, auc_ci, group_auc_ci

log = logging.getLogger(__name__)


def eer(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) from scikit-learn's ROC over all thresholds."""
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    gap = np.abs(fnr - fpr)
    # Several thresholds can tie on the gap: take the lowest (FPR+FNR)/2 among them,
    # then the highest threshold (roc_curve lists thresholds in decreasing order).
    tied = np.flatnonzero(gap <= gap.min() + 1e-12)
    i = int(tied[np.argmin((fpr[tied] + fnr[tied]) / 2)])
    return float((fpr[i] + fnr[i]) / 2), float(thr[i])


def rates(y: np.ndarray, s: np.ndarray, t: float) -> dict:
    """ACC, TPR, TNR and HTER at threshold ``t`` (predict fake when s >= t)."""
    pred = (s >= t).astype(int)
    tpr = recall_score(y, pred, pos_label=1, zero_division=np.nan)
    tnr = recall_score(y, pred, pos_label=0, zero_division=np.nan)
    return {"acc": float(accuracy_score(y, pred)), "tpr": float(tpr), "tnr": float(tnr),
            "hter": float(((1 - tpr) + (1 - tnr)) / 2)}


def binary_metrics(y, s, threshold: float = 0.5, units=None, groups=None) -> dict:
    """All metrics of one set of labels ``y`` (0/1) and scores ``s`` (P(fake)); ``units``: the
    video of each score when they are frames (the AUC interval resamples whole videos);
    ``groups``: the labelled set's group of each file (whole groups resampled, see
    :func:`scanner.research.stats.group_auc_ci`). ``auc_ci95_unit`` names what was resampled."""
    y = np.asarray(y, int)
    s = np.asarray(s, float)
    out = {"n": int(len(y)), "n_fake": int(y.sum()), "n_real": int((1 - y).sum()), "threshold": threshold}
    # no input scored (a subset of no-face videos): no rates, not those of an empty set
    out.update(rates(y, s, threshold) if len(y) else dict.fromkeys(("acc", "tpr", "tnr", "hter")))
    if out["n_fake"] and out["n_real"]:
        e, t = eer(y, s)
        at_eer = rates(y, s, t)
        ci = _interval(y, s, units, groups)
        out.update({"auc": float(roc_auc_score(y, s)), "auc_ci95": ci["ci"], "eer": e,
                    "eer_threshold": t, "hter_at_eer_threshold": at_eer["hter"],
                    "acc_at_eer_threshold": at_eer["acc"], "auc_ci95_unit": ci["ci_unit"]})
        for key in ("n_groups", "n_redrawn"):  # groups resampled: how many, and draws of one class
            if key in ci:
                out[f"auc_ci95_{key}"] = ci[key]
        if "ci_note" in ci:
            out["auc_ci95_note"] = ci["ci_note"]
    else:  # AUC/EER need both classes
        out.update({"auc": None, "auc_ci95": None, "eer": None, "eer_threshold": None,
                    "hter_at_eer_threshold": None, "acc_at_eer_threshold": None, "auc_ci95_unit": None})
    return _clean(out)


def _interval(y: np.ndarray, s: np.ndarray, units, groups) -> dict:
    """The AUC's bootstrap interval with ``ci_unit``: frames by video, files by group, or files."""
    if groups is not None:  # files of one person or video resampled one by one looked independent
        return group_auc_ci(y, s, groups, n=1000)
    return {**auc_ci(y, s, n=1000, units=units), "ci_unit": "file" if units is None else "video"}


def _clean(d: dict) -> dict:
    """JSON-safe: NaN/inf -> None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def report(items: list[Item], scores: dict[int, float], threshold: float = 0.5) -> dict:
    """Overall and per-subset metrics for items with a score (index -> P(fake))."""
    idx = sorted(scores)
    if not idx:
        raise DfscanError("no input got a score (no faces found, or every file failed)")
    y = np.array([items[i].label for i in idx])
    s = np.array([scores[i] for i in idx], float)
    if not np.isfinite(s).all():  # a NaN would pass for a low score in the threshold metrics
        bad = [str(items[i].path) for i, v in zip(idx, s) if not math.isfinite(v)]
        raise DfscanError(f"non-finite scores for {len(bad)} input(s), e.g. {bad[0]}: exclude them or rescan")
    g = np.array([items[i].group for i in idx], object)  # a file's own group when the set names none
    out = {"overall": binary_metrics(y, s, threshold, groups=g), "excluded": len(items) - len(idx),
           "subsets": {}}
    # Every labelled subset, scored or not: one whose videos all lack a score (no face, error)
    # is reported with n 0 and null metrics, never dropped.
    labelled, by_subset = defaultdict(int), defaultdict(list)
    for it in items:
        labelled[it.subset] += bool(it.subset)
    for k, i in enumerate(idx):
        by_subset[items[i].subset].append(k)
    for name in sorted(n for n in labelled if n):
        ks = by_subset[name]
        out["subsets"][name] = {**binary_metrics(y[ks], s[ks], threshold, groups=g[ks]),
                                "excluded": labelled[name] - len(ks)}
    return out


def score_items(items: list[Item], det, source, progress=lambda x: x, engine=None) -> dict[int, float]:
    """Video score per item: mean over frames of the largest face's P(fake).

    ``engine`` (the scan's, which moves crops to its own device): what computes the
    outputs ``det`` maps to P(fake); without one, ``det`` itself runs eager."""
    import torch

    from engines.detector import scores_for

    # A detector without parameters (baseline_sharpness) runs on its buffers' device, or the CPU.
    tensor = next(itertools.chain(det.parameters(), det.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    run = engine if engine is not None else (lambda x: det(x.to(device)))
    out = {}
    for i, it in enumerate(progress(items)):
        try:
            frames, crops = source.crops(it, det.spec)
        except DfscanError as e:
            log.warning("%s: %s", it.path, e)
            continue
        if len(frames) == 0:
            continue
        with torch.inference_mode():
            p = scores_for(det, run(crops), len(crops)).numpy()
        first = np.unique(frames, return_index=True)[1]  # largest face = first crop of a frame
        score = float(p[first].mean())
        if not math.isfinite(score):  # as the scan does: a non-finite score is no score
            log.warning("%s: non-finite P(fake) from the detector: excluded", it.path)
            continue
        out[i] = score
    return out


def roc_plot(items: list[Item], scores: dict[int, float], metrics: dict, path: Path, title: str = "") -> None:
    """ROC curve PNG (overall + each subset with both classes), EER point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = sorted(scores)
    sets = [("overall", idx)] + [(n, [i for i in idx if items[i].subset == n]) for n in metrics["subsets"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, ids in sets:
        y = [items[i].label for i in ids]
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, [scores[i] for i in ids])
        m = metrics["overall"] if name == "overall" else metrics["subsets"][name]
        ax.plot(fpr, tpr, label=plot_text(f"{name} AUC={m['auc']:.3f} EER={m['eer']:.3f}"))
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.plot([0, 1], [1, 0], ls="--", c="lightgrey", lw=0.8)  # EER line: FPR = FNR
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
           xlim=(0, 1), ylim=(0, 1), title=plot_text(title) or "ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "needs real and fake inputs", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_text(text: str) -> str:
    """``text`` as matplotlib shows it literally. Two ``$`` in a path, subset or model name
    started mathtext, and a non-UTF-8 name (a surrogate) was a TypeError: either failed the
    plot in a traceback after the JSON was written. Such a name shows as ``\\udcXX``, as in
    the JSONL and the HTML report."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("$", r"\$")


def _scan_context(args):
    """(config, scan context, engine for images) of eval's scan options (``--perturb`` applied)."""
    from ..pipeline import build_context
    from ..config import build_config
    from ..run import OPTION_KEYS

    # Scan options only: eval's own --out/--threshold-like flags are not scan settings.
    keys = set(OPTION_KEYS) - {"out", "resume", "metrics_port", "metrics_host", "fail_on_fake"}
    overrides = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    cfg = build_config(getattr(args, "config", None), {**overrides, "hash": False, "progress": False})
    ctx = build_context(cfg)
    # Images run on the scan's engine too: they ran on the eager fp32 detector whatever
    # --engine/--precision said, under a report naming that engine.
    image_engine = ctx.engine
    if getattr(args, "perturb", None):  # degrade every aligned crop (see scanner.research.perturb)
        from .augment import parse_perturb
        from .perturb import Perturbed

        perturbs = parse_perturb(args.perturb)
        ctx.engine, image_engine = Perturbed(ctx.engine, perturbs, 0), Perturbed(ctx.engine, perturbs, 1)
    return cfg, ctx, image_engine


def scan_settings(cfg, ctx, perturb: str | None = None) -> dict:
    """How the scores were made, under the field names scan rows use (the COMPAT_FIELDS, which
    make two scans' scores comparable, and the engine): two eval JSONs can be told apart."""
    from engines.backends import resolve_engine_name

    from ..resume import compat_of

    made = {**compat_of(cfg), "weights_hash": ctx.detector.weights_hash,
            "engine": ctx.engine_info.get("backend") or resolve_engine_name(cfg.engine, cfg.device)}
    return {**made, "perturb": perturb or None}


def scan_scores(items: list[Item], args) -> tuple[dict[int, float], str, dict, dict]:
    """Score items with the scan itself: videos through ``scanner.pipeline.scan_paths``
    (same sampling, faces, engine and aggregation as ``dfscan scan``), images with
    the same detector and engine on their largest face (``score_items``).
    Returns (scores, scored_by, video verdict counts, :func:`scan_settings`)."""
    from engines.backends import resolve_engine_name

    from .features import CropConfig, CropSource

    cfg, ctx, image_engine = _scan_context(args)
    scores, verdicts = _scan_videos(items, ctx, args)
    images = [i for i, it in enumerate(items) if it.is_image]
    if images:
        # The scan's face search: images were searched at det_max_side 960 and face_prob 0.9
        # whatever the flags said, unlike the videos beside them.
        src = CropSource(CropConfig(frames=cfg.frames, min_face=cfg.min_face, device=cfg.device,
                                    max_side=cfg.det_max_side, face_prob=cfg.face_prob))
        got = score_items([items[i] for i in images], ctx.detector, src, _progress(args), image_engine)
        scores.update({images[k]: v for k, v in got.items()})
    settings = scan_settings(cfg, ctx, getattr(args, "perturb", None))
    perturbed = f" perturb:{args.perturb}" if settings["perturb"] else ""
    engine = resolve_engine_name(cfg.engine, cfg.device)  # what ran, not 'auto'
    return (scores, f"detector:{cfg.detector}:{ctx.detector.weights_hash} engine:{engine} {cfg.precision}"
            f"{perturbed}", verdicts, settings)


def _scan_videos(items: list[Item], ctx, args) -> tuple[dict[int, float], dict]:
    """(item index -> score, verdict counts) of the videos among ``items``, scanned by ``ctx``."""
    from ..pipeline import scan_paths

    videos = [i for i, it in enumerate(items) if not it.is_image]
    scores, verdicts = {}, defaultdict(int)
    # Rows arrive in completion order with several workers: pair them with their
    # items by path, never by position (a listed path may repeat: each copy once).
    waiting: dict[str, list[int]] = defaultdict(list)
    for i in videos:
        waiting[str(items[i].path)].append(i)
    rows = scan_paths([items[i].path for i in videos], ctx=ctx)
    for row in _progress(args)(rows) if videos else rows:
        i = waiting[row["path"]].pop(0)
        verdicts[row["verdict"]] += 1
        if row.get("score") is not None:
            scores[i] = float(row["score"])
    return scores, dict(verdicts)


def _refuse_scan_options(args) -> None:
    """Scores read from a JSONL were made by that scan: a --perturb, --detector, --frames ...
    given with --from-jsonl was ignored, and the report read as if they had been applied."""
    from ..run import OPTION_KEYS

    given = [k for k in OPTION_KEYS if k != "out" and hasattr(args, k)]
    given += [k for k in ("config", "perturb") if getattr(args, k, None)]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise DfscanError(f"eval: --from-jsonl reads the scores as they were scanned; {flags} would be "
                          "ignored: leave them out, or scan here without --from-jsonl")


def run_eval(args) -> int:
    """CLI handler of ``dfscan eval`` (see :func:`scanner.research.commands.add_eval_parser`)."""
    if args.from_jsonl:
        _refuse_scan_options(args)
    writable(args.out)
    items = read_labelled(args.labels)
    verdicts, settings = {}, {}
    rowless: list[int] = []
    changed: list[int] = []
    if args.from_jsonl:
        scores = scores_from_jsonl(items, Path(args.from_jsonl), args.score_key, rowless, settings, changed)
        scored_by = f"jsonl:{args.from_jsonl}"
    else:
        scores, scored_by, verdicts, settings = scan_scores(items, args)
    if rowless:  # counted with the no-face inputs, they passed for files the scan could not score
        log.warning("%d of %d labelled inputs have no row in %s (e.g. %s): excluded from the metrics",
                    len(rowless), len(items), args.from_jsonl, items[rowless[0]].path)
    if changed:  # the row's score is of the file as it was scanned, not as it is now
        log.warning("%d of %d labelled inputs changed since %s was scanned (size differs, e.g. %s): "
                    "excluded from the metrics; rescan them", len(changed), len(items), args.from_jsonl,
                    items[changed[0]].path)
    res = {"labels": str(args.labels), "scored_by": scored_by, "scan": settings,
           **report(items, scores, args.acc_threshold), "not_in_jsonl": len(rowless),
           "changed_since_scan": len(changed), "video_verdicts": verdicts,
           "scores": [{"path": str(items[i].path), "label": items[i].label, "subset": items[i].subset,
                       "score": scores.get(i)} for i in range(len(items))]}
    out = write_json(res, args.out)
    roc_plot(items, scores, res, out.with_suffix(".png"), scored_by)
    _print(res)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _progress(args):
    if getattr(args, "quiet", False):
        return lambda x: x
    from rich.progress import track

    return lambda xs: track(xs, description="scoring", transient=True)


def _print(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ["n", "acc", "auc", "auc_ci95", "eer", "eer_threshold", "hter", "hter_at_eer_threshold", "tpr", "tnr"]
    rowless = f", {res['not_in_jsonl']} of them not in the JSONL" if res.get("not_in_jsonl") else ""
    if res.get("changed_since_scan"):
        rowless += f", {res['changed_since_scan']} changed since the scan"
    table = Table(title=f"video-level metrics ({res['excluded']} excluded: no score{rowless})")
    table.add_column("set")
    for c in cols:
        table.add_column(c, justify="right")
    rows = [("overall", res["overall"])] + list(res["subsets"].items())
    for name, m in rows:  # the AUC's bootstrap interval beside it: an AUC alone over-claims
        cells = [_cell(m.get(c)) + ("*" if c == "auc_ci95" and m.get("auc_ci95_note") else "") for c in cols]
        table.add_row(name, *cells)
    resampled = sorted({m.get("auc_ci95_unit") for _, m in rows} - {None})
    notes = [f"auc_ci95 resamples whole {' / '.join(u + 's' for u in resampled)}"] if resampled else []
    if any(m.get("auc_ci95_note") for _, m in rows):
        notes.append(f"* fewer than {SMALL_CLASS} real or fake videos (groups, where groups are resampled) "
                     "in the set: its bootstrap interval is too narrow")
    table.caption = "\n".join(notes) or None
    Console(width=max(Console().width, 150)).print(table)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):  # an interval
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    return f"{v:.4g}"
