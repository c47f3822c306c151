"""Peak memory and time per epoch of a training step, from the model's shape and the settings.

Peak memory (`estimate_memory`), per process, in bytes, for one micro-batch of the largest sample
(image tokens = max_pixels / 28^2, plus `PEAK_TEXT_TOKENS` of text, `PEAK_LABELLED_TOKENS` of
them labelled). The terms (c = bytes of the compute dtype, h/i/qd/kv = hidden, MLP, query and
key/value widths of the language model, vh/vi the vision tower's, r the LoRA rank):
- weights: all parameters x c; with 4-bit, the language model's linear weights at 4.127 bits
  (NF4 + double-quantized absmax) and the rest x c;
- LoRA: weights, gradients and AdamW's two moments, all fp32 (PEFT keeps adapters in fp32):
  16 bytes per trainable parameter;
- language-model activations per token and decoder layer, as autograd saves them under the
  Trainer's autocast (the eager terms counted with `torch.autograd.graph.saved_tensors_hooks`
  on a real layer, `tests/test_hardware.py`): 8h (both RMSNorms keep an fp32 copy) + 3c*i
  (gate, up, SiLU output) + 2c*qd + 2c*kv (rotated q, attention output, k, v) + 4*heads
  (log-sum-exp); a compiled layer (`fast.compile_blocks`) keeps 2c*h for its norms and 2c*i for
  its MLP instead. Tier A adds c bytes per LoRA input element (one copy per module with dropout:
  q, k, v, gate, up read h, o reads qd, down reads i; without dropout 2h + i, the others shared)
  and c*r per module, and with dropout a 1-byte mask per input element; the frozen base weights
  save nothing; without checkpointing: layers x that; with it: layers x c*h (block inputs) +
  one eager layer's worth (recomputed during backward; checkpointed layers are not compiled);
- vision: Tier A runs the tower without gradients (a transient of one block's tensors); Tier B
  keeps, per patch and LoRA block, 8vh (RMSNorms) + 8vh (LoRA input copies) + 3c*vi + 4c*vh
  (q, k, v, attention output) + 8 * head_dim (fp32 rotary tables) + ...;
- merger, final norm and input embeddings per token, the loss head on the labelled tokens:
  14 bytes x labelled tokens x vocabulary (bf16 logits, fp32 copy, log-softmax, its gradient);
- 4-bit: twice the largest dequantized weight (i x h x c) as a transient.
Not counted: the CUDA context and allocator slack (`fits` keeps `OVERHEAD_GIB` and `MARGIN`).
Checked against measurements at the 7B shape (`gpucheck.measure`, memory-capped for smaller
cards; docs/gpus.md): within 10% for the T4 (4-bit), L4, A100-40 and 80 GB plans.

Time per epoch (`estimate_time`): model FLOPs per sample (forward of every linear layer and
attention, backward to the inputs through frozen weights, the recomputation of checkpointing,
LoRA, the vision tower's forward, Tier B's vision backward) x samples / the card's achievable
FLOP/s (`CARDS`: datasheet dense peak x a utilisation, measured for the H100 by the benchmark,
assumed for the others; x `QLORA_SPEED` for 4-bit). docs/gpus.md says what was measured.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .cards import GIB, Card


PIXEL_UNIT = 28 * 28
PEAK_TEXT_TOKENS = 400  # system prompt + question + longest answer + template, largest sample
PEAK_LABELLED_TOKENS = 300  # longest answer (+ <|im_end|>) in tokens
MEAN_TEXT_TOKENS = 250  # average text tokens of a sample (for time)
MEAN_IMAGE_FILL = 0.95  # average image tokens / budget on Visual-TableQA (large table images)
TRAIN_ROWS = 6590  # Visual-TableQA train split
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 blocks
QLORA_SPEED = 0.75  # assumed throughput of 4-bit (dequantize per matmul) relative to bf16/fp16
OVERHEAD_GIB = 1.0  # CUDA context, cuBLAS workspace: outside torch's allocator statistics
MARGIN = 1.10  # allocator fragmentation and estimate error
SMALL_CARD_MAX_PIXELS = 1280 * PIXEL_UNIT  # pixel budget on 16 GB / no-bf16 cards
# ---- the model's shape ----------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """What the estimates need of a Qwen2.5-VL config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    v_depth: int
    v_hidden: int
    v_intermediate: int
    v_heads: int
    v_out: int
    patch: int
    merge: int
    temporal: int
    window: int
    full_blocks: int

    @classmethod
    def of(cls, config) -> "Shape":
        t, v = config.text_config, config.vision_config
        head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
        return cls(layers=t.num_hidden_layers, hidden=t.hidden_size,
                   intermediate=t.intermediate_size, heads=t.num_attention_heads,
                   kv_heads=t.num_key_value_heads, head_dim=head_dim, vocab=t.vocab_size,
                   tied=bool(getattr(config, "tie_word_embeddings", False)),
                   v_depth=v.depth, v_hidden=v.hidden_size, v_intermediate=v.intermediate_size,
                   v_heads=v.num_heads, v_out=v.out_hidden_size, patch=v.patch_size,
                   merge=v.spatial_merge_size, temporal=v.temporal_patch_size,
                   window=(v.window_size // v.patch_size) ** 2,
                   full_blocks=len(v.fullatt_block_indexes))

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def merger_width(self) -> int:
        return self.v_hidden * self.merge ** 2

    def layer_linear(self) -> int:
        """Weights of one decoder layer's linear layers (the 4-bit part)."""
        h, i = self.hidden, self.intermediate
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + 3 * h * i

    def params(self) -> dict[str, int]:
        """Parameters by part (what `meta_model` would count)."""
        h, vh, vi, mw = self.hidden, self.v_hidden, self.v_intermediate, self.merger_width
        layer_rest = self.q_dim + 2 * self.kv_dim + 2 * h  # q/k/v biases, two RMSNorms
        block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
        merger = vh + (mw * mw + mw) + (mw * self.v_out + self.v_out)
        patch = 3 * self.temporal * self.patch ** 2 * vh
        out = {"llm_linear": self.layers * self.layer_linear(),
               "llm_other": self.layers * layer_rest + h,
               "embed": self.vocab * h, "lm_head": 0 if self.tied else self.vocab * h,
               "vision": self.v_depth * block + patch + merger}
        out["total"] = sum(out.values())
        return out

    def lora_params(self, tier: str, r: int, last_n: int = 4, include_merger: bool = False) -> int:
        """Trainable LoRA parameters of a tier (the `plan` table's totals)."""
        h, i, qd, kv, mw = self.hidden, self.intermediate, self.q_dim, self.kv_dim, self.merger_width
        merger = r * (2 * mw) + r * (mw + self.v_out)
        if tier == "a":
            per_layer = r * ((h + qd) + 2 * (h + kv) + (qd + h) + 3 * (h + i))
            return self.layers * per_layer + merger
        vh = self.v_hidden
        return last_n * r * ((vh + 3 * vh) + 2 * vh) + (merger if include_merger else 0)


def shape_of(cfg) -> Shape:
    """The `Shape` of the config's model (local config.json, hub cache, or the public 7B values)."""

    return Shape.of(model_config(cfg))


# ---- the settings a plan is about -----------------------------------------------------------
@dataclass
class Settings:
    """The knobs that drive memory and time (from a Config, a GPU preset, or a plan)."""

    tier: str = "a"
    quantize: str = "none"
    dtype_bytes: int = 2
    micro_batch: int = 1
    grad_accum: int = 24
    checkpointing: bool | int = True  # True: every block; n: every n-th block; False: none
    max_pixels: int = 2560 * PIXEL_UNIT
    lora_r: int = 16
    lora_dropout: float = 0.05
    last_n_blocks: int = 4
    include_merger: bool = False
    processes: int = 1
    compiled: bool = False  # decoder layers compiled (fast.compile_blocks): fused, saves less

    @property
    def image_tokens(self) -> int:
        return self.max_pixels // PIXEL_UNIT


def settings_of(cfg, tier: str = "a", preset: dict | None = None) -> Settings:
    """The Settings a config trains `tier` with (`preset`: its resolved GPU preset, if known)."""
    from .presets import compile_wanted, gpu_preset

    preset = preset or gpu_preset(cfg, tier)
    t = cfg.tier_a if tier == "a" else cfg.tier_b
    return Settings(tier=tier, quantize=cfg.quantize,
                    compiled=compile_wanted(cfg),
                    dtype_bytes=4 if cfg.dtype == "float32" else 2,
                    micro_batch=preset["batch_size"], grad_accum=preset["grad_accum"],
                    checkpointing=preset["gradient_checkpointing"], max_pixels=cfg.max_pixels,
                    lora_r=t.r, lora_dropout=t.dropout, last_n_blocks=cfg.tier_b.last_n_blocks,
                    include_merger=cfg.tier_b.include_merger)


# ---- peak memory ----------------------------------------------------------------------------
def layer_bytes_per_token(s: Shape, st: Settings) -> int:
    """Bytes autograd keeps per token for one decoder layer (see the module doc)."""
    c, h, i, qd, kv = st.dtype_bytes, s.hidden, s.intermediate, s.q_dim, s.kv_dim
    # eager: each RMSNorm keeps its float32 copy of the input, the MLP its gate, up and product;
    # compiled (fused), a norm keeps its input in the compute dtype and the product is recomputed
    norms = 2 * c * h if st.compiled else 8 * h
    mlp = (2 if st.compiled else 3) * c * i
    out = norms + mlp + 2 * c * qd + 2 * c * kv + 4 * s.heads + 8
    if st.tier == "a":
        inputs = 5 * h + qd + i  # q, k, v, gate, up read h; o reads qd; down reads i
        # each LoRA module keeps its input in the compute dtype (under autocast PEFT's float32
        # copy is skipped: train._NoLoraInputCast): one per module with dropout; without, q/k/v
        # share one, gate/up another, and o's is the attention output (counted above)
        distinct = inputs if st.lora_dropout > 0 else 2 * h + i
        out += c * distinct + 7 * c * st.lora_r  # + each lora_A output (r wide)
        if st.lora_dropout > 0:
            out += inputs  # the dropout masks (1 byte an element on a GPU)
    return out


def vision_block_bytes_per_patch(s: Shape, st: Settings) -> int:
    """Bytes autograd keeps per patch for one vision block with LoRA on attn.qkv / attn.proj."""
    c, vh, vi = st.dtype_bytes, s.v_hidden, s.v_intermediate
    out = 8 * vh + 8 * vh + 3 * c * vi + 4 * c * vh + 4 * s.v_heads + 2 * 4 * st.lora_r + 8
    out += 8 * (vh // s.v_heads)  # the rotary cos/sin, cast to fp32 in every block
    if st.lora_dropout > 0:
        out += 2 * vh
    return out


def _stack(per_unit: int, units: int, count: int, width_bytes: int, ckpt: bool | int,
           recomputed: int | None = None) -> int:
    """Activations of `units` checkpointable blocks over `count` tokens/patches; `recomputed`:
    per-unit bytes of the block recomputed in the backward pass (default `per_unit`)."""
    if not ckpt:
        return units * per_unit * count
    every = 1 if ckpt is True else int(ckpt)
    kept = -(-units // every)  # checkpointed blocks (0, n, 2n, ...) keep only their input
    again = per_unit if recomputed is None else recomputed
    return (kept * width_bytes + (units - kept) * per_unit + again) * count


def estimate_memory(s: Shape, st: Settings, text_tokens: int = PEAK_TEXT_TOKENS,
                    labelled_tokens: int = PEAK_LABELLED_TOKENS,
                    image_tokens: int | None = None) -> dict[str, int]:
    """Peak memory of one training process, by term, in bytes (see the module doc).

    Defaults: the largest sample (an image filling the budget, `PEAK_TEXT_TOKENS` of text);
    pass a measured sample's counts to compare with a measurement.
    """
    c = st.dtype_bytes
    p = s.params()
    if st.quantize == "4bit":
        weights = math.ceil(p["llm_linear"] * NF4_BITS / 8) + (p["total"] - p["llm_linear"]) * c
    else:
        weights = p["total"] * c
    lora = 16 * s.lora_params(st.tier, st.lora_r, st.last_n_blocks, st.include_merger)
    image_tokens = (st.image_tokens if image_tokens is None else image_tokens) * st.micro_batch
    tokens = image_tokens + text_tokens * st.micro_batch
    patches = image_tokens * s.merge ** 2
    # checkpointed decoder layers run eagerly (fast.compiled_modules): the one recomputed in the
    # backward pass keeps the eager layer's activations
    eager = dataclasses.replace(st, compiled=False)
    llm = _stack(layer_bytes_per_token(s, st), s.layers, tokens, c * s.hidden, st.checkpointing,
                 recomputed=layer_bytes_per_token(s, eager))
    llm += tokens * (4 * s.hidden + c * s.hidden)  # final norm (fp32 copy), input embeddings
    mw = s.merger_width
    if st.tier == "a":
        merger = image_tokens * (4 * mw + c * mw + c * mw)  # ln_q's fp32 copy, GELU, LoRA input
        vision = 0
        vision_transient = patches * (6 * c * s.v_hidden + 3 * c * s.v_intermediate)
    else:
        merger = image_tokens * (4 * mw + c * mw)  # ln_q's fp32 copy, GELU input
        vision = _stack(vision_block_bytes_per_patch(s, st), st.last_n_blocks, patches,
                        c * s.v_hidden, st.checkpointing)
        vision_transient = 0
    head = 14 * labelled_tokens * st.micro_batch * s.vocab
    dequant = 2 * s.intermediate * s.hidden * c if st.quantize == "4bit" else 0
    training = llm + merger + vision + head
    out = {"weights": weights, "lora_and_optimizer": lora, "activations_llm": llm,
           "activations_vision": vision, "activations_merger": merger, "loss_head": head,
           "dequantize": dequant, "vision_forward_transient": vision_transient}
    out["peak"] = weights + lora + dequant + max(training, vision_transient)
    return out


def fits(peak_bytes: int, memory_gib: float) -> bool:
    """True when a peak estimate fits a card with margin (MARGIN) and overhead (OVERHEAD_GIB)."""
    return peak_bytes * MARGIN <= (memory_gib - OVERHEAD_GIB) * GIB


# ---- time -----------------------------------------------------------------------------------
def flops_per_sample(s: Shape, st: Settings, tokens: float | None = None) -> float:
    """Model FLOPs of one training sample (forward, backward to the inputs, recomputation)."""
    image = st.image_tokens * MEAN_IMAGE_FILL
    t = tokens if tokens is not None else image + MEAN_TEXT_TOKENS
    h = s.hidden
    linear = 2 * s.layer_linear() * t
    attention = 2 * t * t * s.q_dim  # QK^T and AV, causal: half of 4 * t^2 * qd
    recompute = 0.0 if not st.checkpointing else (1.0 if st.checkpointing is True
                                                  else 1.0 / int(st.checkpointing))
    llm = s.layers * (linear * (2 + recompute) + attention * (3 + recompute))
    head = 2 * h * s.vocab * PEAK_LABELLED_TOKENS / 2 * 3  # ~half the peak answer, fwd + bwd
    patches = image * s.merge ** 2
    vh, vi = s.v_hidden, s.v_intermediate
    block = 2 * (4 * vh * vh + 3 * vh * vi) * patches
    windows = (s.v_depth - s.full_blocks) * 4 * patches * s.window * vh
    full = s.full_blocks * 4 * patches * patches * vh
    vision = s.v_depth * block + windows + full
    lora = 6 * s.lora_params(st.tier, st.lora_r, st.last_n_blocks) * (t if st.tier == "a" else patches)
    if st.tier == "b":  # backward through the last blocks (+ their recomputation)
        per_block = block + 4 * patches * patches * vh / s.v_depth
        vision += st.last_n_blocks * per_block * (1 + recompute)
    merger = 2 * (s.merger_width ** 2 + s.merger_width * s.v_out) * image * 3
    return float(llm + head + vision + lora + merger)


def estimate_time(s: Shape, st: Settings, card: Card, samples: int = TRAIN_ROWS) -> float:
    """Seconds per epoch of `samples` on `st.processes` cards of this class (an estimate)."""
    speed = card.tflops * 1e12 * (QLORA_SPEED if st.quantize == "4bit" else 1.0)
    scaling = st.processes * (0.9 if st.processes > 1 else 1.0)  # assumed DDP efficiency
    return samples * flops_per_sample(s, st) / (speed * scaling)


def model_config(cfg):
    """The model's config: a local folder or the hub cache; for the 7B, its public values."""
    from transformers import AutoConfig

    from ..config import HUB_MODEL
    from ..offline.standin import qwen25vl_7b_config

    try:
        return AutoConfig.from_pretrained(cfg.model_id, local_files_only=True)
    except Exception:
        if cfg.model_id == HUB_MODEL:
            return qwen25vl_7b_config()  # no download needed: the values are public
        return AutoConfig.from_pretrained(cfg.model_id)
