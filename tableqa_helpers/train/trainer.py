"""Training a tier with transformers' Trainer, fast by default, same math as the plain step.

transformers' `Trainer` is used rather than TRL's `SFTTrainer`: with vision-language data TRL's
own tokenization, packing and `assistant_only_loss` cannot be used (they raise or truncate image
tokens), so SFTTrainer would only add `enable_input_require_grads` (which makes the frozen
vision tower build a graph and backpropagate) and a processor look-up by model name.

`TableQATrainer.compute_loss` computes exactly the model's own loss (mean cross-entropy over the
labelled tokens of the micro-batch, `model(**batch).loss`) with savings that do not change the
math (`tests/test_fast.py` compares loss and gradients with the plain step):
- the language-model head runs only on labelled positions (not on ~2,700 x 152k logits);
- when the vision tower is frozen (Tier A), its blocks run under `no_grad` (no graph, no
  recompute, no backward) and their output before the trainable merger is kept in a bounded
  `VisionCache` keyed by image content and pixel budget, so each image's vision work is done
  once across epochs and evaluations. At the 7B shape that output is ~24 MiB per image (bf16):
  the default 8 GiB in memory holds ~340 images, far from the 6,590 of an epoch, so on the
  full dataset set ``vision_cache_gb`` to what your RAM allows and/or ``vision_cache_disk_gb``
  (files under RUN/cache/vision/<model fingerprint>; ~165 GB for the whole train split);
- the vision tower's windowed attention runs grouped (`model/fast.py`) when flash-attn is absent;
- SDPA avoids cuDNN attention, which builds a graph for every new shape (`model/fast.py`);
- the loss runs under the Trainer's mixed precision (`accelerator.autocast()`: replacing the
  model's forward would otherwise drop it), and there PEFT's float32 round trip of every LoRA
  input is skipped (`_NoLoraInputCast`: bf16 -> float32 -> bf16 is exact, the matmul is the same);
- on GPUs that support it the blocks are compiled (`fast.compile_blocks`, ``cfg.compile_blocks``);
- with ``cfg.fused_kernels="liger"`` RMSNorm and the SwiGLU MLPs run liger-kernel's fused Triton
  kernels (`model/fused.py`; off by default: inside compiled blocks they were slower);
- gradient checkpointing is enabled by us, without `enable_input_require_grads` (non-reentrant
  checkpointing does not need it), only where the GPU preset says memory needs it (every block,
  or every n-th), and recomputation runs under the forward pass's settings;
- the CUDA allocator uses expandable segments (`hardware.presets.use_expandable_segments`),
  the DataLoader queues a whole accumulation window, and the NaN/Inf logging filter (a sync per
  micro-batch) is off.
Measured effect and what is left: bench/RESULTS.md.

Batch settings come from `hardware.presets.gpu_preset` (``cfg.gpu``; "auto" picks by the card's
memory, the global batch stays 24). The loss of a micro-batch is its labelled-token mean and the
Trainer averages the micro-batches of a step, as in the tutorial; with the presets' micro-batch
of 1 every sample of the 24 weighs the same, where the tutorial's micro-batches of 3 weigh samples by
their answer length within each group of 3 (a small change of weighting, not of the global batch).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..data.collate import TrainCollator
from ..config import Config, ConfigError
from ..data.load import DataError, load_tableqa
from ..io import atomic_dir, atomic_write_json
from .fsdp import fsdp2_full_state, load_trainable_state_dict, trainable_state_dict
from .loss import (VisionCache, _inner, _recompute_like_forward, fast_loss, model_fingerprint,
                   vision_frozen)


def _trainer_class():
    from transformers import Trainer

    class TableQATrainer(Trainer):
        """Trainer whose loss is `fast_loss` (same math as the model's loss, less work)."""

        vision_cache: VisionCache | None = None
        compile_blocks: bool = False  # fast.compile_blocks for the length of `train()`
        fused_kernels: bool = False  # fused.use_liger_kernels for the length of `train()`
        order_sampler = None  # the training sampler, if it has `set_epoch` (see resume.SamplerEpoch)

        def train(self, *args, **kwargs):
            # compiled for the run only: generation and merging afterwards (also after an error
            # or an interrupt) run the model's eager code
            from ..model.fast import compile_blocks, uncompile_blocks
            from ..model.fused import use_liger_kernels, use_plain_kernels

            self._last_loss_log, self._data_wait = None, 0.0  # step timings start afresh
            if self.fused_kernels:
                use_liger_kernels(self.model)
            if self.compile_blocks:
                compile_blocks(self.model)
            try:
                return super().train(*args, **kwargs)
            finally:
                uncompile_blocks(self.model)
                use_plain_kernels(self.model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # `fast_loss` runs as the forward of whatever wraps the model (DDP, FSDP: their
            # forward synchronises gradients / gathers shards); the model's own instance
            # `forward` (accelerate's autocast wrapper, if any) is put back afterwards. That
            # wrapper is what turns on mixed precision, so `fast_loss` runs under the
            # accelerator's autocast itself (without it, every LoRA layer runs in float32).
            inner = self.accelerator.unwrap_model(model)
            own = inner.__dict__.get("forward")

            def forward(**kw):
                with self.accelerator.autocast():
                    return fast_loss(inner, kw, self.vision_cache)

            inner.forward = forward
            try:
                loss = model(**inputs)
            finally:
                if own is None:
                    del inner.forward
                else:
                    inner.forward = own
            return (loss, (loss,)) if return_outputs else loss

        def save_model(self, output_dir=None, _internal_call=False):
            # FSDP2 with full state dicts: the Trainer would gather the whole model onto rank 0's
            # CPU for each save, frozen base included (~15 GB at the 7B shape), to keep the adapter
            if fsdp2_full_state(self.accelerator):
                self._save(output_dir or self.args.output_dir,
                           state_dict=trainable_state_dict(self.model))
                return
            super().save_model(output_dir, _internal_call)

        def _save_optimizer_and_scheduler(self, output_dir):
            # FSDP2: the Trainer would also write the model as pytorch_model_fsdp.bin, a second
            # copy of what save_model just wrote; keep the optimizer and scheduler states only
            if not fsdp2_full_state(self.accelerator):
                return super()._save_optimizer_and_scheduler(output_dir)
            from accelerate.utils import save_fsdp_optimizer
            from transformers.trainer import SCHEDULER_NAME

            save_fsdp_optimizer(getattr(self.accelerator.state, "fsdp_plugin", None),
                                self.accelerator, self.optimizer, self.model, output_dir)
            if self.args.should_save:
                torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # FSDP2: the adapter of a checkpoint is its adapter_model.safetensors (see above)
            if not fsdp2_full_state(self.accelerator):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_trainable_state_dict(model if model is not None else self.model,
                                      resume_from_checkpoint)

        def _load_best_model(self):
            if not fsdp2_full_state(self.accelerator):
                return super()._load_best_model()
            load_trainable_state_dict(self.model, self.state.best_model_checkpoint)

        def get_batch_samples(self, *args, **kwargs):
            # the Trainer takes a whole step's micro-batches here: time spent waiting for data.
            # Moving a batch to the GPU waits for the work already queued there (the copy is
            # blocking), which is compute, not loading: that wait happens before the timer.
            if torch.cuda.is_available():
                torch.cuda.current_stream().synchronize()
            start = time.perf_counter()
            try:
                return super().get_batch_samples(*args, **kwargs)
            finally:
                self._data_wait = self.__dict__.get("_data_wait", 0.0) + time.perf_counter() - start

        def log(self, logs, *args, **kwargs):
            # per optimizer step since the previous loss log: wall seconds (evaluations in
            # between included) and seconds waiting for the data loader (this process); the
            # first log of a run has neither (it holds the warm-up)
            if "loss" in logs:
                now, step = time.perf_counter(), self.state.global_step
                last = self.__dict__.get("_last_loss_log")
                if last is not None and step > last[1]:
                    logs["step_seconds"] = round((now - last[0]) / (step - last[1]), 4)
                    logs["data_seconds"] = round(self._data_wait / (step - last[1]), 4)
                self._last_loss_log, self._data_wait = (now, step), 0.0
            super().log(logs, *args, **kwargs)

        def _get_train_sampler(self, train_dataset=None):
            from .resume import train_sampler  # order from (seed, epoch): resumable; balanced

            a = self.args
            sampler = train_sampler(super()._get_train_sampler(train_dataset),
                                    train_dataset if train_dataset is not None else self.train_dataset,
                                    a.world_size, a.per_device_train_batch_size,
                                    a.gradient_accumulation_steps,
                                    a.data_seed if a.data_seed is not None else a.seed)
            self.order_sampler = sampler if hasattr(sampler, "set_epoch") else None
            return sampler

    return TableQATrainer


def enable_checkpointing(model, enable: bool | int = True) -> None:
    """Non-reentrant activation checkpointing of every block (True), every n-th block (an int
    n > 1: less recomputation, more memory), or none (False).

    transformers' own `gradient_checkpointing_enable` also calls `enable_input_require_grads`,
    which makes the vision tower's first output require grad, so a frozen tower builds a graph
    and backpropagates for nothing; non-reentrant checkpointing does not need it, so the hook is
    removed again.
    """
    net = _inner(model)
    new_api = hasattr(net, "activation_checkpointing_enable")  # transformers >= 5.2x
    if not enable:
        on = net.is_activation_checkpointing if new_api else net.is_gradient_checkpointing
        if on:
            (net.activation_checkpointing_disable if new_api else net.gradient_checkpointing_disable)()
        return
    import functools

    kwargs = {"use_reentrant": False,
              "context_fn": functools.partial(_recompute_like_forward, model)}
    if new_api:
        net.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(net, "disable_input_require_grads"):
        net.disable_input_require_grads()
    every = int(enable) if not isinstance(enable, bool) else 1
    if every > 1:
        from transformers.modeling_layers import GradientCheckpointingLayer

        for stack in _block_lists(net):
            for i, block in enumerate(stack):
                if isinstance(block, GradientCheckpointingLayer):
                    block.gradient_checkpointing = i % every == 0


def _block_lists(net) -> list:
    """The repeated block lists: language-model decoder layers and vision blocks."""
    base = net.model
    return [base.language_model.layers, base.visual.blocks]

# ---- the stage -------------------------------------------------------------------------------
def stage_paths(cfg: Config, tier: str) -> dict[str, Path]:
    """Input model, output adapter, checkpoints and log of a tier, all under the run folder."""
    if tier not in ("a", "b"):
        raise ConfigError(f"tier must be 'a' or 'b', got {tier!r}")
    base = Path(cfg.model_id) if tier == "a" else cfg.merged_dir
    out = cfg.tier_a_dir if tier == "a" else cfg.tier_b_dir
    return {"base": base, "out": out, "checkpoints": cfg.run_dir / "checkpoints" / f"tier_{tier}",
            "log": cfg.run_dir / "logs" / f"tier_{tier}.json"}


def make_trainer(model, processor, cfg: Config, tier: str, train_ds, eval_ds=None,
                 output_dir: str | Path | None = None, callbacks: list | None = None,
                 **overrides):
    """A configured TableQATrainer around an already wrapped (`apply_tier_*`) model.

    Batch settings from `fast.gpu_preset(cfg, tier)`; `overrides` are extra TrainingArguments
    (e.g. ``max_steps``). Gradient checkpointing is set on the model here, not by the Trainer.
    """
    from transformers import EarlyStoppingCallback, TrainingArguments

    from ..hardware.presets import compile_wanted, gpu_preset, use_expandable_segments
    from ..model.fast import uncompile_blocks
    from ..model.fused import fused_wanted
    from .resume import CompleteCheckpoints, SamplerEpoch, min_save_total_limit
    from ..model.load import torch_dtype

    tier_cfg = cfg.tier_a if tier == "a" else cfg.tier_b
    preset = gpu_preset(cfg, tier)
    dtype = torch_dtype(cfg)
    cuda = torch.cuda.is_available()
    workers = cfg.dataloader_workers
    lengths = hasattr(train_ds, "column_names") and "length" in train_ds.column_names
    evaluate = eval_ds is not None
    args = dict(
        output_dir=str(output_dir or stage_paths(cfg, tier)["checkpoints"]),
        num_train_epochs=tier_cfg.epochs,
        per_device_train_batch_size=preset["batch_size"],
        per_device_eval_batch_size=preset["eval_batch_size"],
        gradient_accumulation_steps=preset["grad_accum"], learning_rate=tier_cfg.lr,
        lr_scheduler_type=cfg.scheduler, warmup_steps=tier_cfg.warmup,  # a float is a fraction
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if evaluate else "no", eval_steps=cfg.eval_steps,
        # checkpoints at evaluations (and every cfg.save_steps: resume.CompleteCheckpoints)
        save_strategy="steps", save_steps=cfg.eval_steps,
        save_total_limit=min_save_total_limit(cfg.save_total_limit), load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss", greater_is_better=False,
        remove_unused_columns=False, label_names=["labels"], prediction_loss_only=True,
        dataloader_num_workers=workers, dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        report_to=[], seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=False,
        logging_nan_inf_filter=False)  # the filter reads the loss back each micro-batch (a sync)
    if workers > 0:  # queue a whole accumulation window: the Trainer takes it all at once
        args["dataloader_prefetch_factor"] = max(2, -(-preset["grad_accum"] // workers) + 1)
    if preset["batch_size"] > 1 and lengths:
        args["train_sampling_strategy"] = "group_by_length"  # less padding within a micro-batch
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under `accelerate launch` / torchrun
        # every trainable (LoRA) weight is used in every step: no unused-parameter search;
        # without a GPU, processes talk over gloo (the 2-process CPU test)
        args.update(ddp_find_unused_parameters=False,
                    **({} if cuda else {"use_cpu": True, "ddp_backend": "gloo"}))
    args.update(overrides)
    # checkpointing is set on the model, not through TrainingArguments (no input-grad hooks)
    enable_checkpointing(model, preset["gradient_checkpointing"])
    uncompile_blocks(model)  # `TableQATrainer.train` compiles, for the run only
    use_expandable_segments()  # lengths vary per sample: avoid a fragmented allocator cache
    _inner(model).config.use_cache = False
    use_cache = tier == "a" and cfg.cache_vision and vision_frozen(model)
    collator = TrainCollator(processor, cfg.system_prompt, cfg.max_length, image_keys=use_cache)
    if callbacks is None:
        callbacks = [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)] \
            if evaluate else []
    callbacks = [*callbacks, CompleteCheckpoints(cfg.save_steps)]  # marks complete checkpoints
    targs = TrainingArguments(**args)
    if targs.n_gpu > 1:  # several GPUs seen by one process: use one (nn.DataParallel's replicas
        targs._n_gpu = 1  # cannot run fast_loss); all of them with `accelerate launch` (docs/gpus.md)
    trainer = _trainer_class()(
        model=model, args=targs, train_dataset=train_ds,
        eval_dataset=eval_ds, data_collator=collator, processing_class=processor,
        callbacks=callbacks)
    if use_cache:
        disk = cfg.cache_dir / "vision" / model_fingerprint(model) \
            if cfg.vision_cache_disk_gb > 0 else None
        trainer.vision_cache = VisionCache(int(cfg.vision_cache_gb * 2 ** 30), disk,
                                           int(cfg.vision_cache_disk_gb * 2 ** 30))
    trainer.gpu_preset = preset
    trainer.compile_blocks = compile_wanted(cfg)
    trainer.fused_kernels = fused_wanted(cfg)
    trainer.add_callback(SamplerEpoch(trainer))
    return trainer


def build_trainer(cfg: Config, tier: str, train_ds=None, eval_ds=None):
    """Model with the tier's adapter, data and a configured TableQATrainer, ready to `train()`."""
    from ..model.load import load_model, load_processor
    from .tiers import apply_tier_a, apply_tier_b

    paths = stage_paths(cfg, tier)
    if tier == "b" and not (paths["base"] / "config.json").exists():
        raise ConfigError(f"Tier B trains on the merged model, but {paths['base']} has none: "
                          f"run `merge` (notebook 03) first")
    processor = load_processor(cfg, paths["base"])
    model = load_model(cfg, paths["base"], trainable=True)
    model.config.use_cache = False
    from transformers import set_seed
    set_seed(cfg.seed)  # the adapter's random init (LoRA A) is part of a reproducible run
    model = apply_tier_a(model, cfg) if tier == "a" else apply_tier_b(model, cfg)
    ds = None  # the dataset's splits, for the leak checks (loaded by `clean_split` if None)
    if train_ds is None or eval_ds is None:
        ds = load_tableqa(cfg.dataset_id)
        missing = [s for s in ("train", "validation") if s not in ds]
        if missing:
            raise DataError(f"{cfg.dataset_id} has no {' or '.join(missing)} split (it has "
                            f"{', '.join(ds)}): training needs both (for an image folder, "
                            f"train/ and validation/ subfolders, each with a metadata.jsonl)")
        train_ds = ds["train"].select(range(min(cfg.train_limit or len(ds["train"]), len(ds["train"]))))
        eval_ds = ds["validation"].select(
            range(min(cfg.eval_limit or len(ds["validation"]), len(ds["validation"]))))
    from ..data.checks import clean_split  # the dataset check: training never meets a rejected row
    train_ds, _ = clean_split(train_ds, processor, cfg, "train", reference=ds)
    eval_ds, _ = clean_split(eval_ds, processor, cfg, "validation", reference=ds)
    return make_trainer(model, processor, cfg, tier, train_ds, eval_ds,
                        output_dir=paths["checkpoints"])


def train_tier(cfg: Config, tier: str = "a", resume: bool = True) -> dict:
    """Train a tier, keep the best checkpoint's adapter in the run folder, save the loss log.

    Re-running after an interruption resumes from the last complete checkpoint when `resume`.
    """
    import tempfile

    from .resume import prepare

    paths = stage_paths(cfg, tier)
    trainer = build_trainer(cfg, tier)
    main = trainer.is_world_process_zero()  # under `accelerate launch`, only rank 0 writes
    last = prepare(paths["checkpoints"], resume, main, trainer.model)  # last complete checkpoint
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    # save_model is collective under FSDP: every rank calls it; only rank 0's folder is kept
    with (atomic_dir(paths["out"]) if main else tempfile.TemporaryDirectory()) as tmp:
        tmp = Path(tmp)
        trainer.save_model(str(tmp))
        if main:
            trainer.processing_class.save_pretrained(str(tmp))
            atomic_write_json(tmp / "tableqa_config.json", cfg.to_dict())
    summary = {"tier": tier, "train_loss": result.training_loss, "steps": result.global_step,
               "best_checkpoint": trainer.state.best_model_checkpoint,
               "best_eval_loss": trainer.state.best_metric, "adapter": str(paths["out"]),
               "log_history": trainer.state.log_history}
    if main:
        atomic_write_json(paths["log"], summary)
    return summary


def end_distributed() -> None:
    """Under `accelerate launch`: wait for every process, then take the process group down.

    The Trainer never does (transformers#48874); a process leaving without it can keep the
    others from exiting. A no-op in a single process.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def load_log(cfg: Config, tier: str) -> dict:
    """The saved training summary and loss log of a tier."""
    path = stage_paths(cfg, tier)["log"]
    if not path.exists():
        raise FileNotFoundError(f"no training log at {path}: train tier {tier} first")
    return json.loads(path.read_text())
