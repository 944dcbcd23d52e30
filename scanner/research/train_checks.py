"""Checks of a ``dfscan train`` run that refuse or report, kept apart from the training loop."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from engines.errors import DfscanError

if TYPE_CHECKING:
    from .train import TrainConfig

log = logging.getLogger("dfscan")


def _same_recipe(out: Path, old: dict, new: dict) -> None:
    """Refuse to resume a run with another recipe: its weights would come from two recipes
    while its card names only the last one."""
    # A key a checkpoint lacks was added to the recipe later: not a difference, but for the
    # split, whose earlier rule was "groups" (a resume would switch people between the sides).
    old = {"split": "groups", **old}
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old) if old[k] != new.get(k)]
    if diff:
        raise DfscanError(f"{out}/last.pt was trained with another recipe ({'; '.join(diff)}): "
                          "resume with the same options and face caches, or train into a new --out folder")


def _say_other_settings(history: list, cfg: "TrainConfig") -> None:
    """A resume may change threads or device (see :data:`.train._RESUMABLE_CHANGES`), but the weights
    are then no longer bit-for-bit those of either setting alone, while the card named only
    the last: each epoch's record keeps its own, and the change is logged."""
    last = history[-1] if history else {}
    changed = [f"{k} {last[k]} -> {getattr(cfg, k)}" for k in ("threads", "device")
               if last.get(k) is not None and last[k] != getattr(cfg, k)]
    if changed:
        log.warning("resuming with %s: the weights will not rebuild bit for bit with one setting "
                    "(each epoch's record in card.json names its own)", ", ".join(changed))


def _check_finite(loss: float, epoch: int, step: int) -> None:
    """Stop at a NaN or infinite loss: one more step makes every weight NaN, and the epoch
    ended in a scikit-learn traceback at validation (``last.pt`` keeps the previous epoch).
    ``epoch`` and ``step`` count from 1, as the progress bar and card.json do."""
    if not math.isfinite(loss):
        raise DfscanError(f"train: the loss is {loss} at epoch {epoch}, step {step} (diverged): "
                          "lower --lr; the run folder keeps the last finished epoch")


def same_split_as_ae(cfg: "TrainConfig", groups) -> None:
    """Refuse a ``--recon`` autoencoder trained on another split than this run's: its training
    pool held this run's validation people, whose reconstructions then flattered validation.
    Its ``AE.safetensors.json`` says how it split (one written before ``split`` was recorded
    split by the cache's groups); without that file nothing can be checked, and it is said.
    ``groups``: the identities this run splits. The same seed and share split other face
    caches otherwise (another count of people per family moves the cut), so the people split
    must be the same too: one trained on cache A had seen a validation person of a run on A + B."""
    import json

    from .data import identities_sha256

    summary = Path(str(cfg.recon) + ".json")
    if not summary.is_file():
        log.warning("--recon %s: no %s beside it, so whether it saw this run's validation people "
                    "cannot be checked", cfg.recon, summary.name)
        return
    s = json.loads(summary.read_text())
    theirs = (s.get("seed"), s.get("val_share"), s.get("split", "groups"))
    ours = (cfg.seed, cfg.val_share, cfg.split)
    if theirs != ours:
        raise DfscanError(f"--recon {cfg.recon} was trained on another split (seed, val_share, split = "
                          f"{theirs}; this run: {ours}): it has seen this run's validation people; train it "
                          "with the run's --seed (python -m scanner.research.recon), or train without it")
    if "identities_sha256" not in s:  # written before it was recorded
        log.warning("--recon %s: %s does not record the people it split, so whether its face caches "
                    "were this run's cannot be checked", cfg.recon, summary.name)
    elif s["identities_sha256"] != identities_sha256(groups):
        raise DfscanError(f"--recon {cfg.recon} was trained on other face caches than this run's (other "
                          "people, so another split): it may have seen this run's validation people; train it "
                          "on the run's --cache folders (python -m scanner.research.recon), or train without it")
