"""Shared pieces of the benchmark: the stand-in model at a chosen shape, timing, FLOP counts."""
from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

H100_BF16_PEAK = 989.4e12  # dense bf16 tensor-core peak of an H100 SXM (datasheet), FLOP/s


def cuda() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


def card() -> str:
    return torch.cuda.get_device_name() if cuda() else "cpu"


def peak_gib() -> dict:
    if not cuda():
        return {"peak_alloc_gib": None, "peak_reserved_gib": None}
    return {"peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 1),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2 ** 30, 1)}


def scratch(prefix: str) -> str:
    """A temporary folder that is removed when the process exits (runs leave nothing in /tmp)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def reset_memory() -> None:
    gc.collect()
    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def build(shape: str, min_pixels: int, max_pixels: int):
    """(model, processor): Qwen2.5-VL at the real 7B shape (or tiny), random weights, SDPA.

    The stand-in tokenizer's special-token ids are written into the config, so the processor's
    image tokens are the model's; the vocabulary keeps the real size (152,064) at the 7B shape.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tableqa_helpers.offline import standin

    tok = standin.build_tokenizer()
    processor = standin.build_processor(tok, min_pixels=min_pixels, max_pixels=max_pixels)
    if shape == "7b":
        config = standin.make_config(standin.QWEN25VL_7B, standin.token_ids(tok),
                                     standin.QWEN25VL_7B["text"]["vocab_size"])
    else:
        config = standin.make_config(standin.TINY, standin.token_ids(tok), len(tok))
    dtype = torch.bfloat16 if cuda() else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if cuda() else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation="sdpa")
    return model, processor


def versions() -> dict:
    import peft
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "card": card()}
    try:
        import flash_attn  # noqa: F401
        out["flash_attn"] = True
    except Exception:
        out["flash_attn"] = False
    if cuda():
        out["card_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return out


class Log:
    """Append JSON records to OUT/<name>.jsonl and echo a one-line summary."""

    def __init__(self, out: str | Path, name: str):
        self.path = Path(out) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: dict) -> dict:
        record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print("RECORD", json.dumps(record), flush=True)
        return record


def step_timer():
    """A TrainerCallback recording each optimizer step's wall time (device synchronised)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.last = None

        def on_train_begin(self, *args, **kwargs):
            sync()
            self.last = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            sync()
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    return StepTimer()


# ---- model FLOPs ----------------------------------------------------------------------------
def flops_per_sample(config, tokens: float, visual: float, labelled: float, tier: str) -> float:
    """Model FLOPs one training sample needs (the work itself, not any recipe's overhead).

    LLM forward (linear layers, causal attention, the head on labelled tokens) and its backward
    to the inputs (= the forward again: the base weights are frozen, so no weight gradients;
    LoRA's own FLOPs are negligible); the vision tower's forward once; the merger forward and
    backward. Tier B adds the backward through the last `4` vision blocks. Recomputation
    (checkpointing) and the tutorial's needless vision backward are not counted as useful work.
    """
    tc, vc = config.text_config, config.vision_config
    d, ff, layers = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    kv = tc.num_key_value_heads * (d // tc.num_attention_heads)
    linear = 2 * (2 * d * d + 2 * d * kv + 3 * d * ff)
    attention = 2 * 2 * (tokens / 2) * d  # QK^T and AV over half the context on average
    head = 2 * d * tc.vocab_size * labelled
    llm = tokens * layers * (linear + attention) + head
    patches = visual * vc.spatial_merge_size ** 2
    vd, vff, depth = vc.hidden_size, vc.intermediate_size, vc.depth
    window = (vc.window_size // vc.patch_size) ** 2
    full = len(vc.fullatt_block_indexes)
    block = patches * 2 * (4 * vd * vd + 3 * vd * vff)
    vit = depth * block + full * 4 * patches * patches * vd + (depth - full) * 4 * patches * window * vd
    mw = vd * vc.spatial_merge_size ** 2
    merger = visual * 2 * (mw * mw + mw * vc.out_hidden_size)
    total = 2 * llm + vit + 2 * merger
    if tier == "b":
        total += 4 * (block + 4 * patches * patches * vd)  # last blocks' backward (upper bound)
    return float(total)


def mfu(samples_per_s: float | None, flops: float) -> float | None:
    if not samples_per_s or not cuda():
        return None
    return round(samples_per_s * flops / H100_BF16_PEAK, 3)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
