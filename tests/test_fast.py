"""The fast paths compute the same function as the plain ones (tiny stand-in, CPU, float32).

- grouped window attention (`fast.py`) vs transformers' per-window SDPA loop;
- Tier A `fast_loss` (vision under no_grad + cache, head on labelled positions only, merged
  embeddings handed to the model) vs `model(**batch).loss`: loss and every LoRA gradient;
- Tier B `fast_loss` with grouped attention vs the stock model, gradients in the vision blocks;
- activation checkpointing without input-grad hooks; the disk tier of the vision cache; presets.
"""
from __future__ import annotations

import pytest
import torch

from tableqa_helpers.hardware import presets
from tableqa_helpers.model import fast
from tableqa_helpers.data import TrainCollator
from tableqa_helpers.config import ConfigError, get_config
from tableqa_helpers.train import VisionCache, enable_checkpointing, fast_loss
from tableqa_helpers.train.loss import _inner
from tableqa_helpers.train.loss import _NoLoraInputCast, forward_with_image_embeds

TOL = dict(rtol=1e-4, atol=1e-5)


def _model(cfg, tier: str):
    from tableqa_helpers.model import load_model
    from tableqa_helpers.train import apply_tier_a, apply_tier_b

    torch.manual_seed(0)
    model = load_model(cfg, trainable=True)
    model = apply_tier_a(model, cfg) if tier == "a" else apply_tier_b(model, cfg)
    with torch.no_grad():  # LoRA B starts at zero; make the adapters do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.train()
    return model


def _batch(cfg, processor, dataset, n=3, keys=True):
    collate = TrainCollator(processor, cfg.system_prompt, cfg.max_length, image_keys=keys)
    return collate([dataset["train"][i] for i in range(n)])


def _plain(model, batch):
    return {k: v for k, v in batch.items() if k not in ("image_keys", "length")}


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


def _same(a, b):
    (loss_a, g_a), (loss_b, g_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, **TOL)
    assert g_a.keys() == g_b.keys() and g_a
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], **TOL, msg=name)


# ---- grouped window attention ----------------------------------------------------------------
def _reference_attention(q, k, v, cu, scale):
    outs = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        o = torch.nn.functional.scaled_dot_product_attention(
            *(t[s:e].transpose(0, 1).unsqueeze(0) for t in (q, k, v)), scale=scale)
        outs.append(o[0].transpose(0, 1).reshape(e - s, -1))
    return torch.cat(outs)


@pytest.mark.parametrize("lengths", [[64, 64, 32, 64, 16, 8, 64], [300], [5, 300, 7, 7, 1]])
def test_grouped_attention_function(lengths):
    torch.manual_seed(len(lengths))
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    n, h, d = int(cu[-1]), 3, 8
    q, k, v = (torch.randn(n, h, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ref = _reference_attention(q, k, v, cu, 0.3)
    out = fast.grouped_attention(q, k, v, cu, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    g_out = torch.autograd.grad((out * w).sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_grouped_vision_tower_matches_stock(tiny_cfg):
    """Whole vision tower, images whose sides are not multiples of the window (edge windows)."""
    model = _model(tiny_cfg, "a")
    visual = _inner(model).model.visual
    grid = torch.tensor([[1, 22, 38], [1, 30, 14], [1, 8, 8]])
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    assert fast.grouped_vision_attention_active(model)  # load_model installs it under SDPA
    with torch.no_grad():
        grouped = visual(pixels, grid_thw=grid).pooler_output
        fast.use_stock_vision_attention(model)
        assert not fast.grouped_vision_attention_active(model)
        stock = visual(pixels, grid_thw=grid).pooler_output
    torch.testing.assert_close(grouped, stock, **TOL)


# ---- Tier A ----------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["grouped", "stock"])
def test_tier_a_fast_loss_matches_plain_step(tiny_cfg, processor, dataset, attention):
    model = _model(tiny_cfg, "a")
    batch = _batch(tiny_cfg, processor, dataset)
    fast.use_stock_vision_attention(model)
    plain = _loss_and_grads(model, lambda: model(**_plain(model, batch)).loss)
    if attention == "grouped":
        fast.use_grouped_vision_attention(model)
    cache = VisionCache(2 ** 30)
    first = _loss_and_grads(model, lambda: fast_loss(model, batch, cache))  # cache misses
    assert cache.misses == 3 and cache.hits == 0
    second = _loss_and_grads(model, lambda: fast_loss(model, batch, cache))  # cache hits
    assert cache.hits == 3
    nocache = _loss_and_grads(model, lambda: fast_loss(model, batch, None))
    _same(first, plain)
    _same(second, plain)
    _same(nocache, plain)
    # the merger is trained in Tier A: its LoRA gets gradients through the fast path too
    assert any("merger" in n for n in first[1])


def test_image_embeds_by_argument_or_shadowing_agree(tiny_cfg, processor, dataset):
    """Both ways of handing merged embeddings to the model (new and older transformers)."""
    model = _model(tiny_cfg, "a")
    net = _inner(model)
    batch = _plain(model, _batch(tiny_cfg, processor, dataset, keys=False))
    pixels = batch.pop("pixel_values")
    with torch.no_grad():
        embeds = list(net.model.get_image_features(pixels, batch["image_grid_thw"]).pooler_output)
        ref = net.model(pixel_values=pixels, **batch, use_cache=False).last_hidden_state
        shadow = forward_with_image_embeds(net.model, batch, embeds, use_argument=False)
        torch.testing.assert_close(shadow.last_hidden_state, ref, **TOL)
        assert "get_image_features" not in net.model.__dict__  # the shadow is removed again
        if "mm_encoder_outputs" in __import__("inspect").signature(net.model.forward).parameters:
            arg = forward_with_image_embeds(net.model, batch, embeds, use_argument=True)
            torch.testing.assert_close(arg.last_hidden_state, ref, **TOL)


def test_checkpointing_same_math_and_no_input_grad_hooks(tiny_cfg, processor, dataset):
    model = _model(tiny_cfg, "a")
    batch = _batch(tiny_cfg, processor, dataset)
    ref = _loss_and_grads(model, lambda: fast_loss(model, batch, None))
    enable_checkpointing(model, True)
    net = _inner(model)
    assert _checkpointing(net)
    assert not getattr(net, "_require_grads_hooks", None)  # the frozen tower builds no graph
    _same(_loss_and_grads(model, lambda: fast_loss(model, batch, None)), ref)
    enable_checkpointing(model, False)
    assert not _checkpointing(net)
    enable_checkpointing(model, 2)  # every 2nd block only
    flags = [layer.gradient_checkpointing for layer in net.model.language_model.layers]
    assert flags[0] and not all(flags)
    _same(_loss_and_grads(model, lambda: fast_loss(model, batch, None)), ref)
    enable_checkpointing(model, False)


def test_checkpointing_under_autocast_recomputes_like_forward(tiny_cfg, processor, dataset,
                                                             monkeypatch):
    """bf16 + autocast + float32 adapters: `fast_loss` skips PEFT's input cast in the forward;
    checkpointed blocks must recompute the same way in the backward (else CheckpointError)."""
    model = _model(tiny_cfg, "a").to(torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    batch = _batch(tiny_cfg, processor, dataset)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fast_loss(model, batch, None)

    ref = _loss_and_grads(model, step)
    import contextlib

    entered = []

    @contextlib.contextmanager
    def spy():  # stands in for the (CUDA-only) SDPA backend choice; records where it is entered
        entered.append(torch.is_grad_enabled())
        yield

    monkeypatch.setattr(fast, "sdpa_without_cudnn", spy)
    for every in (True, 2):
        enable_checkpointing(model, every)
        entered.clear()
        got = _loss_and_grads(model, step)  # backward runs outside fast_loss's contexts
        assert len(entered) > 1  # once by fast_loss, again for each recomputed block
        torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
        for name in ref[1]:
            torch.testing.assert_close(got[1][name], ref[1][name], rtol=1e-2, atol=1e-3, msg=name)
    enable_checkpointing(model, False)


def test_lora_input_cast_skipped_under_autocast_same_result(tiny_cfg, processor, dataset):
    """bf16 model, float32 adapters (PEFT's default), autocast: with or without PEFT's cast."""
    model = _model(tiny_cfg, "a").to(torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    batch = _batch(tiny_cfg, processor, dataset, keys=False)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    net = _inner(model)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net.model(**_plain(model, batch), use_cache=False).last_hidden_state
        return out.float().pow(2).mean()

    ref = _loss_and_grads(model, loss)
    with _NoLoraInputCast(model, True):
        assert not any(m.cast_input_dtype_enabled for m in model.modules()
                       if hasattr(m, "cast_input_dtype_enabled"))
        got = _loss_and_grads(model, loss)
    assert all(m.cast_input_dtype_enabled for m in model.modules()
               if hasattr(m, "cast_input_dtype_enabled"))
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    for name in ref[1]:
        torch.testing.assert_close(got[1][name], ref[1][name], rtol=0, atol=0, msg=name)


def _checkpointing(net) -> bool:
    on = getattr(type(net), "is_activation_checkpointing", None)
    return bool(net.is_activation_checkpointing if on is not None else net.is_gradient_checkpointing)


# ---- Tier B ----------------------------------------------------------------------------------
def test_tier_b_grouped_matches_stock_plain_step(tiny_cfg, processor, dataset):
    model = _model(tiny_cfg, "b")
    batch = _batch(tiny_cfg, processor, dataset, keys=False)
    fast.use_stock_vision_attention(model)
    plain = _loss_and_grads(model, lambda: model(**_plain(model, batch)).loss)
    fast.use_grouped_vision_attention(model)
    grouped = _loss_and_grads(model, lambda: fast_loss(model, batch, VisionCache(2 ** 30)))
    _same(grouped, plain)
    assert all("visual.blocks" in n for n in plain[1])  # only the last blocks' LoRA trains


# ---- cache, presets --------------------------------------------------------------------------
def test_vision_cache_memory_bound_and_disk_tier(tmp_path):
    t = [torch.full((4, 8), float(i)) for i in range(4)]  # 128 bytes each
    cache = VisionCache(300, tmp_path / "v", disk_max_bytes=10_000)
    for i, x in enumerate(t):
        cache.put(f"k{i}", x)
    assert len(cache.items) == 2 and cache.bytes <= 300  # memory holds the 2 most recent
    for i in (3, 2, 1, 0):
        torch.testing.assert_close(cache.get(f"k{i}"), t[i])  # the evicted two come from disk
    assert cache.disk_hits == 2
    again = VisionCache(300, tmp_path / "v", disk_max_bytes=10_000)  # a later run reuses files
    torch.testing.assert_close(again.get("k0"), t[0])
    assert VisionCache(300).get("k0") is None


def test_vision_cache_keeps_a_copy_and_counts_pinned_blocks():
    x = torch.ones(3, 5)
    cache = VisionCache(10 ** 6)
    cache.put("k", x)
    x.add_(1)  # the caller's tensor changes: the cached copy does not
    torch.testing.assert_close(cache.get("k"), torch.ones(3, 5))

    class Block:  # what the pinned pool hands out for 6,000 and for 4,096 bytes
        def __init__(self, n):
            self.n = n

        def numel(self):
            return self.n

        def element_size(self):
            return 2

        def is_pinned(self):
            return True

    assert VisionCache.nbytes(Block(3000)) == 8192 and VisionCache.nbytes(Block(2048)) == 4096
    assert VisionCache.nbytes(torch.ones(3, 5)) == 60


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_vision_cache_can_copy_from_the_gpu_to_pinned_memory():
    x = torch.arange(1000.0, device="cuda")
    cache = VisionCache(10 ** 6)
    cache.pinned = True
    cache.put("k", x * 2)
    got = cache.get("k")
    assert got.is_pinned() and cache.bytes == 4096
    torch.testing.assert_close(got.to("cuda", non_blocking=True), x * 2)


def test_gpu_presets_keep_global_batch(tiny_cfg):
    for name in presets.GPU_PRESETS:
        for tier in "ab":
            tiny_cfg.gpu = name
            p = presets.gpu_preset(tiny_cfg, tier)
            assert p["batch_size"] * p["grad_accum"] == 24, (name, tier)
    assert presets.auto_preset(79.2) == "80gb" and presets.auto_preset(39.5) == "40gb"
    tiny_cfg.gpu = "manual"
    p = presets.gpu_preset(tiny_cfg, "a")
    assert (p["batch_size"], p["grad_accum"]) == (tiny_cfg.batch_size, tiny_cfg.grad_accum)
    tiny_cfg.gpu = "nonsense"
    with pytest.raises(ConfigError):
        presets.gpu_preset(tiny_cfg, "a")
    assert get_config("full").gpu == "auto"


def test_trainer_caches_vision_across_epochs(tiny_cfg, processor, dataset):
    from tableqa_helpers.train import make_trainer

    model = _model(tiny_cfg, "a")
    train = dataset["train"].select(range(4))
    trainer = make_trainer(model, processor, tiny_cfg, "a", train, None,
                           output_dir=tiny_cfg.run_dir / "ckpt", num_train_epochs=2,
                           per_device_train_batch_size=2, gradient_accumulation_steps=1,
                           disable_tqdm=True)
    trainer.train()
    assert trainer.vision_cache.misses == 4 and trainer.vision_cache.hits == 4


# ---- compiled blocks and mixed precision in the Trainer ----------------------------------------
@pytest.mark.parametrize("tier,checkpointing", [("a", False), ("a", 2), ("b", False)])
def test_compiled_blocks_same_loss_and_grads(tiny_cfg, processor, dataset, tier, checkpointing):
    """`fast.compile_blocks` (torch.compile of each block) keeps loss and gradients, over samples
    of different lengths (dynamic shapes), with and without checkpointing."""
    model = _model(tiny_cfg, tier)
    enable_checkpointing(model, checkpointing)
    batches = [TrainCollator(processor, tiny_cfg.system_prompt, tiny_cfg.max_length)(
        [dataset["train"][i]]) for i in range(3)]
    eager = [_loss_and_grads(model, lambda b=b: fast_loss(model, b)) for b in batches]
    try:
        assert fast.compile_blocks(model) == len(fast.compiled_modules(model)) > 0
        compiled = [_loss_and_grads(model, lambda b=b: fast_loss(model, b)) for b in batches]
    finally:
        fast.uncompile_blocks(model)
    assert not any(m._compiled_call_impl for m in fast._block_modules(model))
    if checkpointing:  # checkpointed decoder layers stay eager
        layers = _inner(model).model.language_model.layers
        assert {i for i, m in enumerate(layers) if m in fast.compiled_modules(model)} == {
            i for i in range(len(layers)) if i % checkpointing}
    for e, c in zip(eager, compiled):
        _same(e, c)


def test_compile_wanted_follows_config(tiny_cfg):
    for choice, want in (("on", True), ("off", False)):
        tiny_cfg.compile_blocks = choice
        assert presets.compile_wanted(tiny_cfg) is want
    tiny_cfg.compile_blocks = "auto"
    if not torch.cuda.is_available():
        assert presets.compile_wanted(tiny_cfg) is False  # auto: never on a CPU
    # auto on a given card (a plan for another GPU): compute capability >= 8.0, unquantized
    assert presets.compile_wanted(tiny_cfg, capability=(9, 0)) is True
    assert presets.compile_wanted(tiny_cfg, capability=(8, 0)) is True
    assert presets.compile_wanted(tiny_cfg, capability=(7, 5)) is False  # T4: no Triton fusion
    assert presets.compile_wanted(tiny_cfg, (9, 0), quantize="4bit") is False
    tiny_cfg.quantize = "4bit"
    assert presets.compile_wanted(tiny_cfg, capability=(9, 0)) is False  # bitsandbytes' 4-bit layers
    tiny_cfg.compile_blocks = "on"
    assert presets.compile_wanted(tiny_cfg, capability=(7, 5)) is True  # "on" is the user's word
    with pytest.raises(ConfigError, match="compile_blocks"):
        get_config("unit", root=str(tiny_cfg.root), compile_blocks="yes")


@pytest.mark.parametrize("bf16", [True, False])
def test_trainer_loss_runs_under_the_accelerators_autocast(tiny_cfg, processor, dataset,
                                                           monkeypatch, bf16):
    """The Trainer's mixed precision reaches `fast_loss` (it replaces the autocast-wrapped
    forward, so it must open the accelerator's autocast itself)."""
    from tableqa_helpers.train import trainer as train_mod

    seen = []
    real = train_mod.fast_loss

    def spy(model, inputs, cache=None):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(model, inputs, cache)

    monkeypatch.setattr(train_mod, "fast_loss", spy)
    model = _model(tiny_cfg, "a")
    trainer = train_mod.make_trainer(
        model, processor, tiny_cfg, "a", dataset["train"].select(range(2)), None,
        output_dir=tiny_cfg.run_dir / "ckpt", max_steps=1, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, disable_tqdm=True, use_cpu=True, bf16=bf16)
    trainer.train()
    assert seen and all(s is bf16 for s in seen)


def test_trainer_compiles_for_the_run_only(tiny_cfg, processor, dataset, monkeypatch):
    """With compile_blocks on, the blocks are compiled while `train()` runs and eager afterwards,
    also when training fails (generation and merging after it run the eager model)."""
    from tableqa_helpers.train import trainer as train_mod

    tiny_cfg.compile_blocks = "on"
    model = _model(tiny_cfg, "a")
    seen = []
    real = train_mod.fast_loss

    def spy(m, inputs, cache=None):
        seen.append(all(x._compiled_call_impl is not None for x in fast.compiled_modules(m)))
        return real(m, inputs, cache)

    monkeypatch.setattr(train_mod, "fast_loss", spy)

    def trainer():
        return train_mod.make_trainer(
            model, processor, tiny_cfg, "a", dataset["train"].select(range(2)), None,
            output_dir=tiny_cfg.run_dir / "ckpt", max_steps=1, per_device_train_batch_size=2,
            gradient_accumulation_steps=1, disable_tqdm=True)

    assert not any(m._compiled_call_impl for m in fast._block_modules(model))
    trainer().train()
    assert seen and all(seen)
    assert not any(m._compiled_call_impl for m in fast._block_modules(model))

    def boom(m, inputs, cache=None):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(train_mod, "fast_loss", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        trainer().train()
    assert not any(m._compiled_call_impl for m in fast._block_modules(model))


def test_linear_patch_embed_same_function_and_gradient(tiny_cfg):
    from tableqa_helpers.model import load_model

    torch.manual_seed(0)
    model = load_model(tiny_cfg, trainable=True)
    embed = model.model.visual.patch_embed
    x = torch.randn(37, embed.in_channels * embed.temporal_patch_size * embed.patch_size ** 2)
    want = embed(x)
    (gw,) = torch.autograd.grad(want.square().sum(), embed.proj.weight)
    assert fast.use_linear_patch_embed(model) == 1
    got = embed(x)
    (gg,) = torch.autograd.grad(got.square().sum(), embed.proj.weight)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(gg, gw, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(embed(x[:5]), want[:5], **TOL)


# ---- decoding without copying the KV cache per head -------------------------------------------
@pytest.mark.parametrize("mask", ["bool", "float", None])
def test_packed_gqa_decoding_step_matches_repeated_heads(mask):
    """One query token against 2 KV heads of 3 query heads each, with left padding."""
    from transformers.integrations.sdpa_attention import repeat_kv

    torch.manual_seed(0)
    b, kv, groups, s, d = 3, 2, 3, 11, 8
    module = torch.nn.Module()
    module.num_key_value_groups = groups
    q, k, v = torch.randn(b, kv * groups, 1, d), torch.randn(b, kv, s, d), torch.randn(b, kv, s, d)
    keep = torch.ones(b, 1, 1, s, dtype=torch.bool)
    keep[1, ..., :4] = keep[2, ..., :7] = False  # rows 1 and 2 are left-padded
    attn = {"bool": keep, "float": torch.zeros(keep.shape).masked_fill(~keep, -1e9), None: None}[mask]
    calls = []

    def stock(module, query, key, value, attention_mask, **kw):
        calls.append(query.shape)
        return torch.zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3]), None

    out, _ = fast._packed_gqa_sdpa(stock)(module, q, k, v, attn, dropout=0.0, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=attn, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, want, **TOL)
    assert not calls  # a decoding step is packed; a prompt (several queries) goes to the stock one
    fast._packed_gqa_sdpa(stock)(module, torch.randn(b, kv * groups, 4, d), k, v, None)
    assert calls == [(b, kv * groups, 4, d)]
    if mask == "bool":  # inside a compiled graph too (a static cache's compiled decoding step)
        packed = torch.compile(fast._packed_gqa_sdpa(stock), backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(packed(module, q, k, v, attn, dropout=0.0, scaling=0.3)[0],
                                   want, **TOL)
        assert len(calls) == 1


def test_packed_gqa_decoding_generates_the_same(tiny_cfg, processor, dataset, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from tableqa_helpers.data import GenerationCollator
    from tableqa_helpers.infer import generate_batch
    from tableqa_helpers.model import load_model

    model = load_model(tiny_cfg).eval()
    batch = GenerationCollator(processor, tiny_cfg.system_prompt)(
        [dataset["test"][i] for i in range(3)])  # different lengths: left padding
    stock, made, queries = ALL_ATTENTION_FUNCTIONS["sdpa"], fast._packed_gqa_sdpa, []

    def counted(stock):  # the packed function, noting each call's query length
        packed = made(stock)
        return lambda module, query, *a, **kw: queries.append(query.shape[2]) or packed(
            module, query, *a, **kw)

    monkeypatch.setattr(fast, "_packed_gqa_sdpa", counted)
    with fast.packed_gqa_decoding(force=True):
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not stock
        packed = generate_batch(model, processor, batch, 12)
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock  # put back
    layers = model.config.text_config.num_hidden_layers
    assert queries.count(1) >= 11 * layers and max(queries) > 1  # 11 decoding steps, 1 prompt
    assert packed == generate_batch(model, processor, batch, 12)
