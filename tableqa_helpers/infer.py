"""Batched, resumable greedy generation over a dataset split, written incrementally to JSONL."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from .config import Config, ConfigError, require_saved
from .io import append_jsonl, read_jsonl

STAGES = ("base", "a", "merged", "b")


def stage_model(cfg: Config, stage: str):
    """The model of a stage: base, base + Tier A adapter, merged, merged + Tier B adapter."""
    from .model.load import load_model, load_processor

    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    need = {"a": (cfg.tier_a_dir, "adapter", "train tier a (notebook 02) first"),
            "merged": (cfg.merged_dir, "model", "run `merge` (notebook 03) first"),
            "b": (cfg.tier_b_dir, "adapter", "train tier b (notebook 04) first")}
    for key in {"a": ["a"], "merged": ["merged"], "b": ["merged", "b"]}.get(stage, []):
        folder, kind, hint = need[key]
        require_saved(folder, kind, f"stage {stage!r} needs it: {hint}")
    base = cfg.model_id if stage in ("base", "a") else cfg.merged_dir
    adapter = {"a": cfg.tier_a_dir, "b": cfg.tier_b_dir}.get(stage)
    return load_model(cfg, base, adapter=adapter), load_processor(cfg, base)


def output_path(cfg: Config, stage: str, split: str) -> Path:
    return cfg.predictions_dir / split / f"{stage}.jsonl"


@torch.no_grad()
def generate_batch(model, processor, batch: dict, max_new_tokens: int,
                   cache_implementation: str | None = None) -> tuple[list[str], list[int]]:
    """Greedy decoding of a left-padded batch, stopping at <|im_end|>; texts and token counts.

    cache_implementation: transformers' KV cache kind (None: dynamic; "static" preallocates it,
    and transformers then compiles the decoding step on a GPU)."""
    from .model.load import device

    tok = processor.tokenizer
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    from .model.fast import packed_gqa_decoding, sdpa_without_cudnn

    batch = {k: v.to(device(), non_blocking=True) for k, v in batch.items()}
    # cuDNN would build a graph per decoding step; without packing, each step copies the
    # KV cache to every query head (model/fast.py)
    with sdpa_without_cudnn(), packed_gqa_decoding():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, eos_token_id=stop, pad_token_id=tok.pad_token_id,
                             use_cache=True, temperature=None, top_p=None, top_k=None,
                             **({"cache_implementation": cache_implementation}
                                if cache_implementation else {}))
    new = out[:, batch["input_ids"].shape[1]:]
    counts = []
    for row in new.tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
        counts.append(n)
    texts = tok.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [t.strip() for t in texts], counts


def predict(cfg: Config, stage: str, split: str = "test", limit: int | None = None,
            model=None, processor=None, progress: bool = True) -> Path:
    """Generate answers for a split with a stage's model; resume where an earlier run stopped.

    Writes one JSON line per sample to `RUN/predictions/{split}/{stage}.jsonl` as soon as its
    batch is done, so an interrupted run loses at most one batch. A sample that cannot be used
    (blank question, image that does not decode or is too small: see `data/checks.py`) is not
    generated; it is listed with its reason in `{stage}.skipped.jsonl` beside the predictions.
    """
    from .data.load import load_tableqa

    rows = _undecoded(load_tableqa(cfg.dataset_id, split,
                                   limit=limit if limit is not None else cfg.test_limit))
    out = output_path(cfg, stage, split)
    skipped = out.with_name(f"{stage}.skipped.jsonl")
    done = {r["index"] for r in read_jsonl(out)} | {r["index"] for r in read_jsonl(skipped)}
    _drop_torn_line(out)
    _drop_torn_line(skipped)
    todo = [i for i in range(len(rows)) if i not in done]
    if not todo:
        return out
    from .model.fused import fused_wanted, use_liger_kernels, use_plain_kernels

    liger = fused_wanted(cfg)  # before loading: a missing liger-kernel stops here, nothing lost
    if model is None:
        model, processor = stage_model(cfg, stage)
    if liger:
        use_liger_kernels(model)
    try:
        _generate_all(cfg, stage, model, processor, rows, todo, len(done), out, skipped,
                      progress and f"predict {stage}/{split}")
    finally:
        if liger:
            use_plain_kernels(model)
    return out


def _generate_all(cfg, stage, model, processor, rows, todo, done, out, skipped, bar_name):
    """predict's loop: batches of `todo` generated and appended to `out` as they finish."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(rows), initial=done, desc=bar_name or "", disable=not bar_name)
    from .hardware.presets import gpu_preset

    per_call = gpu_preset(cfg)["gen_batch_size"]  # cfg.gen_batch_size unless a GPU preset is on
    chunks = [todo[s:s + per_call] for s in range(0, len(todo), per_call)]
    t0 = time.perf_counter()
    for idx, meta, skips, batch in prompt_batches(rows, chunks, processor, cfg.system_prompt,
                                                  cfg.dataloader_workers):
        for rec in skips:
            logging.getLogger(__name__).warning("sample %d skipped: %s", rec["index"], rec["reason"])
            append_jsonl(skipped, rec)
        if idx:
            texts, counts = generate_batch(model, processor, batch, cfg.max_new_tokens)
            t1 = time.perf_counter()  # wall time since the last batch: waiting for it included
            seconds, t0 = (t1 - t0) / len(idx), t1
            for i, s, text, n in zip(idx, meta, texts, counts):
                row = {"index": i, "table_id": s.get("table_id"), "question": s["question"],
                       "reference": s.get("answer"), "prediction": text, "stage": stage,
                       "tokens": n, "seconds": round(seconds, 4)}
                for extra in ("final_answer", "question_type"):
                    if extra in s:
                        row[extra] = s[extra]
                append_jsonl(out, row)
        bar.update(len(idx) + len(skips))
    bar.close()


class StageCache:
    """The last stage model `predict_one` loaded, kept so the next call answers at once.

    One model at a time (a 7B stage fills a GPU); asking for another stage, or for the same stage
    after its weights changed on disk, loads again. `clear()` frees it.
    """

    def __init__(self):
        self.key, self.model, self.processor = None, None, None

    def get(self, cfg: Config, stage: str):
        folders = {"a": [cfg.tier_a_dir], "merged": [cfg.merged_dir],
                   "b": [cfg.merged_dir, cfg.tier_b_dir]}.get(stage, [])
        stamp = tuple(_newest_write(f) for f in folders)  # retrained / re-merged: reload
        key = (stage, str(cfg.model_id), str(cfg.run_dir), cfg.dtype, cfg.min_pixels,
               cfg.max_pixels, stamp)
        if key != self.key:
            self.clear()
            self.model, self.processor = stage_model(cfg, stage)
            self.key = key
        return self.model, self.processor

    def clear(self) -> None:
        self.key, self.model, self.processor = None, None, None


STAGE_CACHE = StageCache()  # what `predict_one` reuses between notebook cells


def _newest_write(folder: Path) -> float:
    folder = Path(folder)
    return max((p.stat().st_mtime for p in folder.glob("*") if p.is_file()), default=0.0)


def predict_one(cfg: Config, image, question: str, stage: str = "merged",
                max_new_tokens: int | None = None, model=None, processor=None) -> str:
    """The answer of a stage's model to one question about one image, for a notebook cell.

    `image`: a path, PIL image, numpy array or bytes (anything `data.to_rgb` reads). `stage`:
    base, a, merged or b; its model is loaded once and kept in `STAGE_CACHE` (pass `model` and
    `processor` to use your own). `max_new_tokens` defaults to ``cfg.max_new_tokens``.
    Raises DataError for a blank question or an unusable image, ConfigError for a stage that
    has not been trained yet (the message says which notebook makes it).
    """
    from .data.collate import GenerationCollator
    from .data.load import DataError, to_messages

    if not isinstance(question, str) or not question.strip():
        raise DataError("predict_one: the question is empty")
    sample = {"table_id": "predict_one", "image": image, "question": question}
    to_messages(sample, cfg.system_prompt, with_answer=False)  # a clear error before loading
    if model is None:
        model, processor = STAGE_CACHE.get(cfg, stage)
    batch = GenerationCollator(processor, cfg.system_prompt)([sample])
    texts, _ = generate_batch(model, processor, batch, max_new_tokens or cfg.max_new_tokens)
    return texts[0]


def _undecoded(ds):
    """The split with images left as bytes: a broken image is then a DataError, not a crash."""
    import datasets

    feature = ds.features.get("image")
    if isinstance(feature, datasets.Image) and feature.decode:
        return ds.cast_column("image", datasets.Image(decode=False))
    return ds


_FIELDS = ("table_id", "question", "answer", "final_answer", "question_type")


class _PromptBatches(torch.utils.data.Dataset):
    """Item k: chunk k's rows checked (`to_messages`) and the usable ones collated."""

    def __init__(self, rows, chunks: list[list[int]], processor, system_prompt: str):
        from .data.collate import GenerationCollator

        self.rows, self.chunks, self.system_prompt = rows, chunks, system_prompt
        self.collate = GenerationCollator(processor, system_prompt)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        from .data.load import DataError, to_messages

        keep, samples, skips = [], [], []
        for i in self.chunks[k]:
            s = self.rows[i]
            try:
                to_messages(s, self.system_prompt, with_answer=False)
            except DataError as e:
                skips.append({"index": i, "table_id": s.get("table_id"), "reason": str(e)})
            else:
                keep.append(i)
                samples.append(s)
        meta = [{f: s[f] for f in _FIELDS if f in s} for s in samples]
        return keep, meta, skips, (self.collate(samples) if samples else None)


def _as_is(item):
    return item


def prompt_batches(rows, chunks: list[list[int]], processor, system_prompt: str, workers: int = 0):
    """(indices, their rows' text fields, skipped rows with reasons, prompt batch) per chunk.

    With `workers` > 0, DataLoader processes decode, check and collate the next chunks while the
    GPU generates (pinned memory on CUDA); a chunk with no usable row has batch None."""
    return torch.utils.data.DataLoader(
        _PromptBatches(rows, chunks, processor, system_prompt), batch_size=None,
        collate_fn=_as_is, num_workers=workers, prefetch_factor=2 if workers else None,
        pin_memory=torch.cuda.is_available())


def _drop_torn_line(path: Path) -> None:
    """Cut a half-written last line (left by a kill mid-write) so appends start cleanly."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
