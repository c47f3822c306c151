"""The glyph stage of mini-base pretraining: dense labels that match the ink, and a stage that
trains the vision tower alone."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tableqa_helpers.offline.glyphs import CHARS, GlyphCollator, GlyphSet, draw_glyphs


def test_glyph_labels_sit_where_the_ink_is():
    for i in range(6):
        image, label = draw_glyphs(random.Random(f"t/{i}"), i)
        w, h = image.size
        assert w % 28 == 0 and h % 28 == 0 and label.shape == ((w // 28) * (h // 28), len(CHARS))
        ink = (np.asarray(image.convert("L")) < 250).reshape(h // 28, 28, w // 28, 28).any((1, 3))
        labelled = (label.view(h // 28, w // 28, -1).sum(-1) > 0).numpy()
        assert labelled.sum() >= 10  # a page full of strings
        # a label sits where its glyph's box is centred: on ink, but for a stray accent mark
        assert (labelled & ~ink).sum() <= max(1, 0.02 * labelled.sum())
        assert labelled.sum() >= 0.4 * ink.sum()  # the rest hold a glyph's edge


def test_glyph_set_is_deterministic_and_collates():
    from tableqa_helpers.offline.mini import build_mini_untrained, pixel_values

    a, b = GlyphSet(4, seed=3), GlyphSet(4, seed=3)
    assert torch.equal(a[2]["glyphs"], b[2]["glyphs"]) and a[2]["image"].tobytes() == b[2]["image"].tobytes()
    assert a[2]["image"].tobytes() != GlyphSet(4, seed=4)[2]["image"].tobytes()
    _, proc = build_mini_untrained(0)
    batch = pixel_values(GlyphCollator(proc)([a[0], a[1]]), proc.image_processor, "cpu")
    tokens = int((batch["image_grid_thw"].prod(-1) // 4).sum())
    assert batch["glyph_labels"].shape == (tokens, len(CHARS))
    assert torch.equal(batch["glyph_labels"], torch.cat([a[0]["glyphs"], a[1]["glyphs"]]))


def test_glyph_stage_trains_the_vision_tower_alone(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tableqa_helpers.offline.mini import build_mini_untrained
    from tableqa_helpers.train.pretrain import pretrain

    summary = pretrain(tmp_path / "g", steps=3, batch_size=2, workers=0, warmup=1,
                       eval_every=2, device="cpu", stage="glyphs")
    assert summary["stage"] == "glyphs" and 0 <= summary["glyph_recall"] <= 1
    assert [e["step"] for e in summary["log"] if "glyph_recall" in e] == [2]
    fresh, _ = build_mini_untrained(0)
    saved = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "g", dtype=torch.float32)
    new, old = dict(saved.named_parameters()), dict(fresh.named_parameters())
    vision = [n for n in new if ".visual." in f".{n}"]
    assert vision and all(n in old for n in new)
    changed = {n for n in new if not torch.equal(new[n], old[n].to(torch.bfloat16).float())}
    assert changed and changed <= set(vision)  # the language model is the fresh one


def test_glyph_labels_follow_the_processors_token_order():
    """Label row t is merged token t of the processor's patches (rows 4t..4t+3 of pixel_values):
    almost every labelled token holds a glyph's worth of ink there, and the same labels with
    the columns or the rows mirrored (another token order) often land on next to none."""
    from tableqa_helpers.offline.mini import build_mini_untrained

    _, proc = build_mini_untrained(0)
    for i in range(3):
        sample = GlyphSet(3, seed=5)[i]
        w, h = sample["image"].size
        ref = GlyphCollator(proc).processor_batch([sample])  # the processor's own patches
        dark = (ref["pixel_values"] < 1.0).view(-1, 4 * ref["pixel_values"].shape[-1]).sum(-1)
        labelled = sample["glyphs"].sum(-1) > 0
        assert dark.shape == labelled.shape

        def faint(mask):  # share of the labelled tokens with little ink (of 4 x 1176 values)
            return ((dark < 60) & mask).sum().item() / mask.sum().item()

        grid = labelled.view(h // 28, w // 28)
        assert faint(labelled) <= 0.03
        assert faint(grid.flip(1).reshape(-1)) >= 0.1 and faint(grid.flip(0).reshape(-1)) >= 0.1
