"""Growing a mini checkpoint deeper without changing what it computes (block expansion).

The probe in `offline.mini_probe` shows the shipped base reading every cell in order and
finding a row by its name no better than chance (docs/mini-base.md, the tenth day). One
hypothesis is depth: a lookup chains more attention steps (gather the name, find its row,
move along it to the column) than 4 layers leave room for. Pretraining a deeper mini from
scratch costs the whole curriculum again; block expansion (as in LLaMA Pro) keeps what the
base has learnt and adds blocks that start as the identity:

- the language model: copies of its layers, spread evenly (4 -> 6: after layers 1 and 3;
  4 -> 8: after each), each placed after the layer it copies, with zero attention output and
  MLP down projections, so that it adds nothing to the residual stream;
- the vision tower: copies of its last windowed and full-attention blocks appended, zeroed the
  same way (weights and biases), full attention in every second block as in the mini.

The grown model's outputs equal the original's exactly (`tests/test_mini_grow.py`); training
then decides what the new blocks do.
"""
from __future__ import annotations

import copy

import torch


def _zero(*params) -> None:
    for p in params:
        if p is not None:
            torch.nn.init.zeros_(p)


def grow(model, lm_layers: int | None = None, vision_depth: int | None = None):
    """`model` (a Qwen2_5_VLForConditionalGeneration of the mini family), grown in place to
    `lm_layers` language-model layers (at least its own) and `vision_depth`
    vision blocks (its depth plus an even number); None or the current size: unchanged."""
    lm, visual = model.model.language_model, model.model.visual
    text, vision = model.config.text_config, model.config.vision_config
    old = list(lm.layers)
    if lm_layers is not None and lm_layers != len(old):
        if lm_layers < len(old):
            raise ValueError(f"lm_layers must be at least the {len(old)} layers the "
                             f"checkpoint has; got {lm_layers}")
        n, extra, layers = len(old), lm_layers - len(old), []
        for i, layer in enumerate(old):
            layers.append(layer)
            for _ in range((i + 1) * extra // n - i * extra // n):  # spread evenly, deepest last
                twin = copy.deepcopy(layer)
                _zero(twin.self_attn.o_proj.weight, twin.self_attn.o_proj.bias,
                      twin.mlp.down_proj.weight, getattr(twin.mlp.down_proj, "bias", None))
                layers.append(twin)
        for i, layer in enumerate(layers):
            layer.self_attn.layer_idx = i  # the KV cache is indexed by it
        lm.layers = torch.nn.ModuleList(layers)
        text.num_hidden_layers = len(layers)
        text.layer_types = ["full_attention"] * len(layers)
    blocks = list(visual.blocks)
    if vision_depth is not None and vision_depth != len(blocks):
        extra = vision_depth - len(blocks)
        if extra < 0 or extra % 2 or len(blocks) < 2:
            raise ValueError(f"vision_depth must be the checkpoint's {len(blocks)} blocks plus "
                             f"an even number; got {vision_depth}")
        full = set(visual.fullatt_block_indexes)
        last = {i in full: blocks[i] for i in range(len(blocks))}  # the last of either kind
        for j in range(extra):
            twin = copy.deepcopy(last[j % 2 == 1])  # windowed, then full attention
            _zero(twin.attn.proj.weight, twin.attn.proj.bias, twin.mlp.down_proj.weight,
                  twin.mlp.down_proj.bias)
            blocks.append(twin)
        visual.blocks = torch.nn.ModuleList(blocks)
        indexes = sorted(full | set(range(len(blocks) - extra + 1, len(blocks), 2)))
        visual.fullatt_block_indexes = vision.fullatt_block_indexes = indexes
        vision.depth = len(blocks)
    return model
