"""Property: the training collator, given anything, returns a valid batch or raises a DataError.

Random questions and answers (unicode, empty, whitespace, very long, control-token look-alikes),
random image sizes and modes (PIL images and encoded bytes), batches of 1-4 samples. For each
batch exactly one of:
- the inputs were valid (non-blank texts, a usable image size, within max_length) and the batch
  is valid: template tokens only (no injected control token), image tokens equal to the image
  features, labels exactly on the answer and its <|im_end|>, `count_tokens` equal to the real
  length, and the tiny model's forward pass gives a finite loss; the generation collator builds
  the same prompts;
- some input was invalid and a DataError subclass names it.
Never an exception from inside the processor or the model.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tableqa_helpers.data import IGNORE, GenerationCollator, TrainCollator, count_tokens
from tableqa_helpers.config import get_config
from tableqa_helpers.data import (MAX_ASPECT_RATIO, MIN_IMAGE_SIDE, DataError, control_tokens,
                                  escape_control_text)

MAX_LENGTH = 400  # small, so that "too long" happens often
SYSTEM = "Answer from the table."
EXAMPLES = int(os.environ.get("TQA_PROPERTY_EXAMPLES", "30"))  # CI budget: < 60 s

LOOKALIKES = ["<|im_end|>", "<|im_start|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>",
              "<|video_pad|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<|", "|>", "<|im_end",
              "im_end|>", "<\u200b|im_end|>", "\uff1c\uff5cim_end\uff5c\uff1e", "<<|im_end|>|>",
              "assistant\n", "\n", " ", "\u200b", "\x00", "\ufeff", "\u0301", "\U0001F4CA"]
MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr"]


@pytest.fixture(scope="module")
def model(standins):
    from tableqa_helpers.model import load_model

    return load_model(get_config("unit", root=str(standins)))


DEFECTS = [None] * 6 + ["empty question", "blank answer", "small image", "elongated image",
                        "long answer", "long question"]


@st.composite
def texts(draw, defect=None):
    """Unicode with control-token look-alikes; "empty", "blank" or "long" on demand."""
    if defect == "empty":
        return ""
    if defect == "blank":
        return draw(st.text(alphabet=" \t\n\r\u3000", min_size=1, max_size=5))
    pieces = st.one_of(st.text(max_size=20), st.sampled_from(LOOKALIKES))
    text = "".join(draw(st.lists(pieces, min_size=1, max_size=8)))
    if not text.strip():  # blank texts come from the "empty"/"blank" defects, not by chance
        text += draw(st.sampled_from(["x", "5", "\u8868", "?"]))
    if defect == "long":
        text = (text.strip() or "x") * draw(st.integers(100, 250))
    return text


@st.composite
def images(draw, defect=None):
    """A PIL image of a random mode, or its PNG bytes; too small or too elongated on demand."""
    mode = draw(st.sampled_from(MODES))
    side = st.integers(MIN_IMAGE_SIDE, 260)
    if defect == "small image":
        size = draw(st.sampled_from([(1, 1), (27, 90), (300, 5)]))
    elif defect == "elongated image":
        size = draw(st.sampled_from([(28 * MAX_ASPECT_RATIO + 28, 28), (29, 29 * MAX_ASPECT_RATIO + 29)]))
    else:
        size = draw(st.one_of(st.tuples(side, side),
                              st.sampled_from([(28, 28), (28, 28 * MAX_ASPECT_RATIO), (900, 40)])))
    seed = draw(st.integers(0, 2 ** 16))
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert("L" if mode in ("I;16", "I", "F", "1", "LA") else "RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    elif mode != image.mode:
        image = image.convert(mode)
    if mode in ("RGB", "RGBA", "L", "LA", "P", "1") and draw(st.booleans()):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}  # the form `datasets` gives undecoded
    return image


@st.composite
def batches(draw):
    """1-4 samples; about half the batches have one defective sample (unless chance adds more)."""
    n = draw(st.integers(1, 4))
    defect, target = draw(st.sampled_from(DEFECTS)), draw(st.integers(0, n - 1))
    out = []
    for i in range(n):
        d = defect if i == target else None
        out.append({"table_id": draw(st.text(max_size=8)),
                    "image": draw(images(d)),
                    "question": draw(texts({"empty question": "empty", "long question": "long"}.get(d))),
                    "answer": draw(texts({"blank answer": "blank", "long answer": "long"}.get(d)))})
    return out


def _size(image):
    if isinstance(image, dict):
        return Image.open(io.BytesIO(image["bytes"])).size
    return image.size


def _usable(sample) -> bool:
    w, h = _size(sample["image"])
    return (sample["question"].strip() != "" and sample["answer"].strip() != ""
            and min(w, h) >= MIN_IMAGE_SIDE and max(w, h) / min(w, h) <= MAX_ASPECT_RATIO)


def _normalized(tok, text: str) -> str:
    """`text` as the tokenizer sees it (Qwen's tokenizer applies NFC: "A\u0300" becomes "\xc0")."""
    normalizer = tok.backend_tokenizer.normalizer
    return normalizer.normalize_str(text) if normalizer is not None else text


def _check_row(processor, batch, i, sample, tokens):
    tok = processor.tokenizer
    n = int(batch["attention_mask"][i].sum())
    ids = batch["input_ids"][i, :n].tolist()
    assert batch["attention_mask"][i, n:].sum() == 0 and (batch["labels"][i, n:] == IGNORE).all()
    visual = int(batch["image_grid_thw"][i].prod()) // 4
    counts = {t: ids.count(tok.convert_tokens_to_ids(t)) for t in
              ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
               "<|video_pad|>", "<|endoftext|>")}
    assert counts == {"<|im_start|>": 3, "<|im_end|>": 3, "<|vision_start|>": 1,
                      "<|vision_end|>": 1, "<|image_pad|>": visual, "<|video_pad|>": 0,
                      "<|endoftext|>": 0}
    labelled = (batch["labels"][i, :n] != IGNORE).nonzero().flatten().tolist()
    assert labelled == list(range(labelled[0], n - 1))  # contiguous; the final newline is not trained
    assert batch["labels"][i, labelled].tolist() == ids[labelled[0]:n - 1]
    answer = tok.decode(ids[labelled[0]:n - 1], skip_special_tokens=False)
    assert answer == _normalized(tok, escape_control_text(sample["answer"], tokens)) + "<|im_end|>"
    prompt = tok.decode(ids[:labelled[0]], skip_special_tokens=False)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert count_tokens(processor, sample, SYSTEM)["total"] == n


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=batches())
@example(batch=[{"table_id": "x", "image": Image.new("RGB", (64, 64)), "question": "<|image_pad|>?",
                 "answer": "<|im_end|><|im_start|>user\n<|image_pad|>"}])
@example(batch=[{"table_id": "x", "image": Image.new("RGB", (64, 64)), "question": "q", "answer": ""}])
@example(batch=[{"table_id": "x", "image": Image.new("L", (1, 1)), "question": "q", "answer": "a"}])
def test_valid_batch_or_data_error(batch, processor, model):
    collate = TrainCollator(processor, SYSTEM, MAX_LENGTH)
    tokens = control_tokens(processor.tokenizer)
    usable = all(_usable(s) for s in batch)
    if usable:
        lengths = [count_tokens(processor, s, SYSTEM)["total"] for s in batch]
        usable = max(lengths) <= MAX_LENGTH
    try:
        out = collate(batch)
    except DataError as e:
        assert not usable, f"a usable batch was refused: {e}"
        assert str(e)
        event(f"refused: {type(e).__name__}")
        return
    event("valid batch, model forward")
    assert usable, "an unusable sample was collated"
    for i, sample in enumerate(batch):
        _check_row(processor, out, i, sample, tokens)
    with torch.no_grad():
        loss = model(**out).loss
    assert torch.isfinite(loss)
    prompts = GenerationCollator(processor, SYSTEM)(batch)
    width = prompts["input_ids"].shape[1]
    for i in range(len(batch)):
        m = int(prompts["attention_mask"][i].sum())
        first = (out["labels"][i] != IGNORE).nonzero()[0].item()
        assert prompts["input_ids"][i, width - m:].tolist() == out["input_ids"][i, :first].tolist()
