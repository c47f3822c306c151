"""The GPU plan on a CPU: choices for faked cards, the estimator's arithmetic, overrides."""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from tableqa_helpers import hardware
from tableqa_helpers.hardware import estimate, gpucheck
from tableqa_helpers.config import ConfigError, get_config
from tableqa_helpers.hardware import CARDS, GIB, PIXEL_UNIT, Card, Settings, Shape


@pytest.fixture(scope="module")
def shape7b():
    from tableqa_helpers.offline import qwen25vl_7b_config

    return Shape.of(qwen25vl_7b_config())


def tiny_config(**text):
    from tableqa_helpers.offline import standin

    shape = {"text": {**standin.TINY["text"], **text}, "vision": dict(standin.TINY["vision"])}
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0, image_token_id=3,
               video_token_id=4, vision_start_token_id=5, vision_end_token_id=6)
    return standin.make_config(shape, ids, 4000)


# ---- the 7B's arithmetic -------------------------------------------------------------------------
def test_7b_parameters_and_bf16_weights(shape7b):
    p = shape7b.params()
    assert p["total"] == 8_292_166_656  # 8.29 B
    assert p["llm_linear"] == 6_525_288_448 and p["vision"] == 676_550_144
    st = Settings(tier="a", quantize="none", dtype_bytes=2)
    weights = hardware.estimate_memory(shape7b, st)["weights"]
    assert weights == 2 * 8_292_166_656 and round(weights / 1e9, 1) == 16.6  # ~16.6 GB
    four = hardware.estimate_memory(shape7b, dataclasses.replace(st, quantize="4bit"))["weights"]
    assert four == pytest.approx(6_525_288_448 * 4.127 / 8 + (8_292_166_656 - 6_525_288_448) * 2,
                                 rel=1e-3)  # ~6.9 GB: NF4 language model, bf16 vision and head


def test_7b_lora_counts_match_the_plan_table(shape7b):
    assert shape7b.lora_params("a", r=16) == 40_673_280  # README: plan --profile full
    assert shape7b.lora_params("b", r=8, last_n=4) == 245_760
    st = Settings(tier="a", lora_r=16)
    assert hardware.estimate_memory(shape7b, st)["lora_and_optimizer"] == 16 * 40_673_280


def test_analytic_counts_equal_the_meta_model():
    from tableqa_helpers.train import apply_tier_a, apply_tier_b, meta_model, trainable_by_component

    config = tiny_config()
    shape = Shape.of(config)
    model = meta_model(config)
    p = shape.params()
    assert p["total"] == sum(t.numel() for t in model.parameters())
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "language_model.layers" in n)
    assert p["llm_linear"] == linear
    cfg = get_config("unit")
    a = trainable_by_component(apply_tier_a(meta_model(config), cfg))["total"]
    b = trainable_by_component(apply_tier_b(meta_model(config), cfg))["total"]
    assert shape.lora_params("a", cfg.tier_a.r) == a
    assert shape.lora_params("b", cfg.tier_b.r, cfg.tier_b.last_n_blocks) == b


def _saved_bytes(module, run) -> int:
    """Bytes of the distinct tensors autograd saves while `run()` executes (parameters excluded),
    counted the way the GPU measurement counts them."""
    from tableqa_helpers.hardware.gpucheck import saved_tensor_bytes

    return saved_tensor_bytes(module, run)[0]


@pytest.mark.parametrize("tier,dropout", [("a", 0.0), ("a", 0.1), ("b", 0.0)])
def test_layer_activation_formula_matches_what_autograd_saves(tier, dropout):
    """One bf16 decoder layer (PEFT LoRA on its 7 projections for Tier A, none for Tier B; its
    input requires grad, as in the model) under bf16 autocast, as the Trainer runs it: the bytes
    autograd keeps per token are the (eager) formula's."""
    from tableqa_helpers.train.loss import _NoLoraInputCast

    from peft import LoraConfig, get_peft_model
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as q

    config = tiny_config(hidden_size=256, intermediate_size=704, num_attention_heads=4,
                         num_key_value_heads=2, mrope_section=[8, 12, 12])
    tc = config.text_config
    tc._attn_implementation = "sdpa"
    torch.manual_seed(0)

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = q.Qwen2_5_VLDecoderLayer(tc, 0).to(torch.bfloat16)

        def forward(self, x, pe, pos):
            return self.layer(x, position_embeddings=pe, attention_mask=None, position_ids=pos)

    model = One().requires_grad_(False)
    if tier == "a":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=8, lora_dropout=dropout,
                               target_modules=r".*(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"))

    def saved(tokens):
        x = torch.randn(1, tokens, tc.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        pos = torch.arange(tokens)[None, None].expand(3, 1, tokens)
        pe = q.Qwen2_5_VLRotaryEmbedding(tc)(x, pos)  # shared by all layers: not counted
        with torch.autocast("cpu", dtype=torch.bfloat16), _NoLoraInputCast(model, True):
            kept = _saved_bytes(model, lambda: model(x, pe, pos))
        return kept - sum(t.untyped_storage().nbytes() for t in pe)

    # per token: the slope between two lengths (autocast's bf16 copies of the LoRA weights are
    # kept once per layer, whatever the length)
    per_token = (saved(96) - saved(48)) / 48
    st = Settings(tier=tier, dtype_bytes=2, lora_r=16, lora_dropout=dropout)
    expected = hardware.layer_bytes_per_token(Shape.of(config), st)
    if dropout:  # the formula counts CUDA's 1-byte dropout masks; the CPU keeps them in bf16
        h, i = tc.hidden_size, tc.intermediate_size
        expected += 5 * h + h + i  # one more byte for every LoRA input element
    assert per_token == pytest.approx(expected, rel=0.01)


def test_vision_block_formula_matches_what_autograd_saves():
    from peft import LoraConfig, get_peft_model
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as q

    from tableqa_helpers.model.fast import use_grouped_vision_attention

    config = tiny_config()
    vc = config.vision_config
    vc._attn_implementation = "sdpa"
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = q.Qwen2_5_VLVisionBlock(vc).to(torch.bfloat16)

        def forward(self, x, cu, pe):
            return self.block(x, cu_seqlens=cu, position_embeddings=pe)

    model = get_peft_model(Block().requires_grad_(False),
                           LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0,
                                      target_modules=r".*attn\.(qkv|proj)"))
    use_grouped_vision_attention(model)
    patches = 256
    x = torch.randn(patches, vc.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    cu = torch.arange(0, patches + 1, 64, dtype=torch.int32)
    emb = torch.randn(patches, vc.hidden_size // vc.num_heads, dtype=torch.bfloat16)
    pe = (emb.cos(), emb.sin())
    saved = _saved_bytes(model, lambda: model(x, cu, pe))
    st = Settings(tier="b", dtype_bytes=2, lora_r=8, lora_dropout=0.0)
    expected = hardware.vision_block_bytes_per_patch(Shape.of(config), st)
    assert saved / patches == pytest.approx(expected, rel=0.01)


def test_checkpointing_keeps_block_inputs_plus_one_block(shape7b):
    base = Settings(tier="a", micro_batch=1, checkpointing=False, max_pixels=2560 * PIXEL_UNIT)
    tokens = 2560 + estimate.PEAK_TEXT_TOKENS
    layer = hardware.layer_bytes_per_token(shape7b, base)
    off = hardware.estimate_memory(shape7b, base)["activations_llm"]
    on = hardware.estimate_memory(shape7b, dataclasses.replace(base, checkpointing=True))
    half = hardware.estimate_memory(shape7b, dataclasses.replace(base, checkpointing=2))
    extra = tokens * (4 + 2) * shape7b.hidden  # final norm, input embeddings
    assert off == 28 * layer * tokens + extra
    assert on["activations_llm"] == (28 * 2 * shape7b.hidden + layer) * tokens + extra
    assert half["activations_llm"] == (14 * 2 * shape7b.hidden + 15 * layer) * tokens + extra
    assert on["peak"] < half["peak"] < hardware.estimate_memory(shape7b, base)["peak"]
    # compiled: the non-checkpointed layers keep less; the recomputed one is eager (not compiled)
    comp = dataclasses.replace(base, compiled=True, checkpointing=2)
    small = hardware.layer_bytes_per_token(shape7b, comp)
    assert small < layer
    assert hardware.estimate_memory(shape7b, comp)["activations_llm"] == \
        (14 * 2 * shape7b.hidden + 14 * small + layer) * tokens + extra


def test_time_scales_with_the_card_and_4bit(shape7b):
    st = Settings(tier="a", checkpointing=False)
    h100, a100 = CARDS["h100"], CARDS["a100-80"]
    flops = hardware.flops_per_sample(shape7b, st)
    # forward + backward to the inputs of the linear layers alone: 4 x 6.5 B x tokens
    tokens = 2560 * estimate.MEAN_IMAGE_FILL + estimate.MEAN_TEXT_TOKENS
    assert flops > 4 * shape7b.params()["llm_linear"] * tokens
    assert flops < 1.3 * 4 * shape7b.params()["llm_linear"] * tokens
    t = hardware.estimate_time(shape7b, st, h100, samples=100)
    assert t == pytest.approx(100 * flops / (h100.tflops * 1e12))
    assert hardware.estimate_time(shape7b, st, a100, 100) / t == pytest.approx(h100.tflops / a100.tflops)
    four = hardware.estimate_time(shape7b, dataclasses.replace(st, quantize="4bit"), h100, 100)
    assert four == pytest.approx(t / estimate.QLORA_SPEED)
    ckpt = hardware.estimate_time(shape7b, dataclasses.replace(st, checkpointing=True), h100, 100)
    assert 1.3 < ckpt / t < 1.6  # one more forward of the language model


# ---- choices -----------------------------------------------------------------------------------
def full():
    return get_config("full", hardware="none")


@pytest.mark.parametrize("name, quantize, dtype, preset, pixels", [
    ("t4", "4bit", "float16", "24gb", 1280),
    ("p100", "4bit", "float16", "24gb", 1280),
    ("l4", "none", "bfloat16", "24gb", 2560),
    ("a10g", "none", "bfloat16", "24gb", 2560),
    ("a100-40", "none", "bfloat16", "40gb", 2560),
    ("a100-80", "none", "bfloat16", "80gb", 2560),
    ("h100", "none", "bfloat16", "80gb", 2560),
])
def test_choice_for_each_card_class(name, quantize, dtype, preset, pixels):
    plan = hardware.choose(full(), CARDS[name])
    assert plan.fields == {"dtype": dtype, "gpu": preset, "quantize": quantize,
                           "max_pixels": pixels * PIXEL_UNIT}
    assert all(hardware.fits(m["peak"], CARDS[name].memory_gib) for m in plan.memory.values())
    assert plan.attention == ("sdpa" if name in ("t4", "p100") else
                              "flash_attention_2 if installed, else sdpa")


def test_choice_steps_down_when_the_estimate_does_not_fit():
    # a 24 GiB card without native bf16 (Turing): 4-bit, fp16
    titan = Card("titan-rtx", "TITAN RTX", 23.6, (7, 5), 130.0, 0.3)
    assert hardware.choose(full(), titan).fields["quantize"] == "4bit"
    assert hardware.choose(full(), titan).fields["dtype"] == "float16"
    # a 20 GiB Ampere card: bf16 weights + activations do not fit -> 4-bit, bf16 compute
    a4500 = Card("a4500", "RTX A4500", 19.7, (8, 6), 94.0, 0.3)
    plan = hardware.choose(full(), a4500)
    assert plan.fields["quantize"] == "4bit" and plan.fields["dtype"] == "bfloat16"
    assert any("4-bit" in r for r in plan.reasons)
    # 10.5 GiB: even 4-bit needs a smaller pixel budget
    small = hardware.choose(full(), Card("ten", "10GB", 10.5, (8, 6), 30.0, 0.3))
    assert small.fields["max_pixels"] < 1280 * PIXEL_UNIT
    assert all(hardware.fits(m["peak"], 10.5) for m in small.memory.values())
    # 8 GiB: the 4-bit weights alone nearly fill it: said so
    tiny_card = hardware.choose(full(), Card("eight", "8GB", 8.0, (8, 6), 30.0, 0.3))
    assert any("too small" in r for r in tiny_card.reasons)
    # compiled blocks: said, on where the card and weights allow it
    assert "compiled blocks (torch.compile of the decoder layers, vision MLPs and norms): on" in \
        hardware.choose(full(), CARDS["a100-40"]).reasons
    assert any(r.endswith("off, compute capability below 8.0")
               for r in hardware.choose(full(), CARDS["t4"]).reasons)


def test_detect_reads_the_card(monkeypatch):
    props = SimpleNamespace(name="Tesla T4", total_memory=int(14.75 * GIB), major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    found = hardware.detect()
    assert found.name == "t4" and not found.bf16 and found.memory_gib == 14.8
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=int(79.1 * GIB), major=9, minor=0)
    assert hardware.detect().name == "h100"
    props = SimpleNamespace(name="NVIDIA RTX 6000 Ada Generation", total_memory=int(47.5 * GIB),
                            major=8, minor=9)
    other = hardware.detect()
    assert other.bf16 and other.memory_gib == 47.5


def test_no_gpu_no_plan():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = get_config("full")
    assert cfg.hardware == "auto" and cfg.quantize == "none" and cfg.dtype == "bfloat16"
    assert hardware.apply_plan(cfg) is None


# ---- overrides -----------------------------------------------------------------------------------
def test_a_named_plan_applies_and_any_field_can_be_overridden():
    cfg = get_config("full", hardware="t4")
    assert (cfg.quantize, cfg.dtype, cfg.gpu, cfg.max_pixels) == \
        ("4bit", "float16", "24gb", 1280 * PIXEL_UNIT)
    mine = get_config("full", {"hardware": "t4", "quantize": "none", "max_pixels": str(512 * PIXEL_UNIT),
                               "gpu": "manual", "dtype": "float32"})
    assert (mine.quantize, mine.dtype, mine.gpu, mine.max_pixels) == \
        ("none", "float32", "manual", 512 * PIXEL_UNIT)
    partly = get_config("full", hardware="t4", tier_a__lr=5e-5, quantize="none")
    assert partly.quantize == "none" and partly.dtype == "float16" and partly.tier_a.lr == 5e-5
    assert get_config("full", hardware="none", quantize="4bit").quantize == "4bit"


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="quantize"):
        get_config("unit", quantize="8bit")
    with pytest.raises(ConfigError, match="hardware"):
        get_config("unit", hardware="v100")


def test_4bit_without_bitsandbytes_is_a_clear_error(tiny_cfg, monkeypatch):
    import importlib.util

    from tableqa_helpers.model import load_model

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find(name, *a))
    tiny_cfg.quantize = "4bit"
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        load_model(tiny_cfg)


def test_plan_report_prints_a_card_and_the_table(capsys):
    one = hardware.report("full", {}, "t4")
    assert "4bit" in one and "float16" in one and "peak" in one and "estimates" in one
    table = hardware.report("full", {}, "all")
    assert all(name in table for name in CARDS)
    assert hardware.report("full", {"hardware": "l4"}).startswith("GPU plan for L4")
    if not torch.cuda.is_available():
        assert hardware.report("full", {}).startswith("no GPU here")
        assert hardware.report("tiny", {}) == ""


@pytest.mark.parametrize("tier", ["a", "b"])
def test_measure_runs_on_the_stand_in(tmp_path, tier):
    """The GPU measurement's code path with a random tiny checkpoint (on the CPU: no peak memory
    there): the activations autograd keeps for a sample are counted and match the estimate."""
    record = gpucheck.measure(tmp_path / "model", tier, {"root": str(tmp_path / "runs"),
                              "max_pixels": str(64 * PIXEL_UNIT), "min_pixels": str(16 * PIXEL_UNIT)},
                              shape="tiny", steps=1)
    peak = record["measured_peak_gib"]
    assert (peak > 0) if torch.cuda.is_available() else peak is None
    assert record["estimate_gib"]["peak"] > 0
    assert 48 <= record["sample_tokens"]["visual"] <= 64  # the image fills the budget
    assert record["saved_activations_mib"] == pytest.approx(record["estimate_saved_mib"], rel=0.1)


def test_qlora_tier_a_trains_on_the_stand_in(standins, tmp_path):
    """quantize=4bit through load_model: the language model's projections load as bitsandbytes
    Linear4bit (LoRA on top), the vision tower and the head stay unquantized, and Tier A trains.
    Runs where bitsandbytes is installed (>= 0.48 also on the CPU); skipped elsewhere."""
    pytest.importorskip("bitsandbytes")
    from conftest import make_cfg

    from tableqa_helpers.train import build_trainer, train_tier

    settings = dict(train_limit=4, eval_limit=1, batch_size=2, eval_steps=1000, logging_steps=1,
                    quantize="4bit", dtype="bfloat16", tier_a__epochs=1)
    cfg = make_cfg(standins, tmp_path, **settings)
    model = build_trainer(cfg, "a").model
    net = model.get_base_model()
    assert type(net.model.language_model.layers[0].mlp.down_proj.base_layer).__name__ == "Linear4bit"
    assert type(net.model.visual.blocks[0].attn.qkv).__name__ == "Linear"
    assert type(net.lm_head).__name__ == "Linear"
    summary = train_tier(cfg, "a")
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in losses)
    assert (cfg.tier_a_dir / "adapter_model.safetensors").exists()


def test_compare_runs_losses_and_steady_state_speedup(tmp_path):
    """The multi-GPU check: per-step loss differences and the ratio of median step times after
    the warm-up steps (whole-run rates include compilation and loader start)."""
    import json

    def run(name, losses, seconds, rate):
        log = {"log_history": [{"step": i + 1, "loss": l, **({"step_seconds": s} if s else {})}
                               for i, (l, s) in enumerate(zip(losses, seconds))]
               + [{"step": len(losses), "train_samples_per_second": rate}]}
        (tmp_path / name / "logs").mkdir(parents=True)
        (tmp_path / name / "logs" / "tier_a.json").write_text(json.dumps(log))
        return tmp_path / name

    one = run("one", [2.0, 1.5, 1.2, 1.0, 0.9], [None, 9.0, 4.0, 4.2, 4.0], 1.0)
    two = run("two", [2.0, 1.5, 1.2, 1.01, 0.9], [None, 8.0, 2.1, 2.0, 2.2], 1.5)
    r = gpucheck.compare_runs(one, two)
    assert r["steps"] == 5 and r["loss_max_rel_diff"] == pytest.approx(0.01)
    assert r["median_step_seconds"] == [4.0, 2.1] and r["speedup"] == pytest.approx(4.0 / 2.1)
    assert r["speedup_whole_run"] == pytest.approx(1.5)
    short = run("short", [2.0, 1.5], [None, 3.0], 1.0)  # no step after the warm-up steps
    assert gpucheck.compare_runs(one, short)["speedup"] is None
