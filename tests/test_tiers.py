"""Each tier trains exactly what it says; the 7B counts come from the meta device."""
import re

import pytest

from tableqa_helpers.config import get_config
from tableqa_helpers.train import apply_tier_a, apply_tier_b, lora_modules, plan, trainable_by_component
from tableqa_helpers.train.tiers import vision_block_indices


def test_7b_counts_on_the_meta_device():
    cfg = get_config("full")
    counts = plan(cfg)
    assert counts["a"]["total"] == 40_673_280
    assert counts["a"]["merger"] == 303_104
    assert counts["a"]["language model"] == 40_370_176
    assert counts["b"]["total"] == 245_760
    assert [k for k in counts["b"] if k != "total"] == [f"vision block {i}" for i in (28, 29, 30, 31)]
    cfg.tier_a.seed_targets = True
    seed = plan(cfg, ("a",))["a"]
    assert seed["total"] == 47_589_376
    assert sum(v for k, v in seed.items() if k.startswith("vision")) == 7_219_200
    assert "merger" not in seed  # "multi_modal_projector" matches nothing


def test_plan_allocates_nothing():
    from tableqa_helpers.train import meta_model
    from tableqa_helpers.offline import qwen25vl_7b_config

    model = meta_model(qwen25vl_7b_config())
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.fixture
def model(tiny_cfg):
    from tableqa_helpers.model import load_model

    return load_model(tiny_cfg, trainable=True)


def test_tier_a_targets(model, tiny_cfg):
    wrapped = apply_tier_a(model, tiny_cfg)
    for name, p in wrapped.named_parameters():
        if ".visual." in name and ".merger." not in name:
            assert not p.requires_grad, name
        if p.requires_grad:
            assert "lora_" in name, name
    carrying = set(lora_modules(wrapped))
    layers = model.config.text_config.num_hidden_layers
    expected = {f"model.language_model.layers.{i}.{m}" for i in range(layers) for m in
                ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    expected |= {"model.visual.merger.mlp.0", "model.visual.merger.mlp.2"}
    assert carrying == expected


def test_seed_targets_hit_the_vision_tower(model, tiny_cfg):
    tiny_cfg.tier_a.seed_targets = True
    wrapped = apply_tier_a(model, tiny_cfg)
    hit = [n for n in lora_modules(wrapped) if ".visual." in n]
    assert hit and all(re.search(r"visual\.blocks\.\d+\.mlp\.", n) for n in hit)
    assert not any("merger" in n for n in lora_modules(wrapped))


@pytest.mark.parametrize("last_n, merger", [(2, False), (1, True)])
def test_tier_b_targets(model, tiny_cfg, last_n, merger):
    tiny_cfg.tier_b.last_n_blocks, tiny_cfg.tier_b.include_merger = last_n, merger
    blocks = vision_block_indices(model)
    wrapped = apply_tier_b(model, tiny_cfg)
    expected = {f"model.visual.blocks.{i}.attn.{m}" for i in blocks[-last_n:] for m in ("qkv", "proj")}
    if merger:
        expected |= {"model.visual.merger.mlp.0", "model.visual.merger.mlp.2"}
    assert set(lora_modules(wrapped)) == expected
    counts = trainable_by_component(wrapped)
    assert all(k.startswith("vision block") or k in ("merger", "total") for k in counts)
    assert counts["total"] == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def test_tier_b_rejects_too_many_blocks(model, tiny_cfg):
    tiny_cfg.tier_b.last_n_blocks = len(vision_block_indices(model)) + 1
    with pytest.raises(ValueError, match="only"):
        apply_tier_b(model, tiny_cfg)
