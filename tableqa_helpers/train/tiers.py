"""Which weights each tier trains: LoRA target patterns, parameter counts, and the `plan` table.

Tier A: LoRA on the language model's q/k/v/o/gate/up/down projections and on the two linear
layers of the vision-language merger (``model.visual.merger.mlp.0`` and ``.2``); nothing in the
vision tower. Targets are explicit regular expressions over full module names: bare names such
as ``gate_proj`` would also hit every vision block's MLP (the tutorial's defect).

Tier B: on the merged model, LoRA on ``attn.qkv`` and ``attn.proj`` of the last N vision blocks
only (blocks discovered from the model), optionally the merger too. No adapter exists anywhere
else, so nothing is carried frozen.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch

from ..config import Config, ConfigError, TierConfig
from ..hardware.estimate import model_config  # noqa: F401  (the plan reads it too)

# The tutorial's Tier A target list, kept to show what it really hits.
SEED_TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "multi_modal_projector"]
LLM_PATTERN = r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
MERGER_PATTERN = r"model\.visual\.merger\.mlp\.(0|2)"
_BLOCK = re.compile(r"(?:^|\.)visual\.blocks\.(\d+)\.")


def vision_block_indices(model) -> list[int]:
    """Indices of the vision tower's blocks, discovered from the module names."""
    found = {int(m.group(1)) for name, _ in model.named_modules() if (m := _BLOCK.search(name))}
    if not found:
        raise ValueError("no vision blocks (model.visual.blocks.N) found in this model")
    return sorted(found)


def tier_a_targets(seed_targets: bool = False) -> str | list[str]:
    """PEFT `target_modules` for Tier A: explicit patterns, or the tutorial's bare names."""
    if seed_targets:
        return list(SEED_TARGETS)
    return f"({LLM_PATTERN}|{MERGER_PATTERN})"


def tier_b_targets(model, last_n: int = 4, include_merger: bool = False) -> str:
    """PEFT `target_modules` for Tier B: attn.qkv/attn.proj of the last `last_n` vision blocks."""
    blocks = vision_block_indices(model)
    if last_n > len(blocks):
        raise ConfigError(f"tier_b.last_n_blocks={last_n} but the vision tower has only "
                         f"{len(blocks)} blocks")
    chosen = "|".join(str(i) for i in blocks[-last_n:])
    pattern = rf"model\.visual\.blocks\.({chosen})\.attn\.(qkv|proj)"
    return f"({pattern}|{MERGER_PATTERN})" if include_merger else pattern


def lora_config(tier: TierConfig, targets):
    from peft import LoraConfig

    return LoraConfig(r=tier.r, lora_alpha=tier.alpha, lora_dropout=tier.dropout, bias="none",
                      target_modules=targets, task_type="CAUSAL_LM")


def apply_tier_a(model, cfg: Config):
    """Wrap `model` with the Tier A LoRA adapter (everything else frozen)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(cfg.tier_a, tier_a_targets(cfg.tier_a.seed_targets)))


def apply_tier_b(model, cfg: Config):
    """Wrap the merged `model` with the Tier B LoRA adapter (everything else frozen)."""
    from peft import get_peft_model

    targets = tier_b_targets(model, cfg.tier_b.last_n_blocks, cfg.tier_b.include_merger)
    return get_peft_model(model, lora_config(cfg.tier_b, targets))


def component(name: str) -> str:
    """The component a parameter belongs to: language model, merger, vision block N, ..."""
    if ".visual.merger." in f".{name}":
        return "merger"
    m = _BLOCK.search(name)
    if m:
        return f"vision block {int(m.group(1))}"
    if ".visual." in f".{name}":
        return "vision (other)"
    if "language_model" in name:
        return "language model"
    if "lm_head" in name:
        return "lm_head"
    return "other"


def trainable_by_component(model) -> "OrderedDict[str, int]":
    """Trainable parameters per component, vision blocks in index order, with a total."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            counts[component(name)] = counts.get(component(name), 0) + p.numel()

    def order(key: str):
        m = re.match(r"vision block (\d+)", key)
        return (1, int(m.group(1)), key) if m else (0 if key == "language model" else 2, 0, key)

    out = OrderedDict((k, counts[k]) for k in sorted(counts, key=order))
    out["total"] = sum(counts.values())
    return out


def lora_modules(model) -> list[str]:
    """Names of the modules that carry a LoRA adapter (without PEFT's wrapper prefix)."""
    names = []
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A")) > 0:
            names.append(name.removeprefix("base_model.model."))
    return names


# ---- plan: counts from the config alone, on the meta device ---------------------------------
def meta_model(config):
    """Instantiate the model on the meta device: shapes only, nothing allocated or downloaded."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)


def plan(cfg: Config, tiers: tuple[str, ...] = ("a", "b")) -> dict[str, "OrderedDict[str, int]"]:
    """Trainable parameters by component for each tier, computed on the meta device."""
    import warnings

    config = model_config(cfg)
    out = {}
    for tier in tiers:
        model = meta_model(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = apply_tier_a(model, cfg) if tier == "a" else apply_tier_b(model, cfg)
        out[tier] = trainable_by_component(wrapped)
    return out


def format_plan(counts: "OrderedDict[str, int]", title: str = "") -> str:
    """A plain-text table of a tier's trainable parameters by component."""
    width = max(len(k) for k in counts)
    lines = [title] if title else []
    lines += [f"{'component':<{width}}  {'trainable':>12}", f"{'-' * width}  {'-' * 12}"]
    for k, v in counts.items():
        if k == "total":
            lines.append(f"{'-' * width}  {'-' * 12}")
        lines.append(f"{k:<{width}}  {v:>12,}")
    return "\n".join(lines)
