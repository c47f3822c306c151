"""Loading the model and processor the same way for the real checkpoint and the stand-in."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import Config
from ..hardware.cards import flash_attn_usable


def device() -> torch.device:
    """The accelerator if there is one (this process's GPU under `accelerate launch`), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def torch_dtype(cfg: Config) -> torch.dtype:
    """The config's dtype, falling back to float16 where the GPU lacks bf16 and to fp32 on a CPU."""
    want = getattr(torch, cfg.dtype)
    if not torch.cuda.is_available():
        return torch.float32 if want == torch.float16 else want
    if want == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return want


def attention_backend(cfg: Config) -> str:
    """The attention implementation to use: the config's, or flash-attn if usable, else SDPA."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    return "flash_attention_2" if flash_attn_usable() else "sdpa"


def speed_up(model, cfg: Config, backend: str | None = None):
    """Apply the math-preserving speed-ups of `fast` that the config asks for; returns `model`.

    With SDPA (no flash-attn) and ``cfg.vision_attention == "grouped"``, the vision tower's
    windowed attention runs one SDPA call per window length instead of one per window
    (`fast.use_grouped_vision_attention`; installed on this model instance only).
    """
    from ..config import ConfigError
    from .fast import use_grouped_vision_attention

    if cfg.vision_attention not in ("grouped", "stock"):
        raise ConfigError(f"vision_attention must be 'grouped' or 'stock', got {cfg.vision_attention!r}")
    backend = backend or attention_backend(cfg)
    if cfg.vision_attention == "grouped" and backend == "sdpa":
        use_grouped_vision_attention(model)
    return model


def load_processor(cfg: Config, path: str | Path | None = None):
    """AutoProcessor with the config's pixel budget (min/max pixels)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        str(path or cfg.model_id),
        size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels})


def load_model(cfg: Config, path: str | Path | None = None, adapter: str | Path | None = None,
               trainable: bool = False):
    """Qwen2.5-VL from `path` (default: the config's model) in the config's dtype, on the device.

    With `adapter`, a saved PEFT adapter is attached (frozen unless `trainable`). With
    ``cfg.quantize == "4bit"`` the language model's linear weights load in 4 bits (QLoRA;
    `quantize.bnb_config`: bitsandbytes is imported only then).
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    backend = attention_backend(cfg)
    quantized = {}
    if cfg.quantize == "4bit":
        from .quantize import bnb_config
        quantized = {"quantization_config": bnb_config(cfg)}
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path or cfg.model_id), dtype=torch_dtype(cfg),
        attn_implementation=backend, use_safetensors=True,
        device_map={"": str(device())} if torch.cuda.is_available() else None, **quantized)
    speed_up(model, cfg, backend)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    if not trainable:
        model.eval()
    return model
