"""Load Visual-TableQA (hub id, or a local folder: `user`), validate it, turn rows into chats."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

REQUIRED_COLUMNS = ("table_id", "image", "question", "answer")
OPTIONAL_COLUMNS = ("final_answer", "question_type")  # recorded by the synthetic data only
SPLITS = ("train", "validation", "test")

# Text that looks like one of Qwen's control tokens ("<|im_end|>", "<|image_pad|>", ...) must
# stay text. A zero-width space after its first character keeps it visible as written but
# unmatchable as a token.
_ZWSP = "\u200b"
# The added tokens of Qwen2.5-VL-Instruct's tokenizer, used when no tokenizer is at hand; the
# collator passes `control_tokens(tokenizer)` instead, which covers any tokenizer.
QWEN_CONTROL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>")
MIN_IMAGE_SIDE = 28  # one merged patch group (14 px patches, 2x2 merge); smaller sides are refused
MAX_ASPECT_RATIO = 200  # Qwen's smart_resize raises above this long/short side ratio


class DataError(ValueError):
    """The dataset or a sample is unusable; the message says what is wrong and where."""


class ImageError(DataError):
    """An image cannot be used; `kind` names the problem as in `config.DATA_PROBLEMS`."""

    def __init__(self, message: str, kind: str = "image_undecodable"):
        super().__init__(message)
        self.kind = kind


def load_tableqa(dataset_id: str, split: str | None = None, limit: int | None = None):
    """Load the dataset by hub id, or a local folder or file (`user.load_local`), and validate it.

    Returns a DatasetDict (or one split's Dataset when `split` is given), cut to `limit` rows.
    """
    from datasets import load_dataset

    path = Path(dataset_id)
    if (path.is_absolute() or str(dataset_id).startswith(".")) and not path.exists():
        raise DataError(f"no dataset at {dataset_id}: the folder does not exist (for the "
                        f"stand-in, run `python -m tableqa_helpers prepare`)")
    if path.exists():  # the synthetic folder or your own data (`user`: image folder, parquet...)
        from .user import load_local
        ds = load_local(path)
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
        if image.get("bytes") is not None:
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise DataError("image dict has neither 'bytes' nor 'path'")
    if isinstance(image, (bytes, bytearray, memoryview, str, Path)):
        image = open_image(image)
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise DataError(f"cannot read an image from {type(image).__name__}")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"image does not decode ({type(e).__name__}: {e})") from None
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
        return Image.fromarray(arr).convert("RGB")  # 2-D uint8: mode L
    return image.convert("RGB")


def open_image(data: bytes | bytearray | memoryview | str | Path) -> Image.Image:
    """Open raw image bytes or a file, reading only the header (no pixels decoded yet).

    Raises ImageError: "image_undecodable" (zero bytes, unknown format, unreadable file) or
    "image_too_large" (more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``: never decoded).
    """
    try:
        if isinstance(data, (str, Path)):
            data = Path(data).read_bytes()
        data = bytes(data)
    except OSError as e:
        raise ImageError(f"image file cannot be read ({e})") from None
    if not data:
        raise ImageError("image is empty (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"image is a decompression bomb ({e})", "image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"not a readable image ({len(data)} bytes starting {data[:8]!r}: "
                         f"{type(e).__name__})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise ImageError(f"image is {image.width}x{image.height} = {image.width * image.height:,} "
                         f"pixels > PIL's bomb limit {limit:,}", "image_too_large")
    return image


def check_image_size(width: int, height: int) -> None:
    """Raise ImageError when the resize cannot take this size (too small or too elongated)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(f"image is {width}x{height}: a side is shorter than {MIN_IMAGE_SIDE} px",
                         "image_too_small")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"image is {width}x{height}: aspect ratio {ratio:.1f} is over "
                         f"{MAX_ASPECT_RATIO}", "image_aspect_ratio")


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


def control_tokens(tokenizer) -> tuple[str, ...]:
    """Every text the tokenizer turns into a single added token before BPE runs.

    That is its special tokens and all added tokens (special or not, e.g. Qwen's ``<tool_call>``),
    longest first.
    """
    names = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        names.add(getattr(token, "content", str(token)))
    return tuple(sorted((n for n in names if len(n) > 1 and _ZWSP not in n),
                        key=lambda n: (-len(n), n)))


def escape_control_text(text: str, tokens: tuple[str, ...] = QWEN_CONTROL_TOKENS) -> str:
    """Keep text that looks like a control token (``<|im_end|>``, ``<tool_call>``) from becoming one.

    Every ``<|`` and every occurrence of one of `tokens` gets a zero-width space after its first
    character; the text reads the same but no longer matches a token.
    """
    text = text.replace("<|", "<" + _ZWSP + "|")
    others = [t for t in tokens if "<|" not in t]
    changed = True
    while changed:  # overlapping occurrences survive one str.replace pass
        changed = False
        for t in others:
            if t in text:
                text = text.replace(t, t[0] + _ZWSP + t[1:])
                changed = True
    return text


def to_messages(sample: dict, system_prompt: str, with_answer: bool = True,
                tokens: tuple[str, ...] = QWEN_CONTROL_TOKENS) -> list[dict]:
    """Chat messages for one row: system prompt, user turn (image then question), answer.

    `tokens`: texts to escape in the question and answer (`control_tokens(tokenizer)`). Raises
    DataError for a missing or blank question/answer and ImageError for an unusable image.
    """
    where = f"sample {sample.get('table_id', '?')!r}"
    question, answer = sample.get("question"), sample.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: question is missing or empty")
    if with_answer and (not isinstance(answer, str) or not answer.strip()):
        raise DataError(f"{where}: answer is missing or empty")
    if sample.get("image") is None:
        raise DataError(f"{where}: image is missing")
    try:
        image = to_rgb(sample["image"])
        check_image_size(*image.size)
    except ImageError as e:
        raise ImageError(f"{where}: {e}", e.kind) from None
    messages = [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "image", "image": image},
                                     {"type": "text", "text": escape_control_text(question, tokens)}]},
    ]
    if with_answer:
        messages.append({"role": "assistant",
                         "content": [{"type": "text", "text": escape_control_text(answer, tokens)}]})
    return messages
