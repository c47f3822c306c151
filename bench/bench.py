"""This project's training and inference speed, plus the tutorial's inference, on one card.

    python -m bench.bench --shape {tiny,7b} --out DIR [--parts vision,profile,a,b,infer,fused_check]

One process builds Qwen2.5-VL at the chosen shape with random weights (same FLOPs as the real
model) and runs, in order:
- vision: the vision tower's forward (no_grad) on 3 images, transformers' per-window SDPA loop
  ("stock") vs `fast.use_grouped_vision_attention` ("grouped"), on a GPU also grouped with
  compiled blocks;
- profile_ours: our Tier A micro-batch, vision output cached and computed, eager and (GPU) in
  compiled blocks, with profiler tables under --profiler;
- profile: one micro-batch of the tutorial's Tier A step (its LoRA targets, checkpointing with
  input-grad hooks, full logits, stock attention) timed whole and by part, with a profiler table;
- a / b: the project's Tier A / Tier B through `train.make_trainer` (the Trainer, collator,
  DataLoader workers and VisionCache a real run uses) at the default GPU preset and alternatives.
  Tier A: epoch 1 (every image a cache miss: the vision tower runs) and epoch 2 (all hits), each
  timed over all of its optimizer steps after a warm-up run on other rows;
- fused_check: loss and gradients of a few Tier A micro-batches, plain vs liger-kernel's fused
  RMSNorm / SwiGLU (`model/fused.py`) vs compiled blocks, on the same batches;
- infer (after training): the tutorial's one-at-a-time `generate` (stock attention) vs
  `infer.generate_batch` over `GenerationCollator` batches (grouped attention), same
  `max_new_tokens`; optionally sorted by length and with a static KV cache.
Records go to DIR/ours.jsonl (one JSON object each) and a summary line per record to stdout.
"""
from __future__ import annotations

import argparse
import copy
import functools
import gc
import os
import statistics
import time
import traceback

import torch

from bench import tables
from bench.common import (Log, build, card, cuda, flops_per_sample, mfu, peak_gib, reset_memory,
                          scratch, step_timer, sync, versions)
from tableqa_helpers.hardware import presets
from tableqa_helpers.model import fast, fused
from tableqa_helpers.data import GenerationCollator, TrainCollator, count_tokens
from tableqa_helpers.config import get_config
from tableqa_helpers.train.loss import VisionCache, _inner
from tableqa_helpers.train import make_trainer

TUTORIAL_SYSTEM = (
    "You are a Vision Language Model specialized in interpreting visual data from charts and "
    "diagrams images.\nAnswer the questions strictly from the image, with clear, rigorous "
    "step-by-step justification. Stay concise, but include all reasoning that\u2019s relevant.")


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _timed(fn, n=1):
    """Seconds per call of `fn` after one warm-up call, the device synchronised around."""
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n


def token_stats(processor, cfg, rows) -> dict:
    counts = [count_tokens(processor, r, cfg.system_prompt) for r in rows]
    labelled = [len(processor.tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) + 1
                for r in rows]
    return {"tokens": statistics.mean(c["total"] for c in counts),
            "visual": statistics.mean(c["visual"] for c in counts),
            "labelled": statistics.mean(labelled)}


# ---- vision tower ---------------------------------------------------------------------------
def bench_vision(model, processor, cfg, rows, log, repeats, out_dir=".", profile=False):
    collate = TrainCollator(processor, cfg.system_prompt, cfg.max_length)
    batch = collate(rows[:3])
    dev = "cuda" if cuda() else "cpu"
    visual = _inner(model).model.visual
    pv = batch["pixel_values"].to(dev, visual.dtype)
    grid = batch["image_grid_thw"].to(dev)
    out = {}
    modes = ("stock", "grouped", "compiled") if cuda() else ("stock", "grouped")
    for mode in modes:  # compiled: grouped, with the blocks' MLPs and norms compiled
        (fast.use_stock_vision_attention if mode == "stock" else fast.use_grouped_vision_attention)(model)
        if mode == "compiled":
            fast.compile_blocks(model)
        times = []
        with torch.no_grad():
            for i in range(repeats + 2):  # two warm-ups: the second new shape makes it dynamic
                sync()
                t = time.perf_counter()
                y = visual(pv, grid_thw=grid).pooler_output
                sync()
                if i > 1:
                    times.append(time.perf_counter() - t)
        fast.uncompile_blocks(model)
        out[mode] = (statistics.median(times), y.float())
    if cuda() and profile:
        try:
            from torch.profiler import ProfilerActivity, profile as prof_ctx

            with torch.no_grad(), prof_ctx(activities=[ProfilerActivity.CPU,
                                                       ProfilerActivity.CUDA]) as prof:
                visual(pv, grid_thw=grid)
                sync()
            with open(os.path.join(out_dir, "profile_vision_grouped.txt"), "w") as f:
                f.write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
        except Exception as e:
            print("vision profile failed:", e)
    def rel(mode):
        return ((out[mode][1] - out["stock"][1]).norm() / out["stock"][1].norm()).item()

    rec = {"part": "vision", "images": 3, "patches": int(pv.shape[0]),
           "stock_s": round(out["stock"][0], 4), "grouped_s": round(out["grouped"][0], 4),
           "speedup": round(out["stock"][0] / out["grouped"][0], 2), "rel_diff": rel("grouped")}
    if "compiled" in out:
        rec.update(compiled_s=round(out["compiled"][0], 4), compiled_rel_diff=rel("compiled"))
    log(rec)


# ---- the tutorial's micro-batch, taken apart -------------------------------------------------
def _profile_step(step, rec, out_dir, name="profile_tutorial_step.txt"):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    ka = prof.key_averages()
    table = ka.table(sort_by="self_cuda_time_total", row_limit=25)
    cpu_table = ka.table(sort_by="self_cpu_time_total", row_limit=15)
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(table + "\n\n" + cpu_table)
    events = [e for e in ka]
    # device-side events only, as the table's "Self CUDA time total" counts them (an operator's
    # row repeats the time of its kernels' rows: records before 2026-12-07 counted both, 2x)
    # "Command Buffer Full" is CUPTI marking the host blocked on a full launch queue, not a kernel:
    # recorded on its own as `command_buffer_full_s`. The footer never counted it (checked on an
    # H100, 2026-12-08: bench/RESULTS.md), so leaving it out changes no `gpu_busy_s`.
    def dev_us(e):
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))

    full = [e for e in events if "Command Buffer Full" in e.key]
    kernel_us = sum(dev_us(e) for e in events if getattr(e, "device_type", None) == DeviceType.CUDA
                    and not getattr(e, "is_user_annotation", False) and e not in full)
    rec["command_buffer_full_s"] = round(sum(dev_us(e) for e in full) / 1e6, 3)
    sdpa = [e for e in events if "scaled_dot_product" in e.key or "flash" in e.key.lower()
            or "efficient_attention" in e.key]
    rec["gpu_busy_s"] = round(kernel_us / 1e6, 3)
    rec["sdpa_calls"] = max((e.count for e in sdpa), default=0)
    rec["sync_calls"] = sum(e.count for e in events if "Synchronize" in e.key
                            or e.key in ("aten::item", "aten::_local_scalar_dense"))


def bench_profile(model, processor, cfg, rows, log, out_dir, profiler=True):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
               "multi_modal_projector"]
    fast.use_stock_vision_attention(model)
    pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=8, lora_dropout=0.05, bias="none",
                                          target_modules=targets, task_type="CAUSAL_LM"))
    net = _inner(pm)
    net.config.use_cache = False
    net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net.enable_input_require_grads()  # what TRL does for PEFT + checkpointing
    pm.train()
    collate = TrainCollator(processor, cfg.system_prompt, cfg.max_length)
    dev = "cuda" if cuda() else "cpu"
    batch = {k: v.to(dev) for k, v in collate(rows[:3]).items()}
    visual = net.model.visual

    def step():
        loss = pm(**batch).loss
        loss.backward()

    timed = _timed

    rec = {"part": "profile", "what": "tutorial Tier A micro-batch (3 samples)",
           "tokens": int(batch["attention_mask"].sum())}
    rec["step_stock_s"] = round(timed(step), 3)
    with fast.sdpa_without_cudnn():
        rec["step_stock_nocudnn_s"] = round(timed(step), 3)

    def vision_graph():  # the vision tower as the tutorial runs it: with a graph, then backward
        y = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
        y.float().pow(2).mean().backward()

    def vision_nograd():
        with torch.no_grad():
            visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])

    rec["vision_fwd_bwd_stock_s"] = round(timed(vision_graph), 3)
    rec["vision_nograd_stock_s"] = round(timed(vision_nograd), 3)
    if cuda() and profiler:
        try:
            _profile_step(step, rec, out_dir)
        except Exception as e:  # the timings above stay
            rec["profile_error"] = f"{type(e).__name__}: {e}"[:200]
    fast.use_grouped_vision_attention(pm)
    rec["step_grouped_s"] = round(timed(step), 3)
    with fast.sdpa_without_cudnn():
        rec["step_grouped_nocudnn_s"] = round(timed(step), 3)
        rec["vision_fwd_bwd_grouped_s"] = round(timed(vision_graph), 3)
        rec["vision_nograd_grouped_s"] = round(timed(vision_nograd), 3)
    log(rec)
    net.disable_input_require_grads()
    net.gradient_checkpointing_disable()
    base = pm.unload()
    if hasattr(base, "peft_config"):
        del base.peft_config
    batch.clear()
    reset_memory()
    return base


# ---- our Tier A micro-batch, taken apart ----------------------------------------------------
def profile_ours(pm, processor, cfg, rows, log, out_dir, bs=1, profiler=True, compiled=False):
    """One Tier A micro-batch through `fast_loss` as the Trainer runs it (bf16 autocast), with
    the vision output cached ("hit") and computed ("miss"); `compiled`: inside compiled blocks."""
    from tableqa_helpers.train import fast_loss

    dev = "cuda" if cuda() else "cpu"
    collate = TrainCollator(processor, cfg.system_prompt, cfg.max_length, image_keys=True)
    batch = collate(rows[:bs])
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
    cache = VisionCache(2 ** 33)
    pm.train()
    ac = torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda())

    def hit():
        with ac:
            loss = fast_loss(pm, batch, cache)
        loss.backward()

    def miss():
        with ac:
            loss = fast_loss(pm, batch, None)
        loss.backward()

    def fwd():
        with torch.no_grad(), ac:
            fast_loss(pm, batch, cache)

    timed = functools.partial(_timed, n=3)

    rec = {"part": "profile_ours", "batch_size": bs, "tokens": int(batch["attention_mask"].sum()),
           "compiled": compiled}
    if compiled:  # as the Trainer runs it by default on a GPU; _timed's warm-up call compiles
        fast.compile_blocks(pm)
    try:
        rec.update(hit_fwd_bwd_s=round(timed(hit), 4), miss_fwd_bwd_s=round(timed(miss), 4),
                   hit_fwd_nograd_s=round(timed(fwd), 4))
        for name, step in (("hit", hit), ("miss", miss)) if cuda() and profiler else ():
            sub = {}
            try:
                _profile_step(step, sub, out_dir, name=f"profile_ours_bs{bs}"
                              f"{'_compiled' if compiled else ''}_{name}.txt")
            except Exception as e:
                sub["profile_error"] = f"{type(e).__name__}: {e}"[:200]
            rec.update({f"{name}_{k}": v for k, v in sub.items()})
    finally:
        if compiled:
            fast.uncompile_blocks(pm)
    pm.zero_grad(set_to_none=True)
    log(rec)
    batch.clear()
    cache.items.clear()
    reset_memory()


def check_fused(pm, processor, cfg, rows, log, n=3):
    """Loss and LoRA gradients of `n` Tier A micro-batches (bf16 autocast, eager): plain kernels
    against liger's (`model/fused.py`) and against compiled blocks, on the same batches."""
    from tableqa_helpers.model import fused
    from tableqa_helpers.train import fast_loss

    dev = "cuda" if cuda() else "cpu"
    collate = TrainCollator(processor, cfg.system_prompt, cfg.max_length)
    batches = [{k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in collate([r]).items()}
               for r in rows[:n]]
    pm.train()

    def run():
        out = []
        for b in batches:
            pm.zero_grad(set_to_none=True)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda()):
                loss = fast_loss(pm, b)
            loss.backward()
            out.append((loss.item(), {k: p.grad.float().clone() for k, p in pm.named_parameters()
                                      if p.grad is not None}))
        return out

    def diff(a, b):  # max over batches: relative loss difference, relative difference of the
        loss = max(abs(x[0] - y[0]) / abs(x[0]) for x, y in zip(a, b))  # whole gradient vector
        grad = max(float(torch.cat([(x[1][k] - y[1][k]).flatten() for k in x[1]]).norm()
                         / torch.cat([x[1][k].flatten() for k in x[1]]).norm()) for x, y in zip(a, b))
        return round(loss, 6), round(grad, 5)

    plain = run()
    again = run()  # the plain path twice: the run-to-run noise of the kernels themselves
    rec = {"part": "fused_check", "batches": n, "losses_plain": [round(x[0], 5) for x in plain],
           "plain_vs_plain": diff(plain, again)}
    rec["liger_modules"] = fused.use_liger_kernels(pm)
    try:
        liger = run()
        rec["losses_liger"] = [round(x[0], 5) for x in liger]
        rec["liger_vs_plain"] = diff(plain, liger)  # (max relative loss diff, max relative grad diff)
    finally:
        fused.use_plain_kernels(pm)
    fast.compile_blocks(pm)
    try:
        rec["compiled_vs_plain"] = diff(plain, run())
    finally:
        fast.uncompile_blocks(pm)
    pm.zero_grad(set_to_none=True)
    log(rec)
    batches.clear()
    reset_memory()


# ---- training ------------------------------------------------------------------------------
def run_training(model, processor, cfg, tier, name, settings, warm_rows, rows, epochs, log,
                 stats, flops):
    """One variant: warm-up on other rows, then `epochs` epochs over `rows`, each step timed."""
    c = copy.deepcopy(cfg)
    settings, changes = settings if isinstance(settings, list) else (settings, {})
    changes = dict(changes)
    pinned = changes.pop("pinned_cache", False)  # VisionCache.pinned for this variant
    for field, value in changes.items():  # config fields this variant changes
        setattr(c, field, value)
    if settings == "default":
        c.gpu = "auto"
    elif isinstance(settings, str):
        c.gpu = settings  # a named preset
    else:  # an ad-hoc preset for this variant
        presets.GPU_PRESETS[f"bench_{name}"] = dict(train_a=settings, train_b=settings,
                                                 gen_batch_size=8, eval_batch_size=1)
        c.gpu = f"bench_{name}"
    preset = presets.gpu_preset(c, tier)
    bs, ga = preset["batch_size"], preset["grad_accum"]
    rec = {"part": f"tier_{tier}", "variant": name, "preset": preset["preset"], "batch_size": bs,
           "grad_accum": ga, "checkpointing": preset["gradient_checkpointing"],
           "workers": c.dataloader_workers, "compiled": presets.compile_wanted(c),
           "fused": c.fused_kernels}
    tmp = scratch("bench-")
    common = dict(output_dir=tmp, logging_strategy="no", save_strategy="no", eval_strategy="no",
                  disable_tqdm=True, report_to=[])
    reset_memory()
    dynamo_before = _dynamo_counts()
    VisionCache.pinned = pinned
    try:
        warm = make_trainer(model, processor, c, tier, Rows(warm_rows), None, max_steps=1,
                            gradient_accumulation_steps=max(1, len(warm_rows) // bs), **common)
        sync()
        t = time.perf_counter()
        warm.train()
        sync()
        rec["warmup_s"] = round(time.perf_counter() - t, 1)  # includes compiling, if any
        del warm
        gc.collect()
        timer = step_timer()
        trainer = make_trainer(model, processor, c, tier, Rows(rows), None,
                               num_train_epochs=epochs, callbacks=[timer], **common)
        trainer.train()
        steps_per_epoch = -(-len(rows) // (bs * ga))
        per_epoch = [timer.times[i * steps_per_epoch:(i + 1) * steps_per_epoch]
                     for i in range(epochs)]
        rec["step_s"] = [round(x, 2) for x in timer.times]
        rec["samples_per_epoch"] = len(rows)
        for i, ts in enumerate(per_epoch, 1):
            rec[f"epoch{i}_samples_per_s"] = round(len(rows) / sum(ts), 3)
            if len(ts) > 1:  # without the epoch's first step (it also waits for the loader)
                rec[f"epoch{i}_after_first_step_samples_per_s"] = round(
                    (len(ts) - 1) * bs * ga / sum(ts[1:]), 3)
        total = sum(timer.times)
        rec["samples_per_s"] = round(epochs * len(rows) / total, 3)
        rec["tokens_per_s"] = round(rec["samples_per_s"] * stats["tokens"])
        rec["mfu"] = mfu(rec["samples_per_s"], flops)
        if trainer.vision_cache is not None:
            rec["cache"] = trainer.vision_cache.stats()
        rec["dynamo"] = _dynamo_counts(dynamo_before)  # this variant's warm-up and run
        del trainer
    except torch.OutOfMemoryError as e:
        rec["error"] = "OOM: " + str(e).split("\n")[0][:160]
    except Exception as e:  # keep the other variants running
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
        traceback.print_exc()
    finally:
        VisionCache.pinned = False
    rec.update(peak_gib())
    log(rec)
    reset_memory()


def _dynamo_counts(before: dict | None = None) -> dict:
    """torch.compile's counters (since `before`, if given): graphs compiled, graph breaks, and
    frames dynamo gave up on (run eagerly: a recompile limit, an unsupported construct)."""
    from torch._dynamo.utils import counters

    now = {"unique_graphs": counters["stats"].get("unique_graphs", 0),
           "graph_breaks": sum(counters["graph_break"].values()),
           "frames_not_compiled": counters["frames"].get("total", 0) - counters["frames"].get("ok", 0)}
    return {k: v - (before or {}).get(k, 0) for k, v in now.items()}


# ---- inference -----------------------------------------------------------------------------
def tutorial_generate(model, processor, sample, max_new_tokens):
    """The tutorial's `generate_text_from_sample`, as written (one sample, default padding)."""
    try:
        from qwen_vl_utils import process_vision_info
    except ImportError:  # the tutorial's helper; without it, the image goes in as is
        def process_vision_info(msgs):
            return [c["image"] for m in msgs for c in m["content"] if c.get("type") == "image"], None
    msgs = [{"role": "system", "content": [{"type": "text", "text": TUTORIAL_SYSTEM}]},
            {"role": "user", "content": [{"type": "image", "image": sample["image"]},
                                         {"type": "text", "text": sample["question"]}]}]
    text_input = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    image_inputs, _ = process_vision_info(msgs)
    dev = "cuda" if cuda() else "cpu"
    model_inputs = processor(text=[text_input], images=image_inputs, return_tensors="pt").to(dev)
    generated_ids = model.generate(**model_inputs, max_new_tokens=max_new_tokens, do_sample=False)
    trimmed = [out[len(inp):] for inp, out in zip(model_inputs.input_ids, generated_ids)]
    text = processor.batch_decode(trimmed, skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)
    return text[0], len(trimmed[0])


def gen_spec(spec: str) -> tuple[int, bool, str | None, bool, bool]:
    """A `--gen-batches` entry: "32" (batch size), "64s" (rows sorted by length), "64s+static"
    (and a static KV cache), "+compiled" (compiled blocks, `fast.compile_blocks`), "+liger"
    (liger's fused RMSNorm / SwiGLU, `fused.use_liger_kernels`) ->
    (batch size, sorted, cache implementation, compiled, liger)."""
    size, *opts = spec.split("+")
    unknown = set(opts) - {"static", "compiled", "liger"}
    if unknown or not size.rstrip("s").isdigit():
        raise ValueError(f"--gen-batches entry {spec!r}: expected N, Ns, then "
                         "+static / +compiled / +liger")
    return (int(size.rstrip("s")), size.endswith("s"), "static" if "static" in opts else None,
            "compiled" in opts, "liger" in opts)


def bench_infer(model, processor, cfg, rows, log, max_new_tokens, n_tutorial, batch_sizes,
                profile=False, out_dir="."):
    """The tutorial's one-at-a-time generation, then ours per `--gen-batches` entry; `profile`:
    torch.profiler over the first entry without a static cache or compiled blocks, generating 1
    and 17 new tokens (their kernel times differ by 16 decoding steps)."""
    from tableqa_helpers.infer import generate_batch, prompt_batches

    model.eval()
    _inner(model).config.use_cache = True
    model.generation_config.use_cache = True
    fast.use_stock_vision_attention(model)
    with torch.no_grad():
        tutorial_generate(model, processor, rows[0], 8)  # warm-up
        sync()
        t = time.perf_counter()
        made = []
        for r in rows[:n_tutorial]:  # stop early when it is very slow (at least one sample)
            made.append(tutorial_generate(model, processor, r, max_new_tokens)[1])
            if time.perf_counter() - t > 60:
                break
        sync()
    dt = time.perf_counter() - t
    n_tutorial = len(made)
    base = {"part": "infer", "max_new_tokens": max_new_tokens}
    tut = log({**base, "variant": "tutorial one-at-a-time", "batch": 1, "samples": n_tutorial,
               "seconds": round(dt, 2), "samples_per_s": round(n_tutorial / dt, 3),
               "new_tokens_mean": statistics.mean(made), **peak_gib()})
    fast.use_grouped_vision_attention(model)
    collate = GenerationCollator(processor, cfg.system_prompt)
    profiled = False
    for spec in batch_sizes:
        bsz, by_length, cache, compiled, liger = gen_spec(spec)
        reset_memory()
        n = bsz * max(1, min(2, len(rows) // bsz))
        use = rows[:n]
        if by_length:  # similar lengths share a batch: less padding
            use = sorted(use, key=lambda r: count_tokens(processor, r, cfg.system_prompt)["total"])
        name = ("ours batched" + (", sorted" if by_length else "") + (f", {cache} cache" if cache else "")
                + (", compiled blocks" if compiled else "") + (", liger" if liger else ""))
        if liger:
            fused.use_liger_kernels(model)
        if compiled:
            fast.compile_blocks(model)
        try:
            with torch.no_grad():
                # warm-up at the timed batch size (a static cache compiles the decoding step; compiled
                # blocks compile prefill and decoding shapes), then the first batch's prefill alone
                generate_batch(model, processor, collate(use[:bsz] if cache or compiled else use[:2]),
                               max_new_tokens if cache else 8, cache)  # static: the timed cache size
                sync()
                t = time.perf_counter()
                generate_batch(model, processor, collate(use[:bsz]), 1, cache)
                sync()
                prefill = time.perf_counter() - t
                t = time.perf_counter()
                made = []  # prompts prepared ahead of the GPU, as in predict() (infer.prompt_batches)
                chunks = [list(range(s, min(s + bsz, n))) for s in range(0, n, bsz)]
                for _, _, _, batch in prompt_batches(use, chunks, processor, cfg.system_prompt,
                                                     cfg.dataloader_workers):
                    made += generate_batch(model, processor, batch, max_new_tokens, cache)[1]
                sync()
            dt = time.perf_counter() - t
            rate = n / dt
            log({**base, "variant": name, "batch": bsz, "samples": n,
                 "seconds": round(dt, 2), "samples_per_s": round(rate, 3),
                 "speedup_vs_tutorial": round(rate / tut["samples_per_s"], 2),
                 "prefill_first_batch_s": round(prefill, 2),
                 "workers": cfg.dataloader_workers,
                 "new_tokens_mean": statistics.mean(made), **peak_gib()})
            if profile and not (cache or compiled or liger) and not profiled:  # shapes as timed
                profiled = True
                for k in (1, 17):
                    rec = {"part": "infer_profile", "variant": name, "batch": bsz, "new_tokens": k}
                    t = time.perf_counter()
                    _profile_step(lambda: generate_batch(model, processor, collate(use[:bsz]), k,
                                                         cache), rec, out_dir,
                                  f"profile_generate_{bsz}_{k}.txt")
                    log({**rec, "seconds_profiled": round(time.perf_counter() - t, 2)})
        except torch.OutOfMemoryError:
            log({**base, "variant": name, "batch": bsz, "error": "OOM", **peak_gib()})
        except Exception as e:  # keep the other variants running
            traceback.print_exc()
            log({**base, "variant": name, "batch": bsz, "error": f"{type(e).__name__}: {e}"[:300]})
        finally:
            fast.uncompile_blocks(model)
            fused.use_plain_kernels(model)
        reset_memory()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="tiny", choices=["tiny", "7b"])
    ap.add_argument("--out", default=".bench_out")
    ap.add_argument("--parts", default="vision,profile,profile_ours,a,b,infer")
    ap.add_argument("--epoch-rows", type=int, default=None, help="rows per timed epoch")
    ap.add_argument("--alt-rows", type=int, default=None,
                    help="rows per epoch for the non-default variants (default: --epoch-rows)")
    ap.add_argument("--a-variants", default="default,40gb")
    ap.add_argument("--b-variants", default="default,40gb")
    ap.add_argument("--gen-batches", default="32")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--n-tutorial-gen", type=int, default=None)
    ap.add_argument("--profiler", action="store_true",
                    help="torch.profiler on our micro-batch and on the first --gen-batches entry")
    ap.add_argument("--profiler-tutorial", action="store_true",
                    help="torch.profiler on the tutorial's micro-batch (slow: ~2 min at 7B)")
    a = ap.parse_args(argv)
    big = a.shape == "7b"
    parts = set(a.parts.split(","))
    log = Log(a.out, "ours")
    root = scratch("bench-root-")
    cfg = get_config("full" if big else "tiny", root=root)
    cfg.dataloader_workers = min(12, max(0, (os.cpu_count() or 2) - 3)) if cuda() else 0
    if not cuda():
        cfg.dtype = "float32"
    per_epoch = a.epoch_rows or (48 if big else 8)
    n_gen = max(gen_spec(x)[0] for x in a.gen_batches.split(",")) * (2 if big else 1)
    t0 = time.perf_counter()
    workers = min(12, os.cpu_count() or 1) if big else 0  # rendered before CUDA starts
    warm_rows = tables.rows(0, 8 if big else 4, workers=workers)
    rows = tables.rows(1000, per_epoch, workers=workers)
    gen_rows = tables.rows(2000, n_gen, workers=workers)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, processor = build(a.shape, cfg.min_pixels, cfg.max_pixels)
    log({"part": "env", **versions(), "shape": a.shape,
         "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
         "build_s": round(time.perf_counter() - t0, 1)})
    stats = token_stats(processor, cfg, rows)
    log({"part": "data", "rows": len(warm_rows) + len(rows) + len(gen_rows),
         "render_s": round(render_s, 1), **{k: round(v, 1) for k, v in stats.items()}})
    fa = flops_per_sample(model.config, stats["tokens"], stats["visual"], stats["labelled"], "a")
    fb = flops_per_sample(model.config, stats["tokens"], stats["visual"], stats["labelled"], "b")
    log({"part": "flops", "tier_a_per_sample": fa, "tier_b_per_sample": fb,
         "tier_a_ceiling_samples_per_s": round(989.4e12 / fa, 2),
         "tier_b_ceiling_samples_per_s": round(989.4e12 / fb, 2)})

    def guarded(name, fn):
        try:
            return fn()
        except Exception as e:
            traceback.print_exc()
            log({"part": name, "error": f"{type(e).__name__}: {e}"[:300]})
            reset_memory()

    if "vision" in parts:
        guarded("vision", lambda: bench_vision(model, processor, cfg, rows, log, 5 if big else 1,
                                               a.out, a.profiler))
    if "profile" in parts:
        model = guarded("profile", lambda: bench_profile(model, processor, cfg, rows, log, a.out,
                                                         a.profiler_tutorial)) or model
    fast.use_grouped_vision_attention(model)  # what load_model does under SDPA
    eager = {"compile_blocks": "off", "fused_kernels": "off"}  # a [settings, config changes] pair
    liger = {"fused_kernels": "liger"}  # liger-kernel's RMSNorm / SwiGLU (model/fused.py)
    variants = {"default": "default", "40gb": "40gb", "eager": ["default", eager],
                "40gb_eager": ["40gb", eager], "liger": ["default", liger],
                "liger_eager": ["default", {**eager, **liger}],
                "pinned": ["default", {"pinned_cache": True}],  # VisionCache.pinned
                "bs2": (2, 12, False),
                "bs1_ga24": (1, 24, False), "bs4_ckpt": (4, 6, True), "bs2_ckpt": (2, 12, True),
                "bs2_ckpt2": (2, 12, 2), "bs3_ckpt2": (3, 8, 2), "bs3_ckpt": (3, 8, True),
                "tutorial_batch": (3, 8, True), "bs3": (3, 8, False)}
    from tableqa_helpers.train import apply_tier_a, apply_tier_b

    for tier, names, epochs in (("a", a.a_variants, 2), ("b", a.b_variants, 1)):
        if tier not in parts:
            continue
        apply = apply_tier_a if tier == "a" else apply_tier_b
        pm = apply(model, cfg)
        if tier == "a" and "fused_check" in parts:
            guarded("fused_check", lambda: check_fused(pm, processor, cfg, rows, log))
        if tier == "a" and "profile_ours" in parts:
            for compiled in (False, True) if cuda() else (False,):
                guarded("profile_ours", lambda: profile_ours(pm, processor, cfg, rows, log, a.out,
                                                             1, a.profiler, compiled))
        for name in names.split(","):
            use = rows if name == "default" or not a.alt_rows else rows[:a.alt_rows]
            run_training(pm, processor, cfg, tier, name, variants[name], warm_rows, use, epochs,
                         log, stats, fa if tier == "a" else fb)
        model = pm.unload()
        if hasattr(model, "peft_config"):
            del model.peft_config
        reset_memory()
    if "infer" in parts:  # after training: the model is the plain base again
        guarded("infer", lambda: bench_infer(
            model, processor, cfg, gen_rows, log, a.max_new_tokens or (128 if big else 8),
            a.n_tutorial_gen or (4 if big else 2), a.gen_batches.split(","), a.profiler, a.out))
    print("DONE", card(), flush=True)


if __name__ == "__main__":
    main()
