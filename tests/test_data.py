"""The data layer: any image form to RGB, column validation, chats, real gallery images."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tableqa_helpers.data import TrainCollator, count_tokens
from tableqa_helpers.data.collate import visual_tokens
from tableqa_helpers.data import DataError, load_tableqa, to_messages, to_rgb, validate_columns

from conftest import GALLERY


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


base = Image.new("RGB", (40, 30), (200, 30, 30))
FORMS = {
    "RGB": base,
    "RGBA": base.convert("RGBA"),
    "P": base.convert("P"),
    "L": base.convert("L"),
    "1": base.convert("1"),
    "I;16": Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)),
    "I": base.convert("I"),
    "F": base.convert("F"),
    "CMYK": base.convert("CMYK"),
    "LA": base.convert("LA"),
    "YCbCr": base.convert("YCbCr"),
    "array uint8 HxWx3": np.asarray(base),
    "array uint8 HxW": np.asarray(base.convert("L")),
    "array HxWx4": np.asarray(base.convert("RGBA")),
    "array float 0-1": np.asarray(base, dtype=np.float32) / 255,
    "array uint16": np.full((30, 40), 65535, dtype=np.uint16),
    "array bool": np.ones((30, 40), dtype=bool),
    "bytes": _png_bytes(base),
    "datasets dict": {"bytes": _png_bytes(base), "path": None},
}


@pytest.mark.parametrize("name", list(FORMS))
def test_to_rgb_accepts_every_form(name):
    out = to_rgb(FORMS[name])
    assert out.mode == "RGB" and out.size == (40, 30)


def test_to_rgb_paths_and_transparency(tmp_path):
    path = tmp_path / "t.png"
    base.save(path)
    assert to_rgb(str(path)).mode == "RGB" and to_rgb(path).size == (40, 30)
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white paper


@pytest.mark.parametrize("bad", [b"", b"not an image", 3.5, np.zeros((2, 2, 7))])
def test_to_rgb_rejects_clearly(bad):
    with pytest.raises((DataError, OSError, ValueError)):
        to_rgb(bad)


def test_missing_columns_are_named():
    from datasets import Dataset

    ds = Dataset.from_dict({"table_id": ["x"], "question": ["q"]})
    with pytest.raises(DataError, match=r"image, answer"):
        validate_columns(ds, "mine")


def test_synthetic_data_loads_like_the_hub_dataset(standins):
    from tableqa_helpers.config import get_config

    ds = load_tableqa(get_config("unit", root=str(standins)).dataset_id)
    assert set(ds) == {"train", "validation", "test"}
    row = ds["train"][0]
    assert isinstance(row["image"], Image.Image)
    assert {"table_id", "image", "question", "answer"} <= set(row)
    messages = to_messages(row, "sys")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"][0]["type"] == "image"


def test_optional_columns_may_be_absent(processor, dataset):
    rows = dataset["train"].remove_columns(["final_answer", "question_type"]).select(range(2))
    batch = TrainCollator(processor, "sys")([rows[0], rows[1]])
    assert batch["input_ids"].shape[0] == 2


gallery = sorted(Path(GALLERY).glob("*.png")) if os.path.isdir(GALLERY) else []


@pytest.mark.skipif(not gallery, reason="../shared/data/visual_tableqa_gallery is absent")
def test_real_gallery_images_through_preprocessing():
    from tableqa_helpers.offline import build_processor

    processor = build_processor()  # the real pixel budget: 256..2560 tokens of 28x28 px
    collate = TrainCollator(processor, "Answer from the table.")
    tokens = []
    for path in gallery:
        sample = {"table_id": path.stem, "image": Image.open(path),
                  "question": "What is the value in the first row?",
                  "answer": "The first row shows 12. Therefore, the final answer is 12."}
        enc = collate.encode(sample)
        n = count_tokens(processor, sample, "Answer from the table.")
        assert n["total"] == len(enc["input_ids"])
        image = to_rgb(sample["image"])
        assert n["visual"] == visual_tokens(processor, *image.size) == int(enc["image_grid_thw"].prod()) // 4
        tokens.append(n["visual"])
    # real tables mostly hit the cap of 2,560 merged tokens
    assert 256 <= min(tokens) and max(tokens) <= 2560
    assert np.mean(tokens) > 1500


def test_a_folder_rewritten_in_place_loads_its_new_rows(tmp_path):
    """`datasets` names a local folder's cache after its card and folder name only; the loader
    must not hand back the old rows after the files are rewritten (a new synthetic dataset)."""
    import pandas as pd

    from tableqa_helpers.data import load_tableqa
    from tableqa_helpers.offline import make_synthetic_dataset

    folder = tmp_path / "data"
    make_synthetic_dataset(folder, train=3, validation=1, test=1, seed=0)
    first = load_tableqa(str(folder), "train")["question"]
    make_synthetic_dataset(folder, train=3, validation=1, test=1, seed=1)
    on_disk = pd.read_parquet(next((folder / "data").glob("train-*.parquet")))["question"].tolist()
    assert on_disk != first
    assert load_tableqa(str(folder), "train")["question"] == on_disk
    single = tmp_path / "test.parquet"  # one file, rewritten in place
    pd.read_parquet(folder / "data" / "test-00000-of-00001.parquet").to_parquet(single)
    before = load_tableqa(str(single), "test")["question"]
    pd.read_parquet(folder / "data" / "train-00000-of-00001.parquet").to_parquet(single)
    assert load_tableqa(str(single), "test")["question"] == on_disk != before
