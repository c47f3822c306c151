"""Batching chat samples for training (answer-only labels) and for generation (left padding).

Each sample's prompt (system turn, image, question and the assistant header) goes through the
processor, which expands the image into its ``<|image_pad|>`` tokens under the pixel budget. The
answer is tokenized on its own and appended with ``<|im_end|>`` and the template's newline, so
the token sequence is exactly the chat template's rendering of the whole conversation, the
prompt part is exactly what the model sees at inference, and the label mask is exact: only the
answer and its ``<|im_end|>`` are labelled, everything else (system prompt, question, image and
vision tokens, headers, padding) is -100.
"""
from __future__ import annotations

import math

import torch

from .load import DataError, control_tokens, escape_control_text, to_messages, to_rgb

IGNORE = -100


class SampleTooLongError(DataError):
    """A sample has more tokens than the configured maximum length."""


def prompt_text(processor, messages: list[dict]) -> str:
    """The chat template's rendering of the conversation up to the assistant header."""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def visual_tokens(processor, width: int, height: int) -> int:
    """Merged visual tokens an image of this size becomes under the processor's pixel budget."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    h, w = smart_resize(height, width, factor=factor, min_pixels=ip.size["shortest_edge"],
                        max_pixels=ip.size["longest_edge"])
    return (h // factor) * (w // factor)


def count_tokens(processor, sample: dict, system_prompt: str,
                 size: tuple[int, int] | None = None) -> dict:
    """Visual, text and total tokens of a training sample, without decoding the image pixels.

    `size`: the image's (width, height) when known (then `sample["image"]` is not read).
    """
    from PIL import Image

    image = sample.get("image")
    if size is not None:
        width, height = size
    else:
        width, height = image.size if isinstance(image, Image.Image) else to_rgb(image).size
    tok = processor.tokenizer
    tokens = control_tokens(tok)
    messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text",
                 "text": escape_control_text(sample["question"], tokens)}]}]
    prompt = len(tok(prompt_text(processor, messages), add_special_tokens=False)["input_ids"])
    answer = len(tok(escape_control_text(sample["answer"], tokens), add_special_tokens=False)["input_ids"])
    vis = visual_tokens(processor, width, height)
    text = prompt - 1 + answer + 2  # the one <|image_pad|> becomes `vis` tokens; <|im_end|> + newline
    return {"visual": vis, "text": text, "total": vis + text}


class TrainCollator:
    """Collate rows of the dataset into a training batch with answer-only labels.

    `max_length`: samples longer than this raise SampleTooLongError (filter them beforehand with
    `count_tokens`; a sample is never truncated through its image tokens).
    """

    def __init__(self, processor, system_prompt: str, max_length: int | None = None,
                 image_keys: bool = False):
        self.processor = processor
        self.image_keys = image_keys  # add `image_keys` (content hashes) for the vision cache
        self.system_prompt = system_prompt
        self.max_length = max_length
        tok = processor.tokenizer
        self.tokens = control_tokens(tok)  # texts escaped in questions and answers
        self.pad_id = tok.pad_token_id
        self.end_ids = tok.convert_tokens_to_ids(["<|im_end|>"]) + \
            tok("\n", add_special_tokens=False)["input_ids"]

    def encode(self, sample: dict) -> dict:
        """One sample: prompt through the processor, answer appended, labels on the answer only."""
        messages = to_messages(sample, self.system_prompt, with_answer=True, tokens=self.tokens)
        image = messages[1]["content"][0]["image"]
        enc = self.processor(text=[prompt_text(self.processor, messages[:2])], images=[image],
                             return_tensors="pt")
        prompt_ids = enc["input_ids"][0]
        answer = messages[2]["content"][0]["text"]
        answer_ids = self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
        tail = torch.tensor(answer_ids + self.end_ids, dtype=prompt_ids.dtype)
        ids = torch.cat([prompt_ids, tail])
        if self.max_length is not None and len(ids) > self.max_length:
            raise SampleTooLongError(
                f"sample {sample.get('table_id', '?')!r} has {len(ids)} tokens, more than "
                f"max_length={self.max_length}; drop it (check-data does) or raise max_length "
                f"or lower max_pixels")
        labels = torch.full_like(ids, IGNORE)
        n_answer = len(answer_ids) + 1  # the answer and its <|im_end|>; the newline is not trained
        labels[len(prompt_ids):len(prompt_ids) + n_answer] = ids[len(prompt_ids):len(prompt_ids) + n_answer]
        mm = enc.get("mm_token_type_ids")
        mm = torch.cat([mm[0], torch.zeros(len(tail), dtype=mm.dtype)]) if mm is not None else None
        return {"input_ids": ids, "labels": labels, "mm_token_type_ids": mm,
                "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}

    def __call__(self, samples: list[dict]) -> dict:
        encoded = [self.encode(s) for s in samples]
        batch = pad_batch(encoded, self.pad_id, side="right")
        if self.image_keys:
            batch["image_keys"] = [image_key(s["image"], self.processor) for s in samples]
        return batch


def pad_batch(encoded: list[dict], pad_id: int, side: str = "right") -> dict:
    """Pad encoded samples to one length (right for training, left for generation)."""
    width = max(len(e["input_ids"]) for e in encoded)
    n = len(encoded)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    has_labels = "labels" in encoded[0]
    labels = torch.full((n, width), IGNORE, dtype=torch.long) if has_labels else None
    has_mm = encoded[0].get("mm_token_type_ids") is not None
    mm = torch.zeros((n, width), dtype=encoded[0]["mm_token_type_ids"].dtype) if has_mm else None
    for i, e in enumerate(encoded):
        length = len(e["input_ids"])
        sl = slice(0, length) if side == "right" else slice(width - length, width)
        ids[i, sl] = e["input_ids"]
        mask[i, sl] = 1
        if has_labels:
            labels[i, sl] = e["labels"]
        if has_mm:
            mm[i, sl] = e["mm_token_type_ids"]
    batch = {"input_ids": ids, "attention_mask": mask,
             "pixel_values": torch.cat([e["pixel_values"] for e in encoded]),
             "image_grid_thw": torch.cat([e["image_grid_thw"] for e in encoded])}
    if has_labels:
        batch["labels"] = labels
    if has_mm:
        batch["mm_token_type_ids"] = mm
    return batch


class GenerationCollator:
    """Collate rows into a left-padded prompt batch for `generate` (no answer, no labels)."""

    def __init__(self, processor, system_prompt: str):
        self.processor = processor
        self.system_prompt = system_prompt

    def __call__(self, samples: list[dict]) -> dict:
        encoded = []
        tokens = control_tokens(self.processor.tokenizer)
        for s in samples:
            messages = to_messages(s, self.system_prompt, with_answer=False, tokens=tokens)
            enc = self.processor(text=[prompt_text(self.processor, messages)],
                                 images=[messages[1]["content"][0]["image"]], return_tensors="pt")
            encoded.append({"input_ids": enc["input_ids"][0], "pixel_values": enc["pixel_values"],
                            "image_grid_thw": enc["image_grid_thw"],
                            "mm_token_type_ids": enc["mm_token_type_ids"][0]
                            if "mm_token_type_ids" in enc else None})
        return pad_batch(encoded, self.processor.tokenizer.pad_token_id, side="left")


def image_key(image, processor) -> str:
    """A cache key for an image under a pixel budget: content hash + size + budget."""
    import hashlib

    img = to_rgb(image)
    h = hashlib.sha256(img.tobytes())
    ip = processor.image_processor
    h.update(f"{img.size}|{ip.size['shortest_edge']}|{ip.size['longest_edge']}".encode())
    return h.hexdigest()


def batch_visual_tokens(batch: dict, merge: int = 2) -> int:
    """Merged visual tokens in a batch, from its image grids."""
    return int(sum(math.prod(g) for g in batch["image_grid_thw"].tolist()) // (merge * merge))
