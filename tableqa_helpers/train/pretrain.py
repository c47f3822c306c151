"""Pretraining the mini base on the reading curriculum (`tableqa_helpers.offline.mini`).

``python -m tableqa_helpers.train.pretrain OUT --steps N ...`` or
``python -m tableqa_helpers pretrain-mini OUT --steps N ...``: the same `pretrain` call. The
checkpoint in OUT loads like the real model (``Qwen2_5_VLForConditionalGeneration`` and
``AutoProcessor.from_pretrained(OUT)``), with ``pretrain_log.json`` beside it.

Needs torch and transformers only (no `datasets`): it runs on a bare GPU machine.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import torch

from ..io import atomic_dir
from ..offline.mini_args import STAGES, add_arguments
from ..model.fast import sdpa_without_cudnn, use_grouped_vision_attention, use_linear_patch_embed
from ..offline.mini_grow import grow
from ..offline.glyphs import GlyphCollator, GlyphSet, glyph_accuracy, glyph_head, glyph_loss
from ..offline.mini import (MINI, LineSet, ReadingCollator, ReadingSet, build_mini_untrained,
                            lines_accuracy, pixel_values, reading_accuracy)


def pretrain(out_dir: str | Path, steps: int = 3000, batch_size: int = 64, lr: float = 1.5e-3,
             seed: int = 0, workers: int = 8, warmup: int = 200, log_every: int = 50,
             time_budget: float | None = None, device: str | None = None,
             eval_every: int | None = None, init: str | Path | None = None,
             stage: str = "tables", grow_lm_layers: int | None = None,
             grow_vision_depth: int | None = None) -> dict:
    """Pretrain the mini base on the reading curriculum and save it to `out_dir`.

    time_budget: seconds of training; the step count is then fixed after step 50 from the
    measured speed (at most `steps`) and logged as ``total_steps``, so `--steps N` repeats the
    run exactly: the learning rate only warms up before step `warmup` (at least 50 then), and
    the cosine that follows depends on the total.
    eval_every: steps between accuracy probes (32 tables or pages; default: at 1/3 and 2/3).
    init: a mini checkpoint to continue from (a later stage of the curriculum; give it another
    `seed` so it sees new tables) instead of fresh weights.
    stage: "glyphs" (the vision tower alone, on dense per-token glyph labels,
    `offline.glyphs`), "lines" (a few strings on a page, `offline.mini.LineSet`), "tables"
    (the reading curriculum, `offline.mini.ReadingSet`), "names" (the same with turns whose
    answers repeat the instruction's row and column names) or "sentences" (names, and turns
    answered by a sentence); glyphs is probed by glyph recall,
    the others by their transcription accuracy.
    grow_lm_layers, grow_vision_depth: deepen the `init` checkpoint first by blocks that start
    as the identity (`offline.mini_grow.grow`).
    Returns the summary also written to ``out_dir/pretrain_log.json``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if (grow_lm_layers or grow_vision_depth) and init is None:
        raise ValueError("growing (grow_lm_layers, grow_vision_depth) needs an init checkpoint")
    if steps < 1 or warmup < 1 or (time_budget is not None and warmup < 50):
        raise ValueError(f"pretrain needs steps >= 1 and warmup >= 1 (>= 50 with a time budget); "
                         f"got steps={steps}, warmup={warmup}")
    threads = torch.get_num_threads()
    if device.type == "cuda":
        # The training process only launches kernels, and its step is bound by that. H100,
        # batch 128: 0.65-0.74 s a step with 15 workers and default threads, 0.24 s with 8
        # workers (the default) and OMP_NUM_THREADS=1, which this is for torch in this process
        # (DataLoader workers already use one thread). Which change mattered is not measured.
        torch.set_num_threads(1)
    try:
        with sdpa_without_cudnn():  # every batch of tables has new shapes (see model.fast)
            return _pretrain(out_dir, steps, batch_size, lr, seed, workers, warmup, log_every,
                             time_budget, device, eval_every, init, stage,
                             (grow_lm_layers, grow_vision_depth))
    finally:
        torch.set_num_threads(threads)


def _pretrain(out_dir, steps, batch_size, lr, seed, workers, warmup, log_every, time_budget,
              device, eval_every, init, stage, growth) -> dict:
    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    model, processor = build_mini_untrained(seed)
    if init is not None:
        model = grow(_load_init(init, model), *growth)
    use_grouped_vision_attention(model)
    use_linear_patch_embed(model)
    model.to(device).train()
    head = glyph_head(model).to(device) if stage == "glyphs" else None
    dataset, collator, accuracy = {
        "glyphs": (GlyphSet, GlyphCollator, lambda m, p, **kw: glyph_accuracy(m, head, p, **kw)),
        "lines": (LineSet, ReadingCollator, lines_accuracy),
        "tables": (ReadingSet, ReadingCollator, reading_accuracy),
        "names": (partial(ReadingSet, names=True), ReadingCollator, reading_accuracy),
        "sentences": (partial(ReadingSet, names=True, sentences=True), ReadingCollator,
                      reading_accuracy)}[stage]
    data, collate = dataset(steps * batch_size, seed=seed), collator(processor)
    _check_collator(collate, [data[i] for i in range(8)])
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, prefetch_factor=4 if workers else None,
                                         persistent_workers=workers > 0, pin_memory=cuda)
    # the glyph stage trains the vision tower and its head only
    trained = (list(model.model.visual.named_parameters()) + list(head.named_parameters())
               if head is not None else list(model.named_parameters()))
    decay = [p for n, p in trained if p.ndim >= 2]
    no_decay = [p for n, p in trained if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    total = [steps]  # a list: the time budget may shorten the cosine after step 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total[0]))
    log, start, step, waited = [], time.time(), 0, 0.0
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
           else torch.autocast("cpu", enabled=False))
    probes = ({s // log_every * log_every for s in (total[0] // 3, 2 * total[0] // 3)}
              if eval_every is None else set())
    ready = time.time()
    for step, batch in enumerate(loader, 1):
        waited += time.time() - ready  # time spent waiting for the data loader
        batch = pixel_values(batch, processor.image_processor, device)
        with amp:
            loss = model(**batch).loss if head is None else glyph_loss(model, head, batch)[0]
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in trained], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == 1:
            entry = {"step": step, "loss": round(loss.item(), 4), "grad_norm": round(norm.item(), 3),
                     "lr": sched.get_last_lr()[0], "seconds": round(time.time() - start, 1),
                     "data_wait": round(waited, 1)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
        if step in probes or (eval_every and step % eval_every == 0):
            entry = {"step": step, **{k: v for k, v in accuracy(
                model, processor, n=32, device=device).items() if k != "examples"}}
            log.append(entry)
            print(json.dumps(entry), flush=True)
        if step == 10:
            t10 = time.time()
        if step == 50 and time_budget is not None:
            rate = 40 / (time.time() - t10)
            total[0] = min(steps, int(50 + rate * (time_budget - (time.time() - start))))
            if eval_every is None:
                probes = {s // log_every * log_every for s in (total[0] // 3, 2 * total[0] // 3)}
            print(json.dumps({"steps_per_second": round(rate, 2), "total_steps": total[0]}), flush=True)
        if step >= total[0]:
            break
        ready = time.time()
    seconds = time.time() - start
    acc = accuracy(model, processor, device=device)
    print(json.dumps({"steps": step, "seconds": round(seconds, 1), **acc}), flush=True)
    summary = {"stage": stage, "init": str(init) if init else None, "grown_to": growth,
               "steps": step,
               "data_wait_seconds": round(waited, 1), "batch_size": batch_size, "lr": lr,
               "seed": seed, "time_budget": time_budget, "total_steps": total[0],
               "seconds": round(seconds, 1),
               "device": torch.cuda.get_device_name(device) if cuda else "cpu",
               "torch": torch.__version__, "log": log, **acc}
    model.to("cpu").to(torch.bfloat16)
    with atomic_dir(out_dir) as tmp:  # a complete checkpoint or none
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "pretrain_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warmup to 1 at `warmup`, then a cosine to 0.1 at `total`
    (before `warmup` it does not depend on `total`)."""
    decay = min(1.0, max(0, step - warmup) / max(1, total - warmup))
    return min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * decay)))


def _load_init(path: str | Path, model):
    """`model` with the weights of the mini checkpoint at `path` (float32)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"--init {path}: no mini checkpoint there (no config.json)")
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    want, got = model.config.to_dict(), loaded.config.to_dict()
    # depths may differ: a grown checkpoint (`offline.mini_grow`) continues like any other
    keys = [("text_config", k) for k in MINI["text"] if k != "num_hidden_layers"]
    keys += [("vision_config", k) for k in MINI["vision"]
             if k not in ("depth", "fullatt_block_indexes")]
    keys += [("text_config", "vocab_size")] + [(None, k) for k in (
        "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")]
    wrong = [f"{part or ''}.{k}" for part, k in keys
             if (want[part] if part else want).get(k) != (got[part] if part else got).get(k)]
    if wrong:  # another shape, or a tokenizer whose ids have changed since
        raise ValueError(f"--init {path} is not a checkpoint of this mini shape and tokenizer: "
                         f"{', '.join(wrong)} differ")
    return loaded


def _check_collator(collate: ReadingCollator, samples: list[dict]) -> None:
    """Stop before training if the 8-bit image path differs from the processor's own batch."""
    fast, ref = pixel_values(collate(samples), collate.processor.image_processor, "cpu"), \
        collate.processor_batch(samples)
    for key, want in ref.items():
        got = fast.get(key)
        if got is None or got.shape != want.shape or (got.float() - want.float()).abs().max() > 1e-4:
            raise RuntimeError(f"ReadingCollator's {key} differs from the processor's; the image "
                               f"path of tableqa_helpers.offline.mini no longer matches transformers")


def run(args: argparse.Namespace) -> dict:
    """`pretrain` with the options of `add_arguments`."""
    return pretrain(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    workers=args.workers, time_budget=args.time_budget, seed=args.seed,
                    device=args.device, init=args.init, eval_every=args.eval_every,
                    stage=args.stage, grow_lm_layers=args.grow_lm_layers,
                    grow_vision_depth=args.grow_vision_depth)


def main(argv=None) -> dict:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m tableqa_helpers.train.pretrain", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
