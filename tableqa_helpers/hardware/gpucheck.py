"""Checking the GPU plans (`hardware`) on a GPU: estimates against measurement, 1 GPU vs several.

- `measure`: a few real training steps of a tier at the 7B shape with random weights
  (`random_checkpoint`), with a plan's settings and, with ``cap_gib``, a memory cap
  (`torch.cuda.set_per_process_memory_fraction`) standing in for a smaller card; returns the
  measured peak next to `hardware.estimate_memory` for the same sample, and (without a cap) the
  activations autograd keeps in one forward next to their eager estimate;
- `compare_runs`: two runs of the same global batch (1 GPU and N GPUs): loss by step and the
  steady-state speed-up from the loss log's `step_seconds`.
Command line: ``python -m tableqa_helpers.hardware measure|compare`` (`bench/gpu_checks.sh` runs
the checks of docs/gpus.md in one go). Without a GPU, `measure` runs on the stand-in as a smoke
test and reports no measured figures.
"""
from __future__ import annotations

import dataclasses
import math
import statistics

from .cards import GIB, detect
from .estimate import QLORA_SPEED, Settings, Shape, estimate_memory, flops_per_sample, settings_of


def main(argv=None) -> None:
    """``python -m tableqa_helpers.hardware measure|compare ...`` (`measure`, `compare_runs`)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m tableqa_helpers.hardware")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="peak memory of real training steps vs the estimate")
    m.add_argument("--model", required=True, help="folder of the model (created at the 7B shape "
                   "with random weights if missing, see --shape)")
    m.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    m.add_argument("--tier", choices=["a", "b"], default="a")
    m.add_argument("--cap-gib", type=float, default=None,
                   help="limit this process to N GiB (torch.cuda.set_per_process_memory_fraction)")
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--snapshot", default=None, help="write a CUDA memory snapshot (pickle) here")
    m.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    m.add_argument("--out", default=None, help="append the JSON record to this file")
    c = sub.add_parser("compare", help="loss by step and throughput of two runs of the same "
                       "global batch (e.g. 1 GPU and 2 GPUs)")
    c.add_argument("one", help="run folder (RUN, holding logs/tier_X.json) of the reference run")
    c.add_argument("other", help="run folder of the other run")
    c.add_argument("--tier", choices=["a", "b"], default="a")
    args = parser.parse_args(argv)
    if args.command == "compare":
        print(json.dumps(compare_runs(args.one, args.other, args.tier), indent=2))
        return
    from ..config import parse_sets

    overrides = parse_sets(args.set)
    record = measure(args.model, args.tier, overrides, shape=args.shape, cap_gib=args.cap_gib,
                     steps=args.steps, snapshot=args.snapshot)
    text = json.dumps(record, default=str)
    print("MEASURE", text, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


def compare_runs(one, other, tier: str = "a") -> dict:
    """Per-step loss differences and the throughput ratio of two runs (their logs/tier_X.json):
    the multi-GPU check (same global batch: same losses; `other`'s samples/s over `one`'s)."""
    import json
    from pathlib import Path

    logs = [json.loads((Path(r) / "logs" / f"tier_{tier}.json").read_text()) for r in (one, other)]
    steps = [{e["step"]: e["loss"] for e in log["log_history"] if "loss" in e} for log in logs]
    common = sorted(set(steps[0]) & set(steps[1]))
    rel = [abs(steps[1][k] - steps[0][k]) / max(abs(steps[0][k]), 1e-12) for k in common]
    speed = [next(e["train_samples_per_second"] for e in reversed(log["log_history"])
                  if "train_samples_per_second" in e) for log in logs]
    # steady state: the median seconds per optimizer step (same global batch), after step 2
    step_s = [statistics.median(times) if times else None
              for times in ([e["step_seconds"] for e in log["log_history"]
                             if "step_seconds" in e and e["step"] > 2] for log in logs)]
    return {"steps": len(common), "loss_max_rel_diff": max(rel) if rel else None,
            "loss_mean_rel_diff": sum(rel) / len(rel) if rel else None,
            "samples_per_second_whole_run": speed, "median_step_seconds": step_s,
            "speedup": step_s[0] / step_s[1] if all(step_s) else None,  # None: too few steps
            "speedup_whole_run": speed[1] / speed[0]}


def random_checkpoint(folder, shape: str = "7b") -> str:
    """A Qwen2.5-VL checkpoint with random weights at the 7B (or tiny) shape, with the stand-in
    processor (its special-token ids written into the config), for memory/time measurements."""
    from pathlib import Path

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ..offline import standin

    folder = Path(folder)
    if (folder / "config.json").exists():
        return str(folder)
    tok = standin.build_tokenizer()
    processor = standin.build_processor(tok)
    if shape == "7b":
        config = standin.make_config(standin.QWEN25VL_7B, standin.token_ids(tok),
                                     standin.QWEN25VL_7B["text"]["vocab_size"])
    else:
        config = standin.make_config(standin.TINY, standin.token_ids(tok), len(tok))
    torch.manual_seed(0)
    where = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(where):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16 if where == "cuda" else torch.float32)
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))
    del model
    if where == "cuda":
        torch.cuda.empty_cache()
    return str(folder)


def saved_tensor_bytes(module, run):
    """(bytes of the distinct tensors autograd saves while `run()` executes, parameters of
    `module` excluded; what `run()` returned)."""
    import torch

    params = {p.data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = run()
    return sum(seen.values()), result


def saved_activation_bytes(model, processor, cfg, row) -> int:
    """Bytes of the distinct tensors autograd keeps during one training forward on `row` (the
    activation part of the estimate, measured; parameters excluded); gradients are discarded."""
    import torch

    from ..data.collate import TrainCollator
    from ..model.load import device, torch_dtype
    from ..train.loss import fast_loss

    batch = TrainCollator(processor, cfg.system_prompt, cfg.max_length)([row])
    batch = {k: v.to(device()) if hasattr(v, "to") else v for k, v in batch.items()}
    model.train()
    dtype = torch_dtype(cfg)  # the Trainer's mixed precision (bf16/fp16 autocast on a GPU)
    autocast = torch.autocast("cuda", dtype=dtype, enabled=torch.cuda.is_available()
                              and dtype in (torch.bfloat16, torch.float16))
    with autocast:
        kept, loss = saved_tensor_bytes(model, lambda: fast_loss(model, batch))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return kept


def measure(model_dir, tier: str = "a", overrides: dict | None = None, shape: str = "7b",
            cap_gib: float | None = None, steps: int = 2, snapshot: str | None = None) -> dict:
    """Train `steps` optimizer steps of `tier` on samples whose image fills the pixel budget,
    and compare the peak memory torch allocated with `estimate_memory` for the same settings.

    Tier B trains on `model_dir` itself (random weights stand in for the merged model). With
    `cap_gib` the process is limited to that much GPU memory (a smaller card on an H100).
    Without a GPU (a smoke test on the stand-in) the measured fields are None.
    """
    import time

    import torch
    from datasets import Dataset
    from PIL import Image

    from ..data.collate import count_tokens
    from ..config import get_config
    from .presets import gpu_preset
    from ..model.load import load_model, load_processor
    from ..train.tiers import apply_tier_a, apply_tier_b
    from ..data.checks import clean_split
    from ..train.trainer import make_trainer

    random_checkpoint(model_dir, shape)
    cuda = torch.cuda.is_available()
    if cuda and cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib / total))
    profile = "full" if cuda else "tiny"
    # cache_vision off: every step runs the vision tower, as each new image of an epoch does
    cfg = get_config(profile, {"model_id": str(model_dir), "use_standins": "false",
                               "dataloader_workers": "0", "cache_vision": "false",
                               **(overrides or {})})
    processor = load_processor(cfg, model_dir)
    # a table-like image larger than the budget: the processor shrinks it to fill the budget
    side = int(math.sqrt(cfg.max_pixels * 1.5))
    image = Image.new("RGB", (side, int(side * 0.75)), "white")
    answer = " ".join(["The total of the third column is 1,234 and the final answer is 42."] * 12)
    n = max(2, steps * 2)
    ds = Dataset.from_dict({"table_id": [f"t{i}" for i in range(n)], "image": [image] * n,
                            "question": ["What is the total of the third column?"] * n,
                            "answer": [answer] * n})
    ds, _ = clean_split(ds, processor, cfg, "measure", reference={}, progress=False)  # made rows: no leaks
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = load_model(cfg, model_dir, trainable=True)
    model = apply_tier_a(model, cfg) if tier == "a" else apply_tier_b(model, cfg)
    preset = gpu_preset(cfg, tier)
    # what one forward without checkpointing keeps (not under a cap: it would not fit)
    saved = None if cap_gib else saved_activation_bytes(model, processor, cfg, ds[0])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if snapshot and cuda:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    from transformers import TrainerCallback

    times: list[float] = []

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            sync()
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            sync()
            times.append(time.perf_counter() - self.start)

    trainer = make_trainer(model, processor, cfg, tier, ds, None, output_dir=None,
                           callbacks=[StepTimer()], max_steps=steps, gradient_accumulation_steps=1,
                           save_strategy="no", logging_steps=1, report_to=[])
    trainer.train()
    if snapshot and cuda:
        torch.cuda.memory._dump_snapshot(str(snapshot))  # view at pytorch.org/memory_viz
        torch.cuda.memory._record_memory_history(enabled=None)
    later = sorted(times[1:]) or times  # the first step warms up (kernels, vision cache)
    counts = count_tokens(processor, ds[0], cfg.system_prompt)
    labelled = len(processor.tokenizer(ds[0]["answer"], add_special_tokens=False)["input_ids"]) + 1
    st = settings_of(cfg, tier, preset)
    st.grad_accum = 1
    est = estimate_memory(Shape.of(_config_of(model)), st, text_tokens=counts["text"],
                          labelled_tokens=labelled, image_tokens=counts["visual"])
    record = {"tier": tier, "shape": shape, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "cap_gib": cap_gib, "quantize": cfg.quantize, "dtype": cfg.dtype,
              "preset": preset, "max_pixels": cfg.max_pixels, "sample_tokens": counts,
              "labelled_tokens": labelled,
              "estimate_gib": {k: round(v / GIB, 2) for k, v in est.items()},
              # what autograd keeps for this one sample, counted in one forward, vs the estimate
              "saved_activations_mib": None if saved is None else round(saved / 2 ** 20, 1),
              # counted before training compiles anything: compare with the eager terms
              "estimate_saved_mib": round(_saved_estimate(
                  Shape.of(_config_of(model)), dataclasses.replace(st, compiled=False), counts,
                  labelled) / 2 ** 20, 1),
              "seconds_per_step": round(later[len(later) // 2], 3),
              "seconds_first_step": round(times[0], 3)}
    here = detect()
    if here is not None:  # this card's assumed speed, for the sample measured (first step: warm-up)
        speed = here.tflops * 1e12 * (QLORA_SPEED if st.quantize == "4bit" else 1.0)
        flops = flops_per_sample(Shape.of(_config_of(model)), st, tokens=counts["total"])
        record["estimate_seconds_per_sample"] = round(flops / speed, 3)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        record.update(measured_peak_gib=round(peak / GIB, 2),
                      measured_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2),
                      estimate_over_measured=round(est["peak"] / peak, 3))
    else:
        record.update(measured_peak_gib=None, measured_reserved_gib=None, estimate_over_measured=None)
    return record


def _saved_estimate(shape: Shape, st: Settings, counts: dict, labelled: int) -> int:
    """The activation terms of `estimate_memory` for one sample, without checkpointing (what
    one forward outside the Trainer keeps), plus the saved log-softmax (4 x labelled x vocab)."""
    one = dataclasses.replace(st, micro_batch=1, checkpointing=False)
    est = estimate_memory(shape, one, text_tokens=counts["text"], labelled_tokens=labelled,
                          image_tokens=counts["visual"])
    return (est["activations_llm"] + est["activations_vision"] + est["activations_merger"]
            + 4 * labelled * shape.vocab)


def _config_of(model):
    net = model.get_base_model() if hasattr(model, "get_base_model") else model
    return net.config


if __name__ == "__main__":
    main()
