"""The mini base's first school stage: the vision tower learns glyphs from dense labels.

A fresh vision tower learns to see characters only slowly through the language model's
answer (one answer per page, and the answer depends on reading several characters in order).
Here every merged 28x28 token of a page full of strings is labelled with the characters whose
centres fall in it, and a linear head on the merger's output is trained with binary
cross-entropy. The head is thrown away afterwards; the vision tower keeps what it learned,
and the later stages (`offline.mini.LineSet`, `offline.mini.ReadingSet`) teach the language
model to read with it. Measured in docs/mini-base.md.

Pages have sides that are multiples of 28 inside the mini's pixel budget, so the processor
does not resize them and the labels stay aligned with the tokens.
"""
from __future__ import annotations

import random
import string

import torch
from PIL import Image, ImageDraw

from .mini import ReadingCollator, mini_table, pixel_values
from .render import dejavu_font
from .tables import cell_texts

CHARS = string.digits + string.ascii_letters + string.punctuation  # one label each
GLYPH_ASK = "Read."  # a placeholder turn: the glyph stage trains no language model


def draw_glyphs(rng: random.Random, index: int) -> tuple[Image.Image, torch.Tensor]:
    """A page filled with lines of strings and its labels, (tokens, len(CHARS)) multi-hot in
    the processor's merged-token order (row by row).

    Half the strings are a mini table's texts (index: its table_id), half random characters;
    14- to 34-pixel DejaVu serif or sans, regular or bold.
    """
    header, body, _ = cell_texts(mini_table(rng, index))
    pool = [c for row in body for c in row] + header
    width, height = rng.choice((224, 280, 336, 392, 448)), rng.choice((224, 280, 336))
    page = Image.new("L", (width, height), 255)
    draw, label = ImageDraw.Draw(page), torch.zeros(height // 28, width // 28, len(CHARS))
    y = rng.uniform(0, 16)
    while True:
        font = dejavu_font(rng.choice(("serif", "sans")), rng.choice(("regular", "bold")),
                           rng.randrange(14, 35))
        if y + font.size * 1.25 > height:
            break
        x = rng.uniform(0, 40)
        for _ in range(rng.randint(1, 4)):
            text = (rng.choice(pool) if rng.random() < 0.5 else
                    "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 8))))
            for ch in text:
                advance = font.getlength(ch)
                if x + advance > width - 2:
                    break
                if ch != " ":
                    draw.text((x, y), ch, fill=0, font=font)
                    left, top, right, bottom = draw.textbbox((x, y), ch, font=font)
                    row = min(height // 28 - 1, int((top + bottom) / 2 // 28))
                    col = min(width // 28 - 1, int((left + right) / 2 // 28))
                    label[row, col, CHARS.index(ch)] = 1
                x += advance
            x += rng.uniform(8, 40)
        y += font.size * rng.uniform(1.25, 2.0)
    return page.convert("RGB"), label.view(-1, len(CHARS))


class GlyphSet(torch.utils.data.Dataset):
    """Glyph pages; sample i depends only on (seed, i)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image, label = draw_glyphs(random.Random(f"mini-glyphs/{self.seed}/{i}"), i)
        return {"image": image, "turns": [(GLYPH_ASK, "")], "glyphs": label}


class GlyphCollator(ReadingCollator):
    """`ReadingCollator`'s batch plus ``glyph_labels``: the pages' labels, concatenated."""

    def __call__(self, samples: list[dict]) -> dict:
        batch = super().__call__(samples)
        batch["glyph_labels"] = torch.cat([s["glyphs"] for s in samples])
        return batch


def glyph_head(model) -> torch.nn.Linear:
    """The linear head from the merger's output to one logit per character (float32 weights)."""
    return torch.nn.Linear(model.config.vision_config.out_hidden_size, len(CHARS))


def glyph_loss(model, head, batch: dict, stats: bool = False) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy of `head` on the vision tower's merged tokens (positives weighted
    10: a token holds one or two of 94 characters), and with `stats` the recall and
    false-positive rate at logit 0 (they wait for the GPU, so training leaves them off)."""
    feats = model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
    logits, label = head(feats.float()), batch["glyph_labels"].to(feats.device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), label, pos_weight=torch.tensor(10.0, device=feats.device))
    if not stats:
        return loss, {}
    with torch.no_grad():
        hit, pos = logits > 0, label > 0
        stats = {"glyph_recall": hit[pos].float().mean().item(),
                 "glyph_false_positive": hit[~pos].float().mean().item()}
    return loss, stats


@torch.no_grad()
def glyph_accuracy(model, head, processor, n: int = 64, seed: int = 10 ** 6, device="cpu") -> dict:
    """Recall and false-positive rate of the glyph labels on `n` held-out pages."""
    collate, data = GlyphCollator(processor), GlyphSet(seed + n, seed=seed)  # pages seed.. seed+n
    model.eval()
    batch = pixel_values(collate([data[seed + i] for i in range(n)]), processor.image_processor,
                         device)
    _, stats = glyph_loss(model, head, batch, stats=True)
    model.train()
    return {k: round(v, 4) for k, v in stats.items()}
