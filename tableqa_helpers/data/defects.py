"""Planted defects for tests and demonstrations: `bomb_png` and `plant_defects` (a copy of a
dataset with one row of each problem the checks find).
"""
from __future__ import annotations

import io
import math
import shutil
import struct
import zlib
from pathlib import Path

from .load import load_tableqa
from ..io import atomic_dir
from .checks import _raw


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(pixels: int | None = None) -> bytes:
    """A valid, all-black 1-bit PNG with more pixels than PIL's limit, built without PIL (small)."""
    from PIL import Image

    side = math.isqrt(pixels or (Image.MAX_IMAGE_PIXELS or 89_478_485)) + 64
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def plant_defects(dataset_dir: str | Path, out_dir: str | Path) -> dict[str, list[tuple[str, int]]]:
    """Copy the dataset at `dataset_dir` to `out_dir` with one row per defect kind planted.

    Needs at least 16 train, 2 validation and 3 test rows. Returns problem kind -> sorted
    (split, index) pairs of what was planted, in the form of `DataReport.found()`.
    """
    import datasets
    from PIL import Image

    src = load_tableqa(str(dataset_dir))
    rows = {s: _raw(src[s]).to_list() for s in src}
    planted: dict[str, list[tuple[str, int]]] = {}

    def plant(kind, split, index, **values):
        rows[split][index].update(values)
        planted.setdefault(kind, []).append((split, index))

    def img(data):
        return {"bytes": data, "path": None}

    good = rows["train"][0]["image"]["bytes"]
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(good)).convert("RGB").save(jpeg, format="JPEG", quality=80)
    plant("missing_field", "train", 1, question="")
    plant("missing_field", "train", 2, answer=None)
    plant("missing_field", "train", 3, table_id=None)
    plant("missing_field", "train", 4, image=None)
    plant("missing_field", "validation", 0, answer="   ")
    plant("image_undecodable", "train", 5, image=img(b""))
    plant("image_undecodable", "train", 6, image=img(good[: len(good) // 2]))
    plant("image_undecodable", "train", 7, image=img(jpeg.getvalue()[: len(jpeg.getvalue()) // 2]))
    plant("image_undecodable", "train", 8, image=img(b"%PDF-1.4\n% not an image\n"))
    plant("image_undecodable", "test", 2, image=img(good[:200]))
    plant("image_too_small", "train", 9, image=img(_png(Image.new("RGB", (400, 20), "white"))))
    plant("image_aspect_ratio", "train", 10, image=img(_png(Image.new("RGB", (6000, 28), "white"))))
    plant("image_too_large", "train", 11, image=img(bomb_png()))
    plant("too_long", "train", 12, answer="The total is 1,250 and the mean is 48.25. " * 2500)
    plant("duplicate_table_id", "train", 14, table_id=rows["train"][13]["table_id"])
    plant("split_leak_table_id", "train", 15, table_id=rows["test"][0]["table_id"])
    reencoded = io.BytesIO()  # same pixels, different bytes: found by the pixel digest
    Image.open(io.BytesIO(rows["test"][1]["image"]["bytes"])).save(reencoded, format="PNG",
                                                                     compress_level=9)
    assert reencoded.getvalue() != rows["test"][1]["image"]["bytes"]
    plant("split_leak_image", "validation", 1, image=img(reencoded.getvalue()))

    out_dir = Path(out_dir)
    features = src["train"].features
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for split, items in rows.items():
            columns = {name: [r[name] for r in items] for name in features}
            ds = datasets.Dataset.from_dict(columns, features=_raw(src[split]).features)
            ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        readme = Path(dataset_dir) / "README.md"
        if readme.exists():
            shutil.copy(readme, tmp / "README.md")
    return {k: sorted(v) for k, v in sorted(planted.items())}
