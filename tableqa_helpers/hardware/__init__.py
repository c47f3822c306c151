"""The GPU plan: card classes (`cards`), batch presets and the compile rule (`presets`), memory
and time estimates (`estimate`), the choices and their report (`plan`); measured on a GPU by
`gpucheck` (``python -m tableqa_helpers.hardware measure|compare``, not imported here).

Part of the configuration layer: `config.get_config` applies the plan, so these modules import
only `config`, `io` and `offline` (the public 7B config values), never the model or training.
"""
from .cards import CARDS, GIB, QUANTIZE, Card, card, detect, flash_attn_usable
from .estimate import (PIXEL_UNIT, Settings, Shape, estimate_memory, estimate_time, fits,
                       flops_per_sample, layer_bytes_per_token, model_config, settings_of, shape_of,
                       vision_block_bytes_per_patch)
from .plan import (PLANNED, Plan, apply_plan, checkpointing_text, choose, format_gpu_plan,
                   format_gpu_table, plan_report, report)
from .presets import GPU_PRESETS, auto_preset, compile_supported, compile_wanted, gpu_preset

__all__ = ["CARDS", "Card", "GIB", "GPU_PRESETS", "PIXEL_UNIT", "PLANNED", "Plan", "QUANTIZE",
           "Settings", "Shape", "apply_plan", "auto_preset", "card", "checkpointing_text", "choose",
           "compile_supported", "compile_wanted", "detect", "estimate_memory", "estimate_time",
           "fits", "flash_attn_usable", "flops_per_sample", "format_gpu_plan", "format_gpu_table",
           "gpu_preset", "layer_bytes_per_token", "model_config", "plan_report", "report",
           "settings_of", "shape_of", "vision_block_bytes_per_patch"]
