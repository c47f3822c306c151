"""Speed-ups that keep the math: grouped window attention, SDPA kernels, compiled blocks
(and `use_linear_patch_embed`, the patch embedding as one matrix product).

Grouped window attention
------------------------
Qwen2.5-VL's vision tower attends within 8x8-patch windows in 28 of its 32 blocks (and over each
whole image in the other 4). With flash-attn the windows go to one varlen kernel; without it
(SDPA, the default where flash-attn is not installed) transformers launches one SDPA call per
window: ~150 windows per image, so ~12,600 tiny launches and a host sync per block for a
3-image batch. That loop, not arithmetic, is most of the vision tower's time.

`use_grouped_vision_attention(model)` replaces the ``forward`` of each vision attention module
*of that model instance* (nothing global is patched) with one that groups the windows by length
(a table image has at most 4 window lengths: full windows, the right and bottom edges and the
corner), gathers each group into a batch ``(windows, heads, length, head_dim)`` and makes one SDPA
call per group: no padding, no mask, so PyTorch picks its flash kernel. The result is scattered
back into the original token order. Each window still attends only to itself, with the same
scaling and the same rotary embedding (the module's own `apply_rotary_pos_emb_vision`), so the
function is the stock one; only the kernel launches change (numerically equal within the
kernel's rounding; `tests/test_fast.py` compares the two). It works under autograd (Tier B trains
LoRA inside these modules) and on the CPU. `use_stock_vision_attention(model)` undoes it.
`model.load_model` installs it when the attention backend is SDPA and
``cfg.vision_attention == "grouped"`` (the default).

Attention kernels
-----------------
On Hopper, PyTorch's SDPA picks cuDNN attention first. cuDNN builds an execution graph for every
new shape (reported at hundreds of milliseconds), and our shapes change all the time: every sample has
its own length, every image its own window counts, every decoding step one more key. Inside
`sdpa_without_cudnn()` SDPA chooses among the flash, memory-efficient and math kernels instead
(same function, kernel rounding aside). `train.fast_loss` and `infer.generate_batch` use it.

Compiled blocks
---------------
Half of an eager micro-batch's GPU time is small element-wise kernels (float32 RMSNorm, rotary
embedding, SiLU, residual adds, LoRA scaling and dropout), each a separate launch from Python.
`compile_blocks(model)` compiles each decoder layer, and each vision block's MLP and norms, with
`torch.compile` in place ("regional compilation": the layers share one compiled graph, so the
cost is one compilation, not 28, and shapes are made dynamic after the first new length). The
function is the same, fused; `tests/test_fast.py` compares loss and gradients with the eager
step. The first steps pay the compilation (up to about 45 s on an H100). The trainer of
`train.make_trainer` applies it for the length of `train()` where ``cfg.compile_blocks`` says
(`compile_wanted`) and removes it afterwards, also after an error; `uncompile_blocks(model)`
undoes it.

GPU presets and the compile rule (`compile_wanted`) live in `hardware.presets`.
"""
from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VISION_ATTENTION_CLASSES = ("Qwen2_5_VLVisionAttention",)


# ---- SDPA backends ---------------------------------------------------------------------------
def sdpa_without_cudnn():
    """Context in which SDPA does not use cuDNN attention (see the module doc); a no-op on CPU."""
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])


def _packed_gqa_sdpa(stock):
    """SDPA for the language model's attention where one query token (a decoding step) attends
    over the key/value heads directly: each head group's queries become the rows of one
    (batch, kv_heads, group, head_dim) query, so the cache is never copied to every head."""

    def sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        if (groups == 1 or query.shape[2] != 1 or kwargs.get("position_bias") is not None
                or (attention_mask is not None and attention_mask.shape[1] != 1)):
            return stock(module, query, key, value, attention_mask, dropout=dropout,
                         scaling=scaling, **kwargs)
        b, heads, _, dim = query.shape
        out = F.scaled_dot_product_attention(query.reshape(b, heads // groups, groups, dim), key,
                                             value, attn_mask=attention_mask, dropout_p=dropout,
                                             scale=scaling)
        return out.reshape(b, heads, 1, dim).transpose(1, 2).contiguous(), None

    return sdpa


@contextlib.contextmanager
def packed_gqa_decoding(force: bool = False):
    """Context in which decoding steps attend without copying the KV cache to every head.

    Under SDPA with a padding mask, older transformers releases (5.17, the GPU image's) copy
    each key/value head to its group of query heads (`repeat_kv`) at every step: profiled at
    batch 32 on the 7B shape, copy kernels took about 37 of a decoding step's 66 ms of GPU time
    (bench/RESULTS.md). Newer ones (5.25) pack the group into the query instead (`pack_gqa`);
    this does the same where transformers does not, and nothing where it does (force: install
    it anyway, for tests). Same function, eager or compiled (`tests/test_fast.py`). Measured at
    the 7B shape, batch 32: 16 ms of kernels a decoding step on an H100 (run E; 13 ms on an
    H200, run D) instead of 66 ms without it (run C; bench/RESULTS.md). Not thread-safe: it swaps
    transformers' process-wide SDPA entry for the length of the block.
    """
    from transformers.integrations import sdpa_attention
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS as table

    if hasattr(sdpa_attention, "pack_gqa") and not force:
        yield
        return
    local = table._local_mapping
    before = local.get("sdpa")
    table["sdpa"] = _packed_gqa_sdpa(table["sdpa"])
    try:
        yield
    finally:
        if before is None:
            local.pop("sdpa", None)
        else:
            local["sdpa"] = before


# ---- grouped window attention ----------------------------------------------------------------
@dataclass
class _Plan:
    """How to batch the segments of one `cu_seqlens`: token indices per length, inverse order."""

    groups: list  # one (n_segments, length) long tensor of token positions per distinct length
    inverse: torch.Tensor | None  # positions that restore the original token order (None: same)


class _PlanCache:
    """The last few plans, keyed by the identity of the `cu_seqlens` tensor they came from.

    The vision tower hands the very same `cu_seqlens` tensor to every windowed block (and another
    to every full-attention block), so a plan is built once per forward pass, not once per block.
    The tensor itself is kept referenced so its id cannot be reused by another tensor.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self.items: list[tuple[torch.Tensor, _Plan]] = []

    def get(self, cu_seqlens: torch.Tensor, device: torch.device) -> _Plan:
        for tensor, plan in self.items:
            if tensor is cu_seqlens:
                return plan
        plan = build_plan(cu_seqlens, device)
        self.items = [(cu_seqlens, plan)] + self.items[: self.size - 1]
        return plan


_PLANS = _PlanCache()


def build_plan(cu_seqlens: torch.Tensor, device: torch.device) -> _Plan:
    """Group the segments `cu_seqlens` describes by length (one host read of `cu_seqlens`)."""
    bounds = cu_seqlens.tolist()
    by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    groups, order = [], []
    for length in sorted(by_length, reverse=True):
        starts = torch.tensor(by_length[length], dtype=torch.long)
        idx = starts[:, None] + torch.arange(length, dtype=torch.long)[None, :]
        groups.append(idx)
        order.append(idx.reshape(-1))
    perm = torch.cat(order) if order else torch.zeros(0, dtype=torch.long)
    identity = torch.equal(perm, torch.arange(len(perm)))
    inverse = None if identity else torch.argsort(perm).to(device)
    return _Plan(groups=[g.to(device) for g in groups], inverse=inverse)


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                      scale: float, plan: _Plan | None = None) -> torch.Tensor:
    """Block-diagonal attention over packed segments, one SDPA call per distinct segment length.

    `q`, `k`, `v`: (tokens, heads, head_dim); segment i is tokens cu_seqlens[i]:cu_seqlens[i+1].
    Returns (tokens, heads * head_dim) in the input's token order.
    """
    tokens, heads, dim = q.shape
    plan = plan or build_plan(cu_seqlens, q.device)
    outs = []
    for idx in plan.groups:
        if idx.shape[0] == 1 and idx.shape[1] == tokens:  # one segment covering everything
            qi, ki, vi = (t.unsqueeze(0) for t in (q, k, v))
        else:
            qi, ki, vi = q[idx], k[idx], v[idx]  # (segments, length, heads, head_dim)
        o = F.scaled_dot_product_attention(qi.transpose(1, 2), ki.transpose(1, 2),
                                           vi.transpose(1, 2), scale=scale)
        outs.append(o.transpose(1, 2).reshape(-1, heads * dim))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out if plan.inverse is None else out[plan.inverse]


def _grouped_forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                     position_embeddings=None, max_seqlen=None, **kwargs) -> torch.Tensor:
    """Drop-in `forward` for Qwen2_5_VLVisionAttention: same projections and rotary embedding,
    attention grouped by window length (see the module doc)."""
    seq_length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(
        1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    rope = sys.modules[type(self).__module__].apply_rotary_pos_emb_vision
    q, k = rope(q, k, cos, sin)
    plan = _PLANS.get(cu_seqlens, hidden_states.device)
    out = grouped_attention(q, k, v, cu_seqlens, self.scaling, plan)
    return self.proj(out)


def vision_attention_modules(model) -> list:
    """The vision attention modules of a Qwen2.5-VL model (through any PEFT wrapper)."""
    return [m for m in model.modules() if type(m).__name__ in VISION_ATTENTION_CLASSES]


def use_grouped_vision_attention(model) -> int:
    """Install grouped window attention on this model instance; returns the modules changed."""
    mods = vision_attention_modules(model)
    for m in mods:
        m.forward = types.MethodType(_grouped_forward, m)
    return len(mods)


def use_stock_vision_attention(model) -> int:
    """Remove grouped window attention from this model instance (back to transformers' code)."""
    mods = vision_attention_modules(model)
    for m in mods:
        m.__dict__.pop("forward", None)
    return len(mods)


def grouped_vision_attention_active(model) -> bool:
    """True when every vision attention module of the model runs the grouped forward."""
    mods = vision_attention_modules(model)
    return bool(mods) and all("forward" in m.__dict__ for m in mods)


# ---- patch embedding as a matrix product ----------------------------------------------------
def _linear_patch_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    w = self.proj.weight  # (embed, channels, time, patch, patch): kernel == stride, one window
    return hidden_states.to(w.dtype).reshape(-1, w[0].numel()) @ w.reshape(w.shape[0], -1).t()


def use_linear_patch_embed(model) -> int:
    """Run the vision patch embedding (a Conv3d whose kernel is its stride and covers each
    flattened patch exactly) as one matrix product on this instance: the same function and
    weights, without a cuDNN convolution plan for every new number of patches."""
    mods = [m for m in model.modules() if type(m).__name__ == "Qwen2_5_VisionPatchEmbed"]
    for m in mods:
        m.forward = types.MethodType(_linear_patch_forward, m)
    return len(mods)


# ---- compiled blocks ------------------------------------------------------------------------
def _block_modules(model) -> list:
    net = model.get_base_model() if hasattr(model, "get_base_model") else model
    mods = list(net.model.language_model.layers)
    for block in net.model.visual.blocks:  # its attention stays eager (grouped plan on the host)
        mods += [block.norm1, block.norm2, block.mlp]
    return mods


def compiled_modules(model) -> list:
    """The modules `compile_blocks` compiles: decoder layers that are not checkpointed (a layer
    checkpoints inside its own forward, with a `context_fn` that compiled code cannot take), and
    every vision block's MLP and norms."""
    return [m for m in _block_modules(model) if not getattr(m, "gradient_checkpointing", False)]


def compile_blocks(model) -> int:
    """Compile the repeated blocks of `model` in place (see the module doc); returns how many."""
    import torch._dynamo

    uncompile_blocks(model)  # checkpointing may have changed since the last call
    mods = compiled_modules(model)
    # one compiled graph serves every layer; grad / no-grad, eval and dynamic shapes each add
    # an entry, so allow more than the default 8 before dynamo falls back to eager
    conf = torch._dynamo.config
    name = "recompile_limit" if hasattr(conf, "recompile_limit") else "cache_size_limit"
    setattr(conf, name, max(getattr(conf, name), 64))
    for m in mods:
        m.compile()
    return len(mods)


def uncompile_blocks(model) -> int:
    """Run the blocks eagerly again (undoes `compile_blocks`)."""
    mods = [m for m in _block_modules(model) if getattr(m, "_compiled_call_impl", None)]
    for m in mods:
        m._compiled_call_impl = None
    return len(mods)
