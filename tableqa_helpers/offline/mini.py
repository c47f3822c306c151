"""Pretraining the mini base: a small Qwen2.5-VL that can read tables but knows no QA format.

The curriculum ("reading school") has four stages. `offline.glyphs`: the vision tower alone
learns glyphs from dense per-token labels. `LineSet`: a few strings of a table drawn on a page,
transcribed top to bottom (the language model learns to read with those glyphs).
`ReadingSet`: one synthetic table rendered in grayscale and a chat of several reading turns
(the whole table, the title, the header, a row, a column, one cell, the row names, the
legend's text...), plus plain-text documents from the stand-in corpus so the language model
knows the words; the `names` stage adds turns whose answers repeat the row and column names the
instruction gives, so that the model learns to carry names from the text into its answer, and
the `sentences` stage turns answered by a sentence (the names inside, the value after them). It
never sees a question of Visual-TableQA's kind, a
step-by-step answer or a colour: Tier A teaches the former, Tier B the latter.

The training loop is `tableqa_helpers.train.pretrain` (it needs the model layer's fast vision
attention); this module holds what it trains on and the model it starts from. Not imported by
`tableqa_helpers.offline` itself, as it needs torch at import time.
"""
from __future__ import annotations

import random

import torch
from PIL import Image, ImageDraw, ImageOps

from .dataset import corpus_sentences
from .questions import _join
from .render import dejavu_font, render_table, title_text
from .tables import MINI_TOKENS, TABLE_SHAPES, cell_texts, header_text, make_table

# The mini base's shape: the 7B's module tree, scaled down (head_dim 80 in the vision tower as
# in the 7B; windowed blocks 0 and 2, full attention in 1 and 3).
MINI = dict(
    text=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
              rope_theta=1e6, mrope_section=[8, 12, 12], initializer_range=0.1),
    vision=dict(depth=4, hidden_size=160, intermediate_size=640, num_heads=2, out_hidden_size=256,
                fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, tokens_per_second=2, in_chans=3),
)
TABLE = TABLE_SHAPES["mini"]  # the mini's tables
MIN_TOKENS, MAX_TOKENS = MINI_TOKENS


def mini_table(rng: random.Random, index: int) -> dict:
    """A synthetic table of the mini's size (`TABLE`); index: its table_id."""
    return make_table(rng, index, **TABLE)


def reading_turns(table: dict, rng: random.Random, k: int, names: bool = False,
                  sentences: bool = False) -> list[tuple[str, str]]:
    """`k` (instruction, transcription) pairs about `table`, as the reading curriculum asks.

    names: add turns whose answers repeat the row and column names the instruction gives
    (the `names` stage): one named cell with its names, and one column's cells of two named rows.
    sentences: add turns answered by a sentence (the `sentences` stage, `_sentence_turn`).
    """
    header, body, totals = cell_texts(table)
    rows, ncols = table["rows"], len(table["columns"])
    out = []
    kinds = ["cell"] * 4 + ["row"] * 2 + ["column"] * 2 + ["table", "header", "keys", "title"]
    kinds += ["legend"] if table["legend"] else []
    kinds += ["totals"] if totals else []
    kinds += ["groups"] if table["groups"] else []
    kinds += ["named_cell"] * 3 + ["two_rows"] * 3 if names else []
    kinds += ["said_cell"] * 4 + ["said_pair"] * 2 + ["said_table"] if sentences else []
    for kind in rng.sample(kinds, min(k, len(kinds))):
        r, c = rng.randrange(len(rows)), rng.randrange(ncols)
        if kind.startswith("said_"):
            out.append(_sentence_turn(table, body, kind, r, c, rng))
            continue
        if kind in ("named_cell", "two_rows"):  # the column as the header draws it, or its name
            col = rng.choice((header_text(table, c), table["columns"][c]["name"]))
        if kind == "named_cell":
            out.append((f"Transcribe the {col} of {rows[r]['key']}, with the row and the column.",
                        f"{rows[r]['key']}, {col}: {body[r][c + 1]}"))
        elif kind == "two_rows":
            a, b = rng.sample(range(len(rows)), 2)
            out.append((f"Transcribe the {col} cells of {rows[a]['key']} and {rows[b]['key']}.",
                        f"{rows[a]['key']}: {body[a][c + 1]}; {rows[b]['key']}: {body[b][c + 1]}"))
        elif kind == "cell":
            out.append((f"Transcribe the cell at row {rows[r]['key']}, column {header_text(table, c)}.",
                        body[r][c + 1]))
        elif kind == "row":
            out.append((f"Transcribe the row of {rows[r]['key']}.", " | ".join(body[r])))
        elif kind == "column":
            out.append((f"Transcribe the column {header_text(table, c)}, top to bottom.",
                        "; ".join(f"{row[0]}: {row[c + 1]}" for row in body)))
        elif kind == "table":  # the densest turn: every cell, in reading order
            lines = [header] + body + ([totals] if totals else [])
            out.append(("Transcribe the table, one row per line.",
                        "\n".join(" | ".join(line) for line in lines)))
        elif kind == "header":
            out.append(("Transcribe the header row.", " | ".join(header)))
        elif kind == "keys":
            out.append((f"List the entries of the {table['key_name']} column.",
                        ", ".join(row[0] for row in body)))
        elif kind == "title":
            out.append(("Transcribe the title.", title_text(table)))
        elif kind == "legend":
            out.append(("Transcribe the legend's labels.", "; ".join(m for _, m in table["legend"])))
        elif kind == "totals":
            out.append(("Transcribe the Total row.", " | ".join(t for t in totals if t)))
        elif kind == "groups":
            out.append(("List the row groups.", ", ".join(table["groups"])))
    return out


def _sentence_turn(table: dict, body: list[list[str]], kind: str, r: int, c: int,
                   rng: random.Random) -> tuple[str, str]:
    """A reading turn answered by a sentence: the instruction's names come back inside it and
    the value read from the image after them, so that reading is not tied to answers that are
    bare transcriptions. Still no question of Visual-TableQA's kind, no steps, no colour."""
    rows, cols = table["rows"], table["columns"]
    col = rng.choice((header_text(table, c), cols[c]["name"]))
    key, group = rows[r]["key"], rows[r]["group"]
    if kind == "said_cell":
        where = f"in the {group} group" if group else f"in row {r + 1}"
        return rng.choice((
            (f"Read the {col} of {key} and say it in a sentence.",
             f"{key} is {where}, and its {col} cell reads {body[r][c + 1]}."),
            (f"In a sentence, say what the table gives as the {col} of {key}.",
             f"For {key}, the table gives {body[r][c + 1]} under {col}.")))
    if kind == "said_pair":
        a, b = rng.sample(range(len(rows)), 2)
        return (f"Say in a sentence what the {col} cells of {rows[a]['key']} and "
                f"{rows[b]['key']} read.",
                f"Under {col}, {rows[a]['key']} reads {body[a][c + 1]} and {rows[b]['key']} "
                f"reads {body[b][c + 1]}.")
    columns = _join([column["name"] for column in cols])
    return ("Say in a sentence what the table is about.",
            f"Under the title \"{table['title']}\", it gives the {columns} of {len(rows)} "
            f"{table['plural'] if len(rows) > 1 else table['singular']}.")


class ReadingSet(torch.utils.data.Dataset):
    """Sample i of the curriculum depends only on (seed, i): the same data on any machine."""

    def __init__(self, n: int, seed: int = 0, text_fraction: float = 0.2, turns: int = 6,
                 names: bool = False, sentences: bool = False):
        self.n, self.seed, self.text_fraction, self.turns = n, seed, text_fraction, turns
        self.names = names  # the `names` stage's turns too (`reading_turns`)
        self.said = sentences  # and the `sentences` stage's
        self.sentences = corpus_sentences(4000, seed=seed + 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(f"mini-pretrain/{self.seed}/{i}")
        if rng.random() < self.text_fraction:
            start = rng.randrange(len(self.sentences) - 8)
            return {"text": " ".join(self.sentences[start:start + rng.randint(3, 8)])}
        table = mini_table(rng, i)
        image = ImageOps.grayscale(render_table(table)).convert("RGB")
        return {"image": image, "turns": reading_turns(table, rng, rng.randint(2, self.turns),
                                                      names=self.names, sentences=self.said)}


LINES_ASK = "Transcribe the text, top to bottom."


def draw_lines(rng: random.Random, index: int) -> tuple[Image.Image, list[str]]:
    """A white page with 1 to 3 strings of a mini table (row keys, values, column headers) drawn
    at random places in 16- to 40-pixel DejaVu, and the strings top to bottom.

    index: the table's number (its table_id), as `make_table` takes it.
    """
    header, body, _ = cell_texts(mini_table(rng, index))
    pool = [c for row in body for c in row] + header
    width, height = rng.choice((224, 280, 336, 392, 448)), rng.choice((224, 280, 336))
    page = Image.new("L", (width, height), 255)
    draw, texts, y = ImageDraw.Draw(page), [], rng.randint(4, 24)
    for text in rng.sample(pool, rng.randint(1, 3)):
        family, face = rng.choice(("serif", "sans")), rng.choice(("regular", "bold"))
        size = rng.randint(16, 40)
        size = min(size, int(size * (width - 8) / dejavu_font(family, face, size).getlength(text)))
        font = dejavu_font(family, face, size)  # as large as drawn, or as large as fits the width
        if size < 12 or y + size * 1.3 > height:
            break
        draw.text((rng.uniform(4, max(4, width - 4 - font.getlength(text))), y), text, fill=0,
                  font=font)
        texts.append(text)
        y += round(size * rng.uniform(1.4, 2.5))
    return page.convert("RGB"), texts


class LineSet(torch.utils.data.Dataset):
    """The first school stage: a few strings on a page, transcribed top to bottom. Sample i
    depends only on (seed, i). A fresh mini learns to read here before it meets whole tables."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image, texts = draw_lines(random.Random(f"mini-lines/{self.seed}/{i}"), i)
        return {"image": image, "turns": [(LINES_ASK, "\n".join(texts))]}


def chat_messages(turns: list[tuple[str, str]]) -> list[dict]:
    """A chat whose first user turn carries the image, then one user/assistant pair per turn."""
    msgs = []
    for j, (ask, answer) in enumerate(turns):
        content = ([{"type": "image"}] if j == 0 else []) + [{"type": "text", "text": ask}]
        msgs += [{"role": "user", "content": content},
                 {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return msgs


class ReadingCollator:
    """Batches of reading chats and text documents; labels on every assistant turn and text token.

    The images leave the collator resized but still 8-bit (``images_u8``, 1/8 of the bytes of
    ``pixel_values``): `pixel_values` turns them into the processor's patches on the training
    device, so DataLoader workers do not spend their time copying float32 patches between
    processes. `processor_batch` is the same batch made by the processor in one call (the
    reference `tests/test_pretrain_mini.py` and the first training step compare against).
    """

    def __init__(self, processor):
        self.processor = processor
        tok = processor.tokenizer
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.image_token = processor.image_token
        self.assistant = tok("assistant\n", add_special_tokens=False)["input_ids"]

    def _labels(self, ids: list[int], chat: bool) -> list[int]:
        if not chat:
            return list(ids)
        labels, inside, i = [-100] * len(ids), False, 0
        n = len(self.assistant)
        while i < len(ids):
            if ids[i] == self.im_start and ids[i + 1:i + 1 + n] == self.assistant:
                i += 1 + n
                inside = True
                continue
            if inside:
                labels[i] = ids[i]
                if ids[i] == self.im_end:
                    inside = False
            i += 1
        return labels

    def _texts(self, samples: list[dict]) -> tuple[list[str], list, list[bool]]:
        texts, images, chat = [], [], []
        for s in samples:
            if "image" in s:
                texts.append(self.processor.apply_chat_template(chat_messages(s["turns"]),
                                                                tokenize=False))
                images.append(s["image"])
            else:
                texts.append(s["text"] + "<|endoftext|>")
            chat.append("image" in s)
        return texts, images, chat

    def _finish(self, enc: dict, chat: list[bool]) -> dict:
        ids = enc["input_ids"].tolist()
        lab = torch.tensor([self._labels(row, c) for row, c in zip(ids, chat)])
        lab[enc["attention_mask"] == 0] = -100
        return {**enc, "labels": lab}

    def processor_batch(self, samples: list[dict]) -> dict:
        """The batch as the processor makes it (float32 ``pixel_values`` on the CPU)."""
        texts, images, chat = self._texts(samples)
        enc = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return self._finish(dict(enc), chat)

    def __call__(self, samples: list[dict]) -> dict:
        texts, images, chat = self._texts(samples)
        u8 = [resize_u8(self.processor.image_processor, im) for im in images]
        for j, (i, im) in enumerate(zip([i for i, c in enumerate(chat) if c], u8)):
            n = (im.shape[1] // 28) * (im.shape[2] // 28)  # merged tokens of the image
            texts[i] = texts[i].replace(self.image_token, self.image_token * n, 1)
        enc = dict(self.processor.tokenizer(texts, padding=True, return_tensors="pt"))
        enc["mm_token_type_ids"] = (enc["input_ids"] == self.processor.tokenizer.convert_tokens_to_ids(
            self.image_token)).long()
        if u8:
            enc["image_grid_thw"] = torch.tensor([[1, im.shape[1] // 14, im.shape[2] // 14]
                                                  for im in u8])
            enc["images_u8"] = u8
        return self._finish(enc, chat)


def resize_u8(image_processor, image) -> torch.Tensor:
    """`image` (PIL, RGB) resized as the Qwen2-VL processor resizes it, as a (3, H, W) uint8 tensor."""
    import numpy as np
    from torchvision.transforms.v2 import functional as F
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    size = image_processor.size
    h, w = smart_resize(x.shape[1], x.shape[2], factor=28, min_pixels=size["shortest_edge"],
                        max_pixels=size["longest_edge"])
    return F.resize(x, [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)


def pixel_values(batch: dict, image_processor, device) -> dict:
    """`batch` with ``images_u8`` replaced by the processor's ``pixel_values``, on `device`."""
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
             for k, v in batch.items()}
    images = batch.pop("images_u8", None)
    if images is None:
        return batch
    mean = torch.tensor(image_processor.image_mean, device=device).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std, device=device).view(3, 1, 1)
    scale = image_processor.rescale_factor
    patches = []
    for im in images:
        x = (im.to(device, non_blocking=True).float() - mean / scale) / (std / scale)
        c, h, w = x.shape  # the processor's patchify: 2x2 merge groups, patch, time doubled
        x = x.reshape(c, h // 28, 2, 14, w // 28, 2, 14).permute(1, 4, 2, 5, 0, 3, 6)
        x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, 2, -1, -1)
        patches.append(x.reshape((h // 14) * (w // 14), c * 2 * 14 * 14))
    batch["pixel_values"] = torch.cat(patches)
    return batch


def build_mini_untrained(seed: int = 0, min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS,
                         shape: dict | None = None):
    """(model, processor) of the mini shape with fresh weights (deterministic in `seed`).

    shape: another shape dict like `MINI` (for experiments such as bench/reading_onset.py).
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from .standin import build_processor, make_config, token_ids

    processor = build_processor(min_pixels=min_tokens * 784, max_pixels=max_tokens * 784)
    tok = processor.tokenizer
    config = make_config(shape or MINI, token_ids(tok), vocab_size=len(tok))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).to(torch.float32), processor


@torch.no_grad()
def reading_accuracy(model, processor, n: int = 64, seed: int = 10 ** 6, device="cpu") -> dict:
    """Greedy transcription of one cell per held-out table: share exactly right, and examples."""
    rng = random.Random(f"mini-eval/{seed}")
    right, shown = 0, []
    model.eval()
    for i in range(n):
        table = mini_table(rng, seed + i)
        image = ImageOps.grayscale(render_table(table)).convert("RGB")
        ask, want = _cell_turn(table, rng)
        got = generate_answer(model, processor, image, ask, device, max_new_tokens=24)
        right += got == want
        if len(shown) < 6:
            shown.append((ask, want, got))
    model.train()
    return {"cell_accuracy": right / n, "examples": shown}


@torch.no_grad()
def lines_accuracy(model, processor, n: int = 64, seed: int = 10 ** 6, device="cpu") -> dict:
    """Greedy transcription of `n` held-out pages of `draw_lines`: share exactly right, examples."""
    rng, right, shown = random.Random(f"mini-lines-eval/{seed}"), 0, []
    model.eval()
    for i in range(n):
        image, texts = draw_lines(rng, seed + i)
        got = generate_answer(model, processor, image, LINES_ASK, device, max_new_tokens=48)
        right += got == "\n".join(texts)
        if len(shown) < 6:
            shown.append((LINES_ASK, "\n".join(texts), got))
    model.train()
    return {"line_accuracy": right / n, "examples": shown}


def generate_answer(model, processor, image, ask: str, device, max_new_tokens: int) -> str:
    """The model's greedy answer (stripped) to `ask` about `image`, as a one-turn chat."""
    msgs = chat_messages([(ask, "")])[:1]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=[image], return_tensors="pt").to(device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=processor.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:],
                                      skip_special_tokens=True).strip()


def _cell_turn(table: dict, rng: random.Random) -> tuple[str, str]:
    _, body, _ = cell_texts(table)
    r, c = rng.randrange(len(table["rows"])), rng.randrange(len(table["columns"]))
    return (f"Transcribe the cell at row {table['rows'][r]['key']}, column {header_text(table, c)}.",
            body[r][c + 1])
