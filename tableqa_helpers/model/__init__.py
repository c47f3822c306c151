"""The model: loading it and its processor the same way for the real checkpoint and the stand-in
(`load`), 4-bit QLoRA settings (`quantize`), and speed-ups that keep the math (`fast`)."""
from ..hardware.cards import flash_attn_usable
from .load import attention_backend, device, load_model, load_processor, speed_up, torch_dtype

__all__ = ["attention_backend", "device", "flash_attn_usable", "load_model", "load_processor",
           "speed_up", "torch_dtype"]
