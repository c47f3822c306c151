"""Data layer: load Visual-TableQA (hub id or local folder), validate it, turn rows into chats."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REQUIRED_COLUMNS = ("table_id", "image", "question", "answer")
OPTIONAL_COLUMNS = ("final_answer", "question_type")  # recorded by the synthetic data only
SPLITS = ("train", "validation", "test")

# Text that looks like one of Qwen's control tokens ("<|im_end|>", "<|image_pad|>", ...) must
# stay text. A zero-width space after "<" keeps it visible as written but unmatchable as a token.
_ZWSP = "\u200b"


class DataError(ValueError):
    """The dataset or a sample is unusable; the message says what is wrong and where."""


def load_tableqa(dataset_id: str, split: str | None = None, limit: int | None = None):
    """Load the dataset by hub id or local folder with `datasets.load_dataset` and validate it.

    Returns a DatasetDict (or one split's Dataset when `split` is given), cut to `limit` rows.
    """
    from datasets import load_dataset

    path = Path(dataset_id)
    if path.exists() and path.is_dir() and (path / "dataset_dict.json").exists():
        from datasets import load_from_disk
        ds = load_from_disk(str(path))
    else:
        ds = load_dataset(str(dataset_id))
    splits = [split] if split else list(ds.keys())
    for name in splits:
        if name not in ds:
            raise DataError(f"{dataset_id}: no split {name!r}; it has {', '.join(ds.keys())}")
        validate_columns(ds[name], where=f"{dataset_id}[{name}]")
    if split:
        ds = ds[split]
        return ds.select(range(min(limit, len(ds)))) if limit is not None else ds
    if limit is not None:
        for name in list(ds.keys()):
            ds[name] = ds[name].select(range(min(limit, len(ds[name]))))
    return ds


def validate_columns(ds, where: str = "dataset") -> None:
    """Raise DataError naming every required column the dataset lacks."""
    names = list(getattr(ds, "column_names", None) or (ds[0].keys() if len(ds) else []))
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{where} lacks required column(s) {', '.join(missing)}; "
                        f"it has {', '.join(names) or 'none'}; expected {', '.join(REQUIRED_COLUMNS)}")


def to_rgb(image: Any) -> Image.Image:
    """Return an RGB PIL image from any form users meet.

    Accepts PIL images in any mode (RGBA and LA are composited on white; P, L, 1, I;16, I, F,
    CMYK, YCbCr converted), numpy arrays (HxW, HxWx1/3/4; uint8, uint16 or floats in [0, 1]),
    raw bytes, file paths and the ``{"bytes": ..., "path": ...}`` dicts of `datasets`.
    """
    if isinstance(image, dict):
        if image.get("bytes"):
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise DataError("image dict has neither 'bytes' nor 'path'")
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise DataError("image is empty (zero bytes)")
        image = Image.open(io.BytesIO(bytes(image)))
    elif isinstance(image, (str, Path)):
        image = Image.open(image)
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise DataError(f"cannot read an image from {type(image).__name__}")
    image.load()
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return image.convert("RGB")


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise DataError(f"image array must be HxW or HxWx(1|3|4), got shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = (arr / 257).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def escape_control_text(text: str) -> str:
    """Keep text that looks like a special token (``<|im_end|>``) from becoming one."""
    return text.replace("<|", "<" + _ZWSP + "|")


def to_messages(sample: dict, system_prompt: str, with_answer: bool = True) -> list[dict]:
    """Chat messages for one row: system prompt, user turn (image then question), answer."""
    question, answer = sample.get("question"), sample.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"sample {sample.get('table_id', '?')!r}: question is missing or empty")
    messages = [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "image", "image": to_rgb(sample["image"])},
                                     {"type": "text", "text": escape_control_text(question)}]},
    ]
    if with_answer:
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"sample {sample.get('table_id', '?')!r}: answer is missing or empty")
        messages.append({"role": "assistant",
                         "content": [{"type": "text", "text": escape_control_text(answer)}]})
    return messages
