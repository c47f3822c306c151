"""The GPU plan: detect the card, choose precision / quantization / batch preset / pixel budget,
and estimate peak memory and time per epoch. Every choice can be overridden.

Choices (`choose`), by card class (memory as torch reports it, GiB):
- <= 17 GiB (T4, P100, ...) or no native bf16 (compute capability < 8.0): 4-bit QLoRA
  (bitsandbytes NF4 with double quantization; the language model's linear layers only, the
  vision tower and the head stay in the compute dtype), fp16 compute where bf16 is not native,
  gradient checkpointing, and a smaller pixel budget (`SMALL_CARD_MAX_PIXELS`) to keep an epoch
  within a session's reach;
- 17-36 GiB (L4, A10G, RTX 4090/3090): bf16 LoRA with gradient checkpointing when the estimate
  fits, else 4-bit QLoRA;
- 36-70 GiB (A100 40GB, A6000): bf16 LoRA with checkpointing (preset "40gb");
- >= 70 GiB (A100/H100 80GB): bf16 LoRA without checkpointing (preset "80gb").
A choice whose estimate does not fit steps down: checkpointing, then 4-bit, then half the pixels.

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
import os
from dataclasses import dataclass, field
from typing import Any

GIB = 2 ** 30
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
QUANTIZE = ("none", "4bit")


@dataclass(frozen=True)
class Card:
    """A GPU class: memory as torch reports it, native bf16, flash-attn 2 support, speed."""

    name: str
    label: str
    memory_gib: float
    capability: tuple[int, int]
    peak_tflops: float  # datasheet dense bf16 (fp16 without bf16) tensor FLOP/s, in TFLOP/s
    utilisation: float  # assumed fraction of the peak a LoRA step achieves (an assumption)

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    @property
    def flash_attn(self) -> bool:  # flash-attn 2 needs Ampere or newer
        return self.capability >= (8, 0)

    @property
    def tflops(self) -> float:
        return self.peak_tflops * self.utilisation


# Card classes the plan knows (Colab, Kaggle, common clouds). Utilisation: the H100's is the
# measured Tier A epoch-1 MFU of bench/RESULTS.md (0.216: compiled blocks, every image's vision
# work included); the others are assumptions (slower cards lose less of their peak to launches).
CARDS = {c.name: c for c in (
    Card("t4", "Tesla T4 16GB (Colab, Kaggle)", 14.7, (7, 5), 65.0, 0.30),
    Card("p100", "Tesla P100 16GB (Kaggle)", 15.9, (6, 0), 18.7, 0.30),
    Card("l4", "L4 24GB (Colab)", 22.0, (8, 9), 121.0, 0.30),
    Card("a10g", "A10G 24GB (AWS)", 22.0, (8, 6), 70.0, 0.30),
    Card("a100-40", "A100 40GB (Colab)", 39.4, (8, 0), 312.0, 0.25),
    Card("a100-80", "A100 80GB", 79.1, (8, 0), 312.0, 0.25),
    Card("h100", "H100 80GB SXM", 79.1, (9, 0), 989.0, 0.216),
)}


def detect() -> Card | None:
    """The GPU of this process (its LOCAL_RANK under `accelerate launch`), or None on a CPU.

    A known card keeps its assumed speed; another gets one from its generation.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0"))
    props = torch.cuda.get_device_properties(index)
    memory = props.total_memory / GIB
    capability = (props.major, props.minor)
    name = props.name.lower()
    for key, words in (("h100", ("h100",)), ("a100-80", ("a100",)), ("a100-40", ("a100",)),
                       ("l4", ("l4",)), ("a10g", ("a10",)), ("t4", ("t4",)), ("p100", ("p100",))):
        known = CARDS[key]
        if any(w in name for w in words) and abs(known.memory_gib - memory) < 8:
            return dataclasses.replace(known, label=props.name, memory_gib=round(memory, 1),
                                       capability=capability)
    like = CARDS["h100" if capability >= (9, 0) else "a100-80" if capability >= (8, 0) else "t4"]
    return Card(name.replace(" ", "-"), props.name, round(memory, 1), capability,
                like.peak_tflops, like.utilisation)


def card(name: str) -> Card:
    """A known card class by name (see `CARDS`)."""
    from .config import ConfigError

    if name not in CARDS:
        raise ConfigError(f"unknown GPU class {name!r} (hardware / --gpu); known: "
                          f"{', '.join(CARDS)}")
    return CARDS[name]


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
    from .tiers import model_config

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
    from .fast import compile_wanted, gpu_preset

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


# ---- the plan -------------------------------------------------------------------------------
@dataclass
class Plan:
    """The choices for one card, why, and their estimates."""

    card: Card
    fields: dict[str, Any]  # config overlay: field -> value
    reasons: list[str]
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # tier -> estimate_memory
    seconds_per_epoch: dict[str, float] = field(default_factory=dict)  # tier -> estimate_time
    attention: str = "sdpa"


def choose(cfg, gpu: Card) -> Plan:
    """The plan for `gpu` given `cfg` (its model, pixel budget, LoRA settings): see module doc."""
    from .fast import GPU_PRESETS, auto_preset, compile_wanted

    shape = shape_of(cfg)
    reasons = []
    fields: dict[str, Any] = {}
    small = gpu.memory_gib <= 17 or not gpu.bf16
    fields["dtype"] = "bfloat16" if gpu.bf16 else "float16"
    if not gpu.bf16:
        reasons.append(f"compute capability {gpu.capability[0]}.{gpu.capability[1]}: no native "
                       f"bf16, so fp16 compute")
    preset = auto_preset(gpu.memory_gib)
    fields["gpu"] = preset
    fields["quantize"] = "4bit" if small else "none"
    fields["max_pixels"] = min(cfg.max_pixels, SMALL_CARD_MAX_PIXELS) if small else cfg.max_pixels
    if small:
        reasons.append(f"{gpu.memory_gib:.0f} GiB or no bf16: 4-bit QLoRA (bf16 weights alone "
                       f"are {shape.params()['total'] * 2 / GIB:.1f} GiB)")
        if fields["max_pixels"] < cfg.max_pixels:
            reasons.append(f"pixel budget {cfg.max_pixels // PIXEL_UNIT} -> "
                           f"{fields['max_pixels'] // PIXEL_UNIT} merged tokens per image: "
                           f"an epoch in roughly half the time")

    def settings(tier: str, f: dict) -> Settings:
        p = GPU_PRESETS[f["gpu"]]["train_a" if tier == "a" else "train_b"]
        t = cfg.tier_a if tier == "a" else cfg.tier_b
        return Settings(tier=tier, quantize=f["quantize"], dtype_bytes=2, micro_batch=p[0],
                        compiled=compile_wanted(cfg, gpu.capability, f["quantize"]),
                        grad_accum=p[1], checkpointing=p[2], max_pixels=f["max_pixels"],
                        lora_r=t.r, lora_dropout=t.dropout, last_n_blocks=cfg.tier_b.last_n_blocks,
                        include_merger=cfg.tier_b.include_merger)

    def peak(f: dict) -> int:
        return max(estimate_memory(shape, settings(t, f))["peak"] for t in ("a", "b"))

    # step down until the estimate fits: checkpointing, 4-bit, half the pixels (each at most once)
    if not fits(peak(fields), gpu.memory_gib) and preset == "80gb":
        fields["gpu"] = "40gb"
        reasons.append("80gb preset does not fit the estimate: checkpointing (preset 40gb)")
    if not fits(peak(fields), gpu.memory_gib) and fields["quantize"] == "none":
        fields["quantize"] = "4bit"
        fields["gpu"] = "24gb"
        reasons.append("bf16 weights + activations do not fit the estimate: 4-bit QLoRA")
    while not fits(peak(fields), gpu.memory_gib) and fields["max_pixels"] > 256 * PIXEL_UNIT:
        fields["max_pixels"] = max(256, fields["max_pixels"] // PIXEL_UNIT // 2) * PIXEL_UNIT
        reasons.append(f"still too large: pixel budget {fields['max_pixels'] // PIXEL_UNIT} tokens")
    if not fits(peak(fields), gpu.memory_gib):
        reasons.append(f"the estimate does not fit {gpu.memory_gib:.0f} GiB even at the smallest "
                       f"settings: this card is too small for {cfg.model_id}")
    if fields["quantize"] == "none":
        micro, _, ckpt = GPU_PRESETS[fields["gpu"]]["train_a"]
        reasons.append(f"{fields['dtype']} LoRA, preset {fields['gpu']} (micro-batch {micro}, "
                       f"gradient checkpointing {checkpointing_text(ckpt)}): the estimate fits "
                       f"{gpu.memory_gib:.0f} GiB")
    if cfg.compile_blocks == "auto":
        on = compile_wanted(cfg, gpu.capability, fields["quantize"])
        reasons.append("compiled blocks (torch.compile of the decoder layers, vision MLPs and "
                       "norms): " + ("on" if on else "off, " + (
                           "compute capability below 8.0" if not gpu.bf16 else "4-bit layers"
                           if fields["quantize"] != "none" else "torch older than 2.5")))
    try:
        from .model import flash_attn_usable

        flash_here = flash_attn_usable()
    except Exception:
        flash_here = False
    attention = "flash_attention_2" if gpu.flash_attn and flash_here else \
        "sdpa" if not gpu.flash_attn else "flash_attention_2 if installed, else sdpa"
    plan = Plan(card=gpu, fields=fields, reasons=reasons, attention=attention)
    rows = cfg.train_limit or TRAIN_ROWS
    for tier in ("a", "b"):
        st = settings(tier, fields)
        plan.memory[tier] = estimate_memory(shape, st)
        plan.seconds_per_epoch[tier] = estimate_time(shape, st, gpu, rows)
    return plan


def checkpointing_text(ckpt: bool | int) -> str:
    """'off', 'every block' or '1 block in n' (a GPU preset's checkpointing value)."""
    if not ckpt:
        return "off"
    return "every block" if ckpt is True or int(ckpt) == 1 else f"1 block in {int(ckpt)}"


PLANNED = ("dtype", "gpu", "quantize", "max_pixels")  # the fields a plan sets


def apply_plan(cfg, explicit: set[str] | frozenset = frozenset()) -> Plan | None:
    """Set the fields of the plan for ``cfg.hardware`` (auto: the detected GPU; a class name:
    that class; none: nothing) on `cfg`, except those in `explicit` (the user's overrides).

    Returns the plan (None when nothing applies: hardware=none, or auto without a GPU).
    """
    if cfg.hardware == "none":
        return None
    gpu = detect() if cfg.hardware == "auto" else card(cfg.hardware)
    if gpu is None:
        return None
    plan = choose(cfg, gpu)
    for name in PLANNED:
        if name not in explicit:
            value = plan.fields[name]
            if name == "max_pixels":  # never below a min_pixels the user asked for
                value = max(value, cfg.min_pixels)
            setattr(cfg, name, value)
    return plan


# ---- bitsandbytes ---------------------------------------------------------------------------
SKIP_4BIT = ["model.visual", "lm_head"]  # kept in the compute dtype (vision fidelity; the head)


def bnb_config(cfg):
    """The BitsAndBytesConfig of ``quantize=4bit``; a clear ConfigError when it cannot run."""
    import importlib.util

    import torch

    from .config import ConfigError
    from .model import torch_dtype

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantize=4bit needs bitsandbytes: pip install bitsandbytes (or "
                          "pip install 'tableqa-helpers[gpu]'), or set --set quantize=none")
    if not torch.cuda.is_available():  # bitsandbytes >= 0.48 also runs 4-bit on the CPU (slowly)
        import bitsandbytes
        from packaging.version import Version

        if Version(bitsandbytes.__version__) < Version("0.48"):
            raise ConfigError(f"quantize=4bit without a GPU needs bitsandbytes >= 0.48 (found "
                              f"{bitsandbytes.__version__}); or set --set quantize=none")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(cfg),
                              llm_int8_skip_modules=list(SKIP_4BIT))


# ---- printing -------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def format_gpu_plan(plan: Plan) -> str:
    """The plan of one card as text: choices, reasons, memory by term, time per epoch."""
    g = plan.card
    lines = [f"GPU plan for {g.label} ({g.memory_gib:.1f} GiB, compute capability "
             f"{g.capability[0]}.{g.capability[1]}, bf16 {'yes' if g.bf16 else 'no'})"]
    for k, v in plan.fields.items():
        shown = f"{v} ({v // PIXEL_UNIT} merged tokens)" if k == "max_pixels" else v
        lines.append(f"  {k:<11} {shown}")
    lines.append(f"  {'attention':<11} {plan.attention}")
    lines += [f"  - {r}" for r in plan.reasons]
    terms = list(plan.memory["a"])
    lines.append(f"\n  estimated peak memory per GPU (GiB)   {'tier A':>8} {'tier B':>8}")
    for t in terms:
        lines.append(f"  {t:<36} {_gib(plan.memory['a'][t]):>8} {_gib(plan.memory['b'][t]):>8}")
    lines.append(f"  fits with {int((MARGIN - 1) * 100)}% margin + {OVERHEAD_GIB:.0f} GiB overhead: "
                 f"{'yes' if all(fits(m['peak'], g.memory_gib) for m in plan.memory.values()) else 'NO'}")
    lines.append(f"  estimated time per epoch ({g.tflops:.0f} TFLOP/s assumed"
                 f"{', x%.2f for 4-bit' % QLORA_SPEED if plan.fields['quantize'] == '4bit' else ''}): "
                 f"tier A {_hours(plan.seconds_per_epoch['a'])}, tier B "
                 f"{_hours(plan.seconds_per_epoch['b'])}")
    lines.append("  estimates, not measurements (docs/gpus.md); override any field with --set")
    return "\n".join(lines)


def format_gpu_table(cfg) -> str:
    """One line per card class: what the plan chooses and its estimates."""
    header = (f"{'card':<9} {'GiB':>5} {'quantize':>8} {'dtype':>9} {'preset':>6} "
              f"{'pixels':>6} {'peak A':>7} {'peak B':>7} {'epoch A':>8} {'epoch B':>8}")
    lines = [f"GPU plans for {cfg.model_id} (estimates; peak memory in GiB, time per epoch)",
             header, "-" * len(header)]
    for name in CARDS:
        plan = choose(cfg, CARDS[name])
        f = plan.fields
        lines.append(f"{name:<9} {plan.card.memory_gib:>5.1f} {f['quantize']:>8} {f['dtype']:>9} "
                     f"{f['gpu']:>6} {f['max_pixels'] // PIXEL_UNIT:>6} "
                     f"{_gib(plan.memory['a']['peak']):>7} {_gib(plan.memory['b']['peak']):>7} "
                     f"{_hours(plan.seconds_per_epoch['a']):>8} "
                     f"{_hours(plan.seconds_per_epoch['b']):>8}")
    return "\n".join(lines)


def plan_report(cfg, gpu: str | None = None) -> str:
    """What `plan` prints about hardware: for `gpu` ("all": every class; a class name: that
    one), else for the detected GPU, else (no GPU) the table of every class when the profile
    plans for hardware (``cfg.hardware != "none"``; the full profile).

    `cfg` should be the config before a plan was applied (``hardware=none`` plus the user's
    overrides): a plan is computed from the profile's own pixel budget.
    """
    if gpu == "all":
        return format_gpu_table(cfg)
    if gpu:
        return format_gpu_plan(choose(cfg, card(gpu)))
    found = detect()
    if found is not None:
        return format_gpu_plan(choose(cfg, found))
    if cfg.hardware == "none":
        return ""
    return "no GPU here: the plan of each card class\n" + format_gpu_table(cfg)


def report(profile: str | None, overrides: dict | None = None, gpu: str | None = None) -> str:
    """`plan`'s hardware section for a profile and config overrides (field -> value).

    ``hardware="t4"`` (a class) asks for that class's plan, like ``gpu="t4"``.
    """
    from .config import PROFILES, get_config

    overrides = dict(overrides or {})
    wanted = str(overrides.get("hardware", "")).strip()
    if gpu is None and wanted in CARDS:
        gpu = wanted
    cfg = get_config(profile, {**overrides, "hardware": "none"})  # the profile's own budget
    cfg.hardware = wanted or PROFILES[cfg.profile]().hardware
    return plan_report(cfg, gpu)


def main(argv=None) -> None:
    """``python -m tableqa_helpers.hardware measure|compare ...``: see `gpucheck`."""
    from .gpucheck import main as check

    check(argv)


if __name__ == "__main__":
    main()
