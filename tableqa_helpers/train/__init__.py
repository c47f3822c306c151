"""Training a tier: LoRA targets (`tiers`), the fast loss (`loss`), the Trainer set-up
(`trainer`), the adapter under FSDP2 (`fsdp`), complete checkpoints and the resumable training order (`resume`)."""
from .fsdp import load_trainable_state_dict, trainable_state_dict
from .loss import VisionCache, fast_loss
from .tiers import (apply_tier_a, apply_tier_b, format_plan, lora_modules, meta_model, plan,
                    tier_a_targets, tier_b_targets, trainable_by_component)
from .trainer import (build_trainer, enable_checkpointing, end_distributed, load_log, make_trainer,
                      stage_paths, train_tier)

__all__ = ["VisionCache", "apply_tier_a", "apply_tier_b", "build_trainer", "enable_checkpointing",
           "end_distributed", "fast_loss", "format_plan", "load_log", "load_trainable_state_dict", "lora_modules", "make_trainer",
           "meta_model", "plan", "stage_paths", "tier_a_targets", "tier_b_targets", "train_tier",
           "trainable_by_component", "trainable_state_dict"]
