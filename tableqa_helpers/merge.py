"""Fold the Tier A adapter into the base weights, check the merge numerically, save it."""
from __future__ import annotations

import dataclasses

import torch

from .config import Config, require_saved
from .io import atomic_dir, atomic_write_json

# Largest relative logit difference (max |merged - adapter| / max |adapter|) accepted per dtype:
# fp32 merging only reorders sums; half precision rounds the merged weights once.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def verification_batch(cfg: Config, processor, n: int = 2) -> dict:
    """A real batch of `n` validation samples with answers, for comparing logits."""
    from .data.collate import TrainCollator
    from .data.load import load_tableqa

    rows = load_tableqa(cfg.dataset_id, "validation", limit=n)
    batch = TrainCollator(processor, cfg.system_prompt)([rows[i] for i in range(len(rows))])
    batch.pop("labels")
    return batch


def logits_difference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict:
    """Max and mean absolute difference over real (unpadded) positions, and max relative."""
    keep = mask.bool()
    a, b = a[keep].float(), b[keep].float()
    diff = (a - b).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "max_rel": (diff.max() / a.abs().max().clamp_min(1e-12)).item()}


@torch.no_grad()
def merge_tier_a(cfg: Config) -> dict:
    """Merge the Tier A adapter into the base model and save it to `cfg.merged_dir`.

    Compares the merged model's logits with the adapter model's on a validation batch and
    refuses to save when they differ by more than `TOLERANCE` for the dtype.
    """
    from .model.load import device, load_model, load_processor

    require_saved(cfg.tier_a_dir, "adapter", "train tier a (notebook 02) first")
    processor = load_processor(cfg, cfg.tier_a_dir)
    # merge into full-precision weights even when Tier A trained on a 4-bit (QLoRA) base
    full = dataclasses.replace(cfg, quantize="none")
    model = load_model(full, cfg.model_id, adapter=cfg.tier_a_dir)
    batch = {k: v.to(device()) for k, v in verification_batch(cfg, processor).items()}
    before = model(**batch).logits
    merged = model.merge_and_unload()
    after = merged(**batch).logits
    dtype = next(merged.parameters()).dtype
    report = {**logits_difference(before, after, batch["attention_mask"]),
              "dtype": str(dtype), "tolerance_rel": TOLERANCE[dtype], "samples": len(before)}
    report["ok"] = report["max_rel"] <= report["tolerance_rel"]
    if not report["ok"]:
        raise RuntimeError(f"merged logits differ from the adapter's beyond tolerance: {report}")
    with atomic_dir(cfg.merged_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        atomic_write_json(tmp / "merge_report.json", report)
    atomic_write_json(cfg.run_dir / "logs" / "merge.json", report)
    return report
