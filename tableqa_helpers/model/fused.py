"""Fused Triton kernels from liger-kernel for RMSNorm and the SwiGLU MLP, per model instance.

`use_liger_kernels(model)` replaces the ``forward`` of every RMSNorm of the model (decoder layers,
final norm, vision blocks, the merger's norm) with liger's fused RMSNorm, and of every
gate/up/down MLP whose activation is SiLU with liger's fused ``silu(gate) * up`` (the three
projections stay the model's own modules, so LoRA layers on them keep working). Nothing global is
patched (liger's own ``apply_liger_kernel_to_*`` also swaps transformers' classes module-wide).
The functions are the same as transformers' (liger's "llama" casting: the norm in float32, cast
to the input's dtype before the weight); only the kernels change. `use_plain_kernels(model)`
undoes it. The trainer applies it for the length of ``train()`` when ``cfg.fused_kernels`` is
"liger" (`fused_wanted`), like compiled blocks, and `infer.predict` for its generation loop.

Off by default, because it did not pay: on an H100 at the 7B shape, liger's kernels inside
compiled blocks cost 9% in the second epoch (torch.compile could not work out which tensors
liger's Triton kernels write and assumed all of them; bench/RESULTS.md), and compiled blocks
already fuse those element-wise ops. The losses agree with the plain path within bf16 noise (the same
measurement). In generation they paid: batch 64 sorted by length, 3.70 samples/s instead of
3.28 (H100, bench/RESULTS.md run E), for no compilation time. liger-kernel is optional:
"liger" without it, or without a CUDA device, stops with an error that names the missing piece.
"""
from __future__ import annotations

import importlib.util
import types

import torch

_MARK = "_tableqa_liger"  # set on the modules whose forward we replaced


def liger_missing() -> str | None:
    """Why liger's kernels cannot run here (None when they can)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install liger-kernel)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (liger-kernel's kernels are Triton kernels)"
    if not torch.cuda.is_available():
        return "no CUDA device (liger-kernel's Triton kernels run on GPUs only)"
    return None


def fused_wanted(cfg) -> bool:
    """Whether training and `predict` use liger's kernels: ``cfg.fused_kernels`` "liger" (an
    error naming what is missing where they cannot run) or "off"."""
    if cfg.fused_kernels == "off":
        return False
    if missing := liger_missing():
        raise RuntimeError(f"fused_kernels='liger' but {missing}; set fused_kernels='off'")
    return True


def _rms_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction

    # offset 0, llama casting (float32 inside, cast before the weight), gradients not in place
    return LigerRMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon, 0.0,
                                      "llama", False)


def _swiglu_forward(self, x: torch.Tensor) -> torch.Tensor:
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction

    return self.down_proj(LigerSiLUMulFunction.apply(self.gate_proj(x), self.up_proj(x)))


def _is_silu(act) -> bool:
    # torch's nn.SiLU or transformers' SiLUActivation (ACT2FN["silu"]), not subclasses of each other
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def _targets(model) -> list[tuple[torch.nn.Module, object]]:
    out = []
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon"):
            out.append((m, _rms_forward))
        elif all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj")) \
                and _is_silu(getattr(m, "act_fn", None)):
            out.append((m, _swiglu_forward))
    return out


def use_liger_kernels(model) -> int:
    """Route `model`'s RMSNorms and SwiGLU MLPs through liger's kernels; how many modules."""
    n = 0
    for m, fn in _targets(model):
        m.forward = types.MethodType(fn, m)
        setattr(m, _MARK, True)
        n += 1
    return n


def use_plain_kernels(model) -> int:
    """Undo `use_liger_kernels`: the modules' own forward again; how many were changed."""
    n = 0
    for m in model.modules():
        if m.__dict__.pop(_MARK, False):
            m.__dict__.pop("forward", None)
            n += 1
    return n
