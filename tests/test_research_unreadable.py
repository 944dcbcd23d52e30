"""A file named .jpg that is no image is skipped with a reason by separability / probe fit
(embed_items) and by synth, as an unreadable video is: it was a PIL traceback."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.errors import DfscanError
from scanner.research.features import CropConfig, CropSource, Embedder, embed_items, read_rgb
from scanner.research.labelled import Item

DATA = Path(__file__).parent / "data" / "mesonet"


def test_read_rgb_refuses_garbage(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image" * 8)
    with pytest.raises(DfscanError, match="unreadable image"):
        read_rgb(bad)


def test_embed_items_skips_unreadable_image(tmp_path):
    from engines.spec import InputSpec

    good = tmp_path / "good.jpg"
    shutil.copy(next((DATA / "real").glob("*.jpg")), good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    lm = np.array([[30, 40], [70, 40], [50, 55], [35, 75], [65, 75]], np.float32)
    items = [Item(good, 0, "g", landmarks=lm), Item(bad, 1, "b", landmarks=lm)]
    spec = InputSpec(size=32)
    emb = Embedder("k", spec, lambda x: x.mean(dim=(2, 3)))
    fs = embed_items(items, emb, CropSource(CropConfig()), None)
    assert fs.X.shape == (1, 3) and fs.y.tolist() == [0]
    assert fs.skipped[0][0] == str(bad) and "unreadable image" in fs.skipped[0][1]


def test_read_rgb_applies_the_exif_orientation(tmp_path):
    """A photo stored sideways with an orientation tag (as phones write) was read sideways."""
    from PIL import Image

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # white on the stored left
    ex = Image.Exif()
    ex[0x0112] = 6  # turn 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "p.png", exif=ex.tobytes())
    out = read_rgb(tmp_path / "p.png")
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # the stored left is on top once turned
