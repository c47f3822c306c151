"""GPU presets (micro-batch, accumulation, checkpointing per card memory) and the compile rule.

`gpu_preset(cfg)` picks micro-batch, accumulation, gradient checkpointing and generation batch
for the card (``cfg.gpu``: "auto" reads the card's memory), keeping the global batch
``batch_size * grad_accum`` at 24 as in the tutorial. Figures behind the presets: bench/RESULTS.md.
`use_expandable_segments()` sets PyTorch's CUDA allocator to expandable segments (unless the user
configured the allocator), since activation sizes change with every sample.
"""
from __future__ import annotations

import torch


# ---- compiled blocks ------------------------------------------------------------------------
def compile_supported(capability: tuple[int, int], quantize: str) -> bool:
    """What ``compile_blocks="auto"`` needs: torch >= 2.5 (before it, dynamo compiles each module
    instance separately), a GPU of compute capability >= 8.0 (Triton's fused kernels) and
    unquantized weights (bitsandbytes' 4-bit layers break the graph)."""
    recent = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)
    return recent and tuple(capability) >= (8, 0) and quantize == "none"


def compile_wanted(cfg, capability: tuple[int, int] | None = None,
                   quantize: str | None = None) -> bool:
    """Whether training compiles the blocks: ``cfg.compile_blocks`` "on", "off", or "auto"
    (`compile_supported` on this machine's GPU, or on a card of `capability` for a plan made
    for another card; `quantize` defaults to ``cfg.quantize``)."""
    if cfg.compile_blocks != "auto":
        return cfg.compile_blocks == "on"
    if capability is None:
        if not torch.cuda.is_available():
            return False
        capability = torch.cuda.get_device_capability()
    return compile_supported(capability, cfg.quantize if quantize is None else quantize)

# True (every decoder/vision block) or n (every n-th block: `train.enable_checkpointing`).
GPU_PRESETS = {
    "80gb": dict(train_a=(1, 24, False), train_b=(1, 24, False), gen_batch_size=32,
                 eval_batch_size=2),
    "40gb": dict(train_a=(1, 24, 2), train_b=(1, 24, 2), gen_batch_size=8,
                 eval_batch_size=1),
    "24gb": dict(train_a=(1, 24, True), train_b=(1, 24, True), gen_batch_size=2,
                 eval_batch_size=1),
    "tutorial": dict(train_a=(3, 8, True), train_b=(3, 8, True), gen_batch_size=8,
                     eval_batch_size=4),
}
GPU_CHOICES = ("auto", "manual", *GPU_PRESETS)  # documentation; gpu_preset reads GPU_PRESETS


def use_expandable_segments() -> bool:
    """Let PyTorch's CUDA allocator grow segments instead of caching odd-sized blocks.

    Every sample has its own length, so activations change size at each micro-batch; with fixed
    segments the cache fragments (64 GiB reserved for 45 GiB in use at the 7B shape). Applied
    only when ``PYTORCH_CUDA_ALLOC_CONF`` (or ``PYTORCH_ALLOC_CONF``) is not set, so a user's
    own setting wins. Process-wide; returns whether it was applied.
    """
    import os

    if not torch.cuda.is_available() or os.environ.get("PYTORCH_CUDA_ALLOC_CONF") \
            or os.environ.get("PYTORCH_ALLOC_CONF"):
        return False
    try:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    except Exception:  # an older or different allocator: keep the default
        return False
    return True


def auto_preset(total_gib: float | None = None) -> str | None:
    """The preset for a card of `total_gib` GiB (default: the current CUDA device); None on CPU."""
    if total_gib is None:
        if not torch.cuda.is_available():
            return None
        total_gib = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    if total_gib >= 70:
        return "80gb"
    if total_gib >= 36:
        return "40gb"
    return "24gb"


def gpu_preset(cfg, tier: str = "a", total_gib: float | None = None) -> dict:
    """Batch settings for `tier` on this card, from ``cfg.gpu``.

    "manual": the config's own batch_size / grad_accum / gradient_checkpointing / batch sizes.
    "auto": a preset chosen by the card's memory ("manual" on a CPU). A preset name: that preset.
    Returns a dict with batch_size, grad_accum, gradient_checkpointing, eval_batch_size,
    gen_batch_size and the preset's name.
    """
    from ..config import ConfigError

    choice = getattr(cfg, "gpu", "manual") or "manual"
    if choice not in ("auto", "manual") and choice not in GPU_PRESETS:
        raise ConfigError(f"gpu must be one of auto, manual, {', '.join(GPU_PRESETS)}, "
                          f"got {choice!r}")
    name = auto_preset(total_gib) if choice == "auto" else choice
    if name in (None, "manual"):
        return dict(preset="manual", batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                    gradient_checkpointing=cfg.gradient_checkpointing,
                    eval_batch_size=cfg.eval_batch_size, gen_batch_size=cfg.gen_batch_size)
    p = GPU_PRESETS[name]
    bs, ga, ckpt = p["train_a" if tier == "a" else "train_b"]
    return dict(preset=name, batch_size=bs, grad_accum=ga, gradient_checkpointing=ckpt,
                eval_batch_size=p["eval_batch_size"], gen_batch_size=p["gen_batch_size"])
