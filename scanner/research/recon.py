"""Reconstruction fakes: real faces passed through an autoencoder that dfscan trains itself.

Why: whole-frame generators (VASA-1, EMO, AniTalker, ...) leave no blending
boundary, which is all that self-blended and swapped fakes teach. What they
share is that every pixel comes out of a learned convolutional decoder.
Detectors trained on real images against the *same* images reconstructed by an
autoencoder learn the decoder's traces instead of content (Rajan et al.,
"Aligned Datasets Improve Detection of Latent Diffusion-Generated Images",
ICLR 2025; Chen et al., "DRCT", ICML 2024). Those works use the generator's
own autoencoder; none can be downloaded here, so dfscan trains a small one on
its own real training faces (never on validation footage), with nearest
upsampling + convolutions as in latent-diffusion decoders.

``python -m scanner.research.recon --cache C1 C2 --out ae.safetensors`` trains it;
``dfscan train --recon ae.safetensors --p-recon P`` uses it for that share of fakes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.files import write_json, write_safetensors

from ..argtypes import SEED, int_in
from .data import FaceCache, identities_sha256, person_groups, split_groups


class FaceAE(nn.Module):
    """Autoencoder with a ``latent``-channel code at 1/4 resolution.

    Input/output: ``float32 (N, 3, H, W)`` RGB in [0, 1], H and W multiples of 4."""

    def __init__(self, width: int = 48, latent: int = 12):
        super().__init__()
        w = width
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), act(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, latent, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, 2 * w, 3, padding=1), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, 2 * w, 3, padding=1), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1), act(),
            nn.Conv2d(w, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _patches(cache: FaceCache, pool: np.ndarray, n: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``side``-px patches of faces in ``pool``, ``float32 (n, 3, side, side)`` in [0, 1]."""
    s = cache.crops.shape[1]
    out = np.empty((n, side, side, 3), np.uint8)
    for k in range(n):
        i = int(pool[rng.integers(len(pool))])
        y, x = rng.integers(0, s - side + 1, size=2)
        out[k] = cache.crops[i][y:y + side, x:x + side]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def train_ae(cache_dirs, out: str | Path, steps: int = 2000, batch: int = 16, side: int = 96,
             lr: float = 2e-3, seed: int = 0, val_share: float = 0.15, threads: int = 2) -> dict:
    """Train :class:`FaceAE` (L1) on the training identities of the caches (the split of
    ``dfscan train`` with the same seed and ``val_share``, so its held-out people stay unseen);
    writes ``out`` (safetensors) and ``out`` + ``.json``; returns that summary."""

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cache = FaceCache.load(cache_dirs)
    persons = person_groups(cache)
    pool = np.flatnonzero(~split_groups(persons, val_share, seed))  # as dfscan train splits
    model, rng = FaceAE(), np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    t0, losses = time.time(), []
    for step in range(steps):
        x = _patches(cache, pool, batch, side, rng)
        loss = (model(x) - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step}: L1 {np.mean(losses[-200:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    summary = {"what": "FaceAE (scanner.research.recon)", "steps": steps, "batch": batch, "side": side,
               "lr": lr, "seed": seed, "val_share": val_share, "split": "persons", "threads": threads,
               "identities_sha256": identities_sha256(persons),  # the people split (train_checks.same_split_as_ae)
               "cache": [str(c) for c in ([cache_dirs] if isinstance(cache_dirs, (str, Path)) else cache_dirs)],
               "train_faces": int(len(pool)), "final_l1": float(np.mean(losses[-max(1, steps // 10):])),  # last 10 %
               "seconds": round(time.time() - t0, 1)}
    write_json(summary, Path(str(out) + ".json"))
    return summary


def load_ae(path: str | Path) -> FaceAE:
    from engines.registry import read_state_dict

    model = FaceAE()
    model.load_state_dict(read_state_dict(path))
    return model.eval()


@torch.inference_mode()
def reconstruct(crops: np.ndarray, model: FaceAE, batch: int = 32) -> np.ndarray:
    """Every crop through ``model``: ``uint8 (N, S, S, 3)`` in, the same out (rounded, clipped)."""
    out = np.empty(crops.shape, np.uint8)
    for a in range(0, len(crops), batch):
        x = torch.from_numpy(np.array(crops[a:a + batch])).permute(0, 3, 1, 2).float() / 255
        y = model(x).clamp(0, 1).mul(255).round().to(torch.uint8)
        out[a:a + batch] = y.permute(0, 2, 3, 1).numpy()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scanner.research.recon", description=__doc__.split("\n")[0])
    p.add_argument("--cache", nargs="+", required=True, help="face caches (dfscan train --cache-only)")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--steps", type=int_in(1), default=2000)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--threads", type=int_in(1), default=2)
    a = p.parse_args(argv)
    print(json.dumps(train_ae(a.cache, a.out, steps=a.steps, seed=a.seed, threads=a.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
