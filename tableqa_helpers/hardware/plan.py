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

`apply_plan(cfg)` sets the planned fields the user did not set; `plan_report` / `report` print
the plan (``python -m tableqa_helpers plan``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cards import CARDS, Card, GIB, card, detect
from .estimate import (MARGIN, OVERHEAD_GIB, PIXEL_UNIT, QLORA_SPEED, SMALL_CARD_MAX_PIXELS,
                       Settings, TRAIN_ROWS, estimate_memory, estimate_time, fits, shape_of)


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
    from .presets import GPU_PRESETS, auto_preset, compile_wanted

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
        from .cards import flash_attn_usable

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
    from ..config import PROFILES, get_config

    overrides = dict(overrides or {})
    wanted = str(overrides.get("hardware", "")).strip()
    if gpu is None and wanted in CARDS:
        gpu = wanted
    cfg = get_config(profile, {**overrides, "hardware": "none"})  # the profile's own budget
    cfg.hardware = wanted or PROFILES[cfg.profile]().hardware
    return plan_report(cfg, gpu)
