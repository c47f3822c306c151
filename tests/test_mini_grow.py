"""Block expansion of a mini checkpoint (`offline.mini_grow`): deeper, the same function, and
pretraining continues from it."""
from __future__ import annotations

import random

import pytest
import torch
from PIL import ImageOps

from tableqa_helpers.offline.mini import build_mini_untrained, chat_messages, mini_table
from tableqa_helpers.offline.mini_grow import grow
from tableqa_helpers.offline.render import render_table


def _batch(processor):
    table = mini_table(random.Random(3), 5)
    image = ImageOps.grayscale(render_table(table)).convert("RGB")
    text = processor.apply_chat_template(chat_messages([("Transcribe the title.", "")])[:1],
                                         tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[image], return_tensors="pt")


@torch.no_grad()
def test_grown_model_computes_what_the_original_did(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, processor = build_mini_untrained(seed=0)
    model.eval()
    enc = _batch(processor)
    want = model(**enc).logits
    want_ids = model.generate(**enc, max_new_tokens=6, do_sample=False)
    before = sum(p.numel() for p in model.parameters())
    grow(model, lm_layers=8, vision_depth=6)
    assert model.config.text_config.num_hidden_layers == 8
    assert model.config.vision_config.depth == 6
    assert model.config.vision_config.fullatt_block_indexes == [1, 3, 5]
    assert [layer.self_attn.layer_idx for layer in model.model.language_model.layers] == list(range(8))
    assert sum(p.numel() for p in model.parameters()) > before + 3e6
    assert torch.equal(model(**enc).logits, want)
    # the KV cache sees 8 layers: greedy decoding gives the same tokens
    assert torch.equal(model.generate(**enc, max_new_tokens=6, do_sample=False), want_ids)
    model.save_pretrained(tmp_path / "g")
    again = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "g").eval()
    assert torch.equal(again(**enc).logits, want)


def test_growth_spreads_the_copies_evenly():
    model, _ = build_mini_untrained(seed=0)
    old = list(model.model.language_model.layers)
    grow(model, lm_layers=6)
    layers = model.model.language_model.layers
    assert [layers[i] is old[j] for i, j in ((0, 0), (1, 1), (3, 2), (4, 3))] == [True] * 4
    for i, j in ((2, 1), (5, 3)):  # the copies, after layers 1 and 3
        assert layers[i] is not old[j] and torch.equal(layers[i].self_attn.q_proj.weight,
                                                       old[j].self_attn.q_proj.weight)
        assert not layers[i].mlp.down_proj.weight.any() and not layers[i].self_attn.o_proj.weight.any()


def test_grow_refuses_sizes_it_cannot_reach():
    model, _ = build_mini_untrained(seed=0)
    with pytest.raises(ValueError, match="at least the 4 layers"):
        grow(model, lm_layers=3)
    with pytest.raises(ValueError, match="plus an even number"):
        grow(model, vision_depth=5)
    assert model.config.text_config.num_hidden_layers == 4 and len(model.model.visual.blocks) == 4


def test_pretrain_grows_its_init_and_trains_the_new_blocks(tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tableqa_helpers.train import pretrain as module

    monkeypatch.setattr(module, "reading_accuracy", lambda model, processor, n=64, device="cpu":
                        {"cell_accuracy": 0.0, "examples": []})
    module.pretrain(tmp_path / "a", steps=1, batch_size=1, workers=0, warmup=1, device="cpu")
    with pytest.raises(ValueError, match="needs an init checkpoint"):
        module.pretrain(tmp_path / "x", steps=1, device="cpu", grow_lm_layers=8)
    summary = module.pretrain(tmp_path / "b", steps=2, batch_size=2, workers=0, warmup=1,
                              device="cpu", init=tmp_path / "a", seed=1, grow_lm_layers=8)
    assert summary["grown_to"] == (8, None)
    grown = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "b")
    assert grown.config.text_config.num_hidden_layers == 8
    assert grown.model.language_model.layers[1].self_attn.o_proj.weight.abs().sum() > 0  # trained
    # and a grown checkpoint continues like any other (its depth is not the mini's 4)
    third = module.pretrain(tmp_path / "c", steps=1, batch_size=1, workers=0, warmup=1,
                            device="cpu", init=tmp_path / "b", seed=2)
    assert third["steps"] == 1
