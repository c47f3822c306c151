"""Training a tier with transformers' Trainer.

transformers' `Trainer` is used rather than TRL's `SFTTrainer`: with vision-language data TRL's
own tokenization, packing and `assistant_only_loss` cannot be used (they raise or truncate image
tokens), so SFTTrainer would only add `enable_input_require_grads` (which makes the frozen
vision tower build a graph and backpropagate) and a processor look-up by model name.

`TableQATrainer.compute_loss` computes exactly the model's own loss (mean cross-entropy over the
labelled tokens of the micro-batch) with two savings that do not change the math:
- the language-model head runs only on labelled positions (not on ~2,700 x 152k logits);
- when the vision tower is frozen (Tier A), its blocks run without autograd and their output
  (before the trainable merger) is kept in a bounded in-memory cache keyed by image content and
  pixel budget, so each image's vision work is done once across epochs and evaluations.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .collate import IGNORE, TrainCollator, count_tokens
from .config import Config, ConfigError
from .data import load_tableqa
from .io import atomic_dir, atomic_write_json


class _GroupPatches(nn.Module):
    """Stands in for the merger: returns the 2x2 patch groups the merger would read."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x.reshape(-1, self.width)


class VisionCache:
    """Frozen vision-block outputs per image, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: str):
        t = self.items.get(key)
        if t is not None:
            self.items.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return t

    def put(self, key: str, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        if size > self.max_bytes or key in self.items:
            return
        while self.bytes + size > self.max_bytes and self.items:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self.items[key] = t
        self.bytes += size


def vision_frozen(model) -> bool:
    """True when nothing in the vision tower before the merger is trainable."""
    return not any(p.requires_grad for n, p in model.named_parameters()
                   if ".visual." in n and ".merger." not in n)


def grouped_vision_features(visual, pixel_values, grid_thw) -> list[torch.Tensor]:
    """Vision-block outputs per image, as the merger's input groups in natural token order."""
    merger = visual.merger
    visual.merger = _GroupPatches(merger.hidden_size)
    try:
        grouped = visual(pixel_values.type(visual.dtype), grid_thw=grid_thw).pooler_output
    finally:
        visual.merger = merger
    sizes = (grid_thw.prod(-1) // visual.spatial_merge_size ** 2).tolist()
    return list(torch.split(grouped, sizes))


def labelled_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, the head applied only there."""
    shift = labels[:, 1:]
    keep = shift != IGNORE
    h = hidden[:, :-1][keep]
    logits = lm_head(h).float()
    return F.cross_entropy(logits, shift[keep], reduction="mean")


def _inner(model):
    """The Qwen2_5_VLForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fast_loss(model, inputs: dict, cache: VisionCache | None = None) -> torch.Tensor:
    """The model's loss on a batch, computed with the savings described in the module doc."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keys = inputs.pop("image_keys", None)
    net = _inner(model)
    visual = net.model.visual
    if vision_frozen(model) and inputs.get("pixel_values") is not None:
        pixel_values, grid = inputs.pop("pixel_values"), inputs["image_grid_thw"]
        groups = _cached_groups(visual, pixel_values, grid, keys, cache)
        merged = [visual.merger(g.to(pixel_values.device, visual.dtype).reshape(
            -1, visual.merger.hidden_size // visual.spatial_merge_size ** 2)) for g in groups]
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=merged)}
    out = net.model(**inputs, use_cache=False)
    return labelled_loss(out.last_hidden_state, labels, net.lm_head)


def _cached_groups(visual, pixel_values, grid, keys, cache):
    sizes = grid.prod(-1).tolist()
    if cache is None or keys is None:
        with torch.no_grad():
            return grouped_vision_features(visual, pixel_values, grid)
    found = [cache.get(k) for k in keys]
    missing = [i for i, t in enumerate(found) if t is None]
    if missing:
        chunks = torch.split(pixel_values, sizes)
        with torch.no_grad():
            fresh = grouped_vision_features(
                visual, torch.cat([chunks[i] for i in missing]), grid[missing])
        for i, t in zip(missing, fresh):
            found[i] = t
            cache.put(keys[i], t.detach().to("cpu", copy=True))
    return found


def _trainer_class():
    from transformers import Trainer

    class TableQATrainer(Trainer):
        """Trainer whose loss is `fast_loss` (same math as the model's loss, less work)."""

        vision_cache: VisionCache | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = fast_loss(model, inputs, self.vision_cache)
            return (loss, (loss,)) if return_outputs else loss

    return TableQATrainer


# ---- the stage -------------------------------------------------------------------------------
def stage_paths(cfg: Config, tier: str) -> dict[str, Path]:
    """Input model, output adapter, checkpoints and log of a tier, all under the run folder."""
    if tier not in ("a", "b"):
        raise ConfigError(f"tier must be 'a' or 'b', got {tier!r}")
    base = Path(cfg.model_id) if tier == "a" else cfg.merged_dir
    out = cfg.tier_a_dir if tier == "a" else cfg.tier_b_dir
    return {"base": base, "out": out, "checkpoints": cfg.run_dir / "checkpoints" / f"tier_{tier}",
            "log": cfg.run_dir / "logs" / f"tier_{tier}.json"}


def filter_long(ds, processor, cfg: Config, where: str = "train"):
    """Drop samples longer than `cfg.max_length` (never truncated through image tokens)."""
    keep = [i for i, row in enumerate(ds.select_columns(["image", "question", "answer"]))
            if count_tokens(processor, row, cfg.system_prompt)["total"] <= cfg.max_length]
    dropped = len(ds) - len(keep)
    if dropped:
        print(f"{where}: dropped {dropped} of {len(ds)} samples longer than max_length="
              f"{cfg.max_length} tokens")
    return ds.select(keep)


def build_trainer(cfg: Config, tier: str, train_ds=None, eval_ds=None):
    """Model with the tier's adapter, data and a configured TableQATrainer, ready to `train()`."""
    from transformers import EarlyStoppingCallback, TrainingArguments

    from .model import load_model, load_processor, torch_dtype
    from .tiers import apply_tier_a, apply_tier_b

    paths = stage_paths(cfg, tier)
    if tier == "b" and not (paths["base"] / "config.json").exists():
        raise ConfigError(f"Tier B trains on the merged model, but {paths['base']} has none: "
                          f"run `merge` (notebook 03) first")
    tier_cfg = cfg.tier_a if tier == "a" else cfg.tier_b
    processor = load_processor(cfg, paths["base"])
    model = load_model(cfg, paths["base"], trainable=True)
    model.config.use_cache = False
    model = apply_tier_a(model, cfg) if tier == "a" else apply_tier_b(model, cfg)
    if train_ds is None or eval_ds is None:
        ds = load_tableqa(cfg.dataset_id)
        train_ds = ds["train"].select(range(min(cfg.train_limit or len(ds["train"]), len(ds["train"]))))
        eval_ds = ds["validation"].select(
            range(min(cfg.eval_limit or len(ds["validation"]), len(ds["validation"]))))
    train_ds = filter_long(train_ds, processor, cfg, "train")
    eval_ds = filter_long(eval_ds, processor, cfg, "validation")
    dtype = torch_dtype(cfg)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(paths["checkpoints"]), num_train_epochs=tier_cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=tier_cfg.lr,
        lr_scheduler_type=cfg.scheduler, warmup_steps=tier_cfg.warmup,  # a float is a fraction
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
        logging_steps=cfg.logging_steps, eval_strategy="steps", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.eval_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False, label_names=["labels"], prediction_loss_only=True,
        dataloader_num_workers=cfg.dataloader_workers, report_to=[], seed=cfg.seed,
        data_seed=cfg.seed, disable_tqdm=False)
    use_cache = tier == "a" and cfg.cache_vision and vision_frozen(model)
    collator = TrainCollator(processor, cfg.system_prompt, cfg.max_length, image_keys=use_cache)
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, processing_class=processor,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)])
    if use_cache:
        trainer.vision_cache = VisionCache(int(cfg.vision_cache_gb * 2 ** 30))
    return trainer


def train_tier(cfg: Config, tier: str = "a", resume: bool = True) -> dict:
    """Train a tier, keep the best checkpoint's adapter in the run folder, save the loss log.

    Re-running after an interruption resumes from the last complete checkpoint when `resume`.
    """
    from transformers.trainer_utils import get_last_checkpoint

    paths = stage_paths(cfg, tier)
    trainer = build_trainer(cfg, tier)
    last = get_last_checkpoint(str(paths["checkpoints"])) if resume and paths["checkpoints"].exists() else None
    result = trainer.train(resume_from_checkpoint=last)
    with atomic_dir(paths["out"]) as tmp:
        trainer.save_model(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        atomic_write_json(tmp / "tableqa_config.json", cfg.to_dict())
    summary = {"tier": tier, "train_loss": result.training_loss, "steps": result.global_step,
               "best_checkpoint": trainer.state.best_model_checkpoint,
               "best_eval_loss": trainer.state.best_metric, "adapter": str(paths["out"]),
               "log_history": trainer.state.log_history}
    atomic_write_json(paths["log"], summary)
    return summary


def load_log(cfg: Config, tier: str) -> dict:
    """The saved training summary and loss log of a tier."""
    path = stage_paths(cfg, tier)["log"]
    if not path.exists():
        raise FileNotFoundError(f"no training log at {path}: train tier {tier} first")
    return json.loads(path.read_text())
