"""The tutorial's training recipe as written (TRL SFTTrainer, its collator and settings), timed.

    python -m bench.tutorial --tier {a,b} --shape {tiny,7b} --steps N --ga G --out DIR

Tier A: LoRA r=16/alpha 8/dropout 0.05 on the bare names q/k/v/o/gate/up/down_proj (which also
hit the 32 vision MLPs) + "multi_modal_projector" (matches nothing). Tier B: LoRA r=8/alpha
32/dropout 0.1 on ``attn.qkv``/``attn.proj`` of all 32 vision blocks, everything frozen, then
the LoRA of the last 4 blocks unfrozen. Both: batch 3, gradient checkpointing (non-reentrant),
bf16, tf32, adamw_torch_fused, cosine, the tutorial's collator (chat template with
``add_generation_prompt=True`` on the full conversation, `qwen_vl_utils.process_vision_info`,
labels = input ids minus padding and vision tokens). Changes current libraries force:
``warmup_steps=0.07`` for the removed ``warmup_ratio``; the processor passed as
``processing_class``; ``max_length=None``; SDPA because flash-attn is not installed. ``--ga``
only sets how many micro-batches make the timed step (the tutorial's 8 gives the same
per-sample time; fewer keeps the run short). Same stand-in model and data as bench.bench.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import torch

from bench import tables
from bench.bench import TUTORIAL_SYSTEM, token_stats
from bench.common import (Log, build, card, cuda, flops_per_sample, mfu, peak_gib, scratch,
                          step_timer)
from tableqa_helpers.config import get_config


def tier_a(model):
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
               "multi_modal_projector"]
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=8, lora_dropout=0.05, bias="none",
                                            target_modules=targets, task_type="CAUSAL_LM"))


def tier_b(model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.10, bias="none", task_type="CAUSAL_LM",
                     target_modules=["attn.qkv", "attn.proj"])
    peft_model = get_peft_model(model, cfg)
    for _, p in peft_model.named_parameters():
        p.requires_grad_(False)
    layer_re = re.compile(r"model\.visual\.blocks\.(\d+)\.")
    vision_layers = sorted({int(m.group(1)) for n, _ in peft_model.named_modules()
                            if (m := layer_re.search(n))})
    last_n = set(vision_layers[-4:])
    for n, p in peft_model.named_parameters():
        m = layer_re.search(n)
        if "lora_" in n and m and int(m.group(1)) in last_n and ("attn.qkv" in n or "attn.proj" in n):
            p.requires_grad_(True)
    return peft_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tier", default="b", choices=["a", "b"])
    ap.add_argument("--shape", default="tiny", choices=["tiny", "7b"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--bs", type=int, default=3)
    ap.add_argument("--ga", type=int, default=4)
    ap.add_argument("--out", default=".bench_out")
    a = ap.parse_args(argv)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    try:
        from qwen_vl_utils import process_vision_info
    except ImportError:
        raise SystemExit("the tutorial's recipe needs qwen-vl-utils (carry its wheel)")
    log = Log(a.out, "tutorial")
    cfg = get_config("full" if a.shape == "7b" else "tiny", root=scratch("tutorial-root-"))
    t0 = time.perf_counter()
    model, processor = build(a.shape, cfg.min_pixels, cfg.max_pixels)
    build_s = time.perf_counter() - t0
    model.config.use_cache = False
    model.gradient_checkpointing_enable()
    peft_model = tier_a(model) if a.tier == "a" else tier_b(model)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n = a.steps * a.bs * a.ga
    rows = tables.rows(1000, n, workers=min(12, os.cpu_count() or 1) if a.shape == "7b" else 0)
    stats = token_stats(processor, cfg, rows)
    train = Dataset.from_list(rows)

    def format_data(sample):
        return [{"role": "system", "content": [{"type": "text", "text": TUTORIAL_SYSTEM}]},
                {"role": "user", "content": [{"type": "image", "image": sample["image"]},
                                             {"type": "text", "text": sample["question"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": sample["answer"]}]}]

    def collate_fn(examples):
        msgs = [format_data(sample) for sample in examples]
        texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in msgs]
        image_inputs, _ = process_vision_info(msgs)
        batch = processor(text=texts, images=image_inputs, return_tensors="pt", padding=True,
                          truncation=False, max_length=None)
        labels = batch["input_ids"].detach().clone()
        labels[labels == processor.tokenizer.pad_token_id] = -100
        img_ids = set()
        for attr in ("image_token_id", "video_token_id"):
            v = getattr(model.config, attr, None)
            if v is not None:
                img_ids.add(v)
        for tok in ("<image>", "<img>", "<video>", "<|vision_start|>", "<|vision_end|>"):
            tid = processor.tokenizer.convert_tokens_to_ids(tok)
            if tid not in (None, -1, processor.tokenizer.unk_token_id):
                img_ids.add(tid)
        if img_ids:
            mask = torch.isin(labels, torch.tensor(sorted(img_ids), dtype=labels.dtype))
            labels[mask] = -100
        batch["labels"] = labels
        return batch

    use_bf16 = cuda() and torch.cuda.is_bf16_supported()
    args = SFTConfig(
        output_dir=scratch("tutorial-"), max_steps=a.steps,
        per_device_train_batch_size=a.bs, gradient_accumulation_steps=a.ga,
        dataloader_pin_memory=True, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=use_bf16,
        fp16=False, tf32=cuda(), learning_rate=1e-4 if a.tier == "a" else 2e-5,
        lr_scheduler_type="cosine", warmup_steps=0.07, max_grad_norm=1.0, weight_decay=0.01,
        optim="adamw_torch_fused" if cuda() else "adamw_torch", logging_steps=20,
        save_strategy="no", report_to="none", remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True}, dataset_text_field="", max_length=None)
    timer = step_timer()
    trainer = SFTTrainer(model=peft_model, args=args, train_dataset=train, data_collator=collate_fn,
                         processing_class=processor, callbacks=[timer])
    if cuda():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    per_step = a.bs * a.ga
    steady = timer.times[1:] or timer.times  # the first step warms up
    rate = per_step * len(steady) / sum(steady)
    fl = flops_per_sample(model.config, stats["tokens"], stats["visual"], stats["labelled"], a.tier)
    log({"part": f"tutorial_tier_{a.tier}", "card": card(), "shape": a.shape, "batch_size": a.bs,
         "grad_accum": a.ga, "checkpointing": True, "trainable": trainable,
         "build_s": round(build_s, 1), "step_s": [round(x, 2) for x in timer.times],
         "samples_measured": per_step * len(steady), "samples_per_s": round(rate, 3),
         "tokens_per_s": round(rate * stats["tokens"]), "mfu": mfu(rate, fl),
         "tokens_per_sample": round(stats["tokens"], 1), **peak_gib()})
    print("DONE", statistics.mean(steady), flush=True)


if __name__ == "__main__":
    main()
