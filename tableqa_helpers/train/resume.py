"""Checkpoints that survive a lost session, and resuming from the last complete one.

transformers' Trainer writes a checkpoint folder ``checkpoint-N`` file by file (adapter,
optimizer, scheduler, RNG state of every process, trainer state with the data position and the
loss log) and nothing says when the folder is whole: a session killed mid-write leaves a folder
that `get_last_checkpoint` takes for a good one, and resuming from it fails or, worse, runs on
torn state. Here a checkpoint counts only once `CompleteCheckpoints` has flushed every file to
disk (fsync) and then written a ``COMPLETE`` marker (atomically: temporary file, fsync, rename)
listing each file and its size. `last_complete_checkpoint` takes the newest folder whose marker
exists and matches the files on disk; anything else is ignored (and removed by the main process).

What this guarantees, whatever the moment of a kill or a full disk:
- the marker is written last, so a half-written checkpoint is never taken for a complete one;
- the Trainer deletes old checkpoints (``save_total_limit``) only after the new one's files are
  written, and at least 2 are kept (`min_save_total_limit`), so the previous complete checkpoint
  is still there until the new one is marked;
- a step that overwrites an existing ``checkpoint-N`` (a re-run) first removes its marker.

Checkpoint frequency: the Trainer checkpoints at every evaluation (``eval_steps``; with
``load_best_model_at_end`` it requires save steps to be a multiple of eval steps), and the
callback adds a checkpoint every ``cfg.save_steps`` optimizer steps (0: only at evaluations), so
a preemptible session can checkpoint more often than it evaluates. Every checkpoint also closes
a logging window, and each epoch's data order depends only on the seed and the epoch
(`train_sampler`: `BalancedShardSampler`, or the Trainer's own sampler made resumable by
`epoch_seeded`), so a resumed run logs the same losses and ends with the same adapter as an
uninterrupted one (`tests/test_resume.py`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..io import _fsync_dir, atomic_write_json

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
PREFIX = "checkpoint"
_NAME = re.compile(rf"{PREFIX}-(\d+)")
MIN_SAVE_TOTAL_LIMIT = 2  # the previous complete checkpoint survives until the next is marked


def min_save_total_limit(limit: int | None) -> int | None:
    """`save_total_limit` raised to 2 (None or <= 0, meaning "keep all", is left alone)."""
    if limit is None or limit <= 0:
        return limit
    return max(MIN_SAVE_TOTAL_LIMIT, limit)


def checkpoint_dirs(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` folder in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder` except the marker."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_complete(folder: str | Path, step: int | None = None) -> Path:
    """Flush every file of a written checkpoint to disk, then write its ``COMPLETE`` marker.

    The marker (written atomically) lists each file with its size; `is_complete` checks them.
    """
    folder = Path(folder)
    files = _files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no files: nothing to mark complete")
    for name in files:
        _fsync_file(folder / name)
    for sub in {(folder / name).parent for name in files}:
        _fsync_dir(sub)
    return atomic_write_json(folder / MARKER, {"step": step, "files": files})


def unmark(folder: str | Path) -> None:
    """Remove the marker of a checkpoint about to be (re)written."""
    with contextlib.suppress(FileNotFoundError):
        (Path(folder) / MARKER).unlink()


def is_complete(folder: str | Path) -> bool:
    """True when `folder` has a marker and every file it lists exists with the listed size."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
        return bool(files) and all((folder / name).stat().st_size == size
                                   for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def last_complete_checkpoint(folder: str | Path, clean: bool = True) -> Path | None:
    """The newest complete checkpoint in `folder` (None if there is none).

    Incomplete ones (a kill or a full disk while writing, a file lost since) are never
    returned; with `clean` (the main process only, in multi-process runs) they are removed,
    with a warning, so a later save of the same step starts from an empty folder.
    """
    found = None
    for step, path in reversed(checkpoint_dirs(folder)):
        if found is None and is_complete(path):
            found = path
        elif not is_complete(path) and clean:
            log.warning("%s is incomplete (interrupted write); removing it", path)
            shutil.rmtree(path, ignore_errors=True)
    return found


def prepare(folder: str | Path, resume: bool, main_process: bool = True,
            model=None) -> Path | None:
    """The checkpoint to resume from; without `resume`, the old checkpoints are removed.

    Removing them on a fresh start matters: a later resume must not pick an old run's
    higher-numbered checkpoint over this run's. model: the PEFT model to be trained; a
    checkpoint whose adapter has another shape stops the run (`check_adapter`).
    """
    folder = Path(folder)
    if not resume:
        if main_process and folder.exists():
            log.warning("starting over: removing the checkpoints in %s", folder)
            for _, path in checkpoint_dirs(folder):
                shutil.rmtree(path, ignore_errors=True)
        return None
    last = last_complete_checkpoint(folder, clean=main_process)
    check_adapter(last, model)
    return last


ADAPTER_KEYS = ("r", "lora_alpha", "target_modules")  # what a resumed adapter must match


def check_adapter(checkpoint: Path | None, model) -> None:
    """Raise ValueError, naming the settings, if `checkpoint`'s adapter is not shaped like
    `model`'s (another LoRA rank, scale or targets: the run folder holds another run's
    checkpoint). The checkpoint is kept."""
    config = getattr(model, "peft_config", {}).get("default")
    saved = checkpoint / "adapter_config.json" if checkpoint is not None else None
    if config is None or saved is None or not saved.is_file():
        return
    saved = json.loads(saved.read_text())

    def norm(v):  # target_modules: a regex string, or a list / set of names
        return sorted(v) if isinstance(v, (list, set, tuple)) else v

    wrong = [f"{k} {saved.get(k)!r} there, {norm(getattr(config, k))!r} now" for k in ADAPTER_KEYS
             if norm(saved.get(k)) != norm(getattr(config, k))]
    if wrong:
        raise ValueError(f"cannot resume from {checkpoint}: its adapter was trained with other "
                         f"settings ({'; '.join(wrong)}). Start over (`train --no-resume`, or "
                         f"train_tier(..., resume=False)) or use another run folder; the "
                         f"checkpoint is kept.")


def epoch_seeded(sampler, seed: int):
    """The Trainer's sampler, made to draw each epoch's order from ``(seed, epoch)`` alone.

    transformers' `LengthGroupedSampler` (``group_by_length``) shuffles with the global RNG at
    the start of each epoch; a run resumed in its second epoch has a different global RNG
    there, so it would see the batches in another order than the uninterrupted run. Its
    replacement keeps a generator re-seeded with ``seed + epoch`` by ``set_epoch`` (which the
    Trainer calls through accelerate every epoch, also after skipping the trained batches).
    Other samplers are returned as they are (the default random sampler is accelerate's
    seedable one already).
    """
    if type(sampler) is not LengthGroupedSampler:
        return sampler
    return EpochLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order depends only on ``seed + epoch`` (see `epoch_seeded`)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class BalancedShardSampler(torch.utils.data.Sampler):
    """Each epoch a permutation drawn from ``seed + epoch`` alone (resumable, like `epoch_seeded`),
    laid out so that under several processes every process gets the same amount of work.

    The permutation is cut into windows of one optimizer step: ``world x batch_size x
    grad_accum`` samples. Within a window the samples are dealt to the processes longest first,
    each to the process with the fewest tokens so far (at most ``batch_size x grad_accum`` each),
    and each process's share is sorted by length and cut into its micro-batches (less padding).
    The window is then written in the order accelerate shards batches (batch ``i`` goes to
    process ``i % world``). So the samples of each optimizer step are the permutation's next
    window whatever the number of processes (1 vs 2 GPUs see the same global batches), and the
    slowest process, which every step waits for, carries no more than its share. A last window
    that is not full keeps the permutation's order (under several processes accelerate then
    fills the last step with samples from the epoch's start, as DDP always does). Compare 1 and
    N processes with micro-batches of 1: on one process larger micro-batches are grouped by
    length instead (`train_sampler`). transformers' own `BatchRebalanceSampler` (5.2x) does not
    balance micro-batches of 1 (rank 0 got the longer sample of every pair in a check: ranks
    1,326 tokens apart per step on average, against 128 here) and older 5.x releases lack it.
    """

    def __init__(self, lengths, world: int, batch_size: int, grad_accum: int, seed: int):
        if world < 1 or batch_size < 1 or grad_accum < 1:
            raise ValueError(f"world, batch_size and grad_accum must be >= 1, got "
                             f"{world}, {batch_size}, {grad_accum}")
        self.lengths = [int(x) for x in lengths]
        self.world, self.batch_size, self.grad_accum = world, batch_size, grad_accum
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        share = self.batch_size * self.grad_accum
        window = self.world * share
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            yield from (self._layout(chunk, share) if len(chunk) == window else chunk)

    def _layout(self, chunk: list[int], share: int) -> list[int]:
        shares: list[list[int]] = [[] for _ in range(self.world)]
        load = [0] * self.world
        for i in sorted(chunk, key=lambda i: -self.lengths[i]):  # stable: ties keep their order
            r = min((r for r in range(self.world) if len(shares[r]) < share), key=lambda r: load[r])
            shares[r].append(i)
            load[r] += self.lengths[i]
        out = []
        b = self.batch_size
        for j in range(self.grad_accum):  # micro-batch j of every process, process by process
            for r in range(self.world):
                out += shares[r][j * b:(j + 1) * b]
        return out


def train_sampler(default, dataset, world: int, batch_size: int, grad_accum: int, seed: int):
    """The training sampler: `BalancedShardSampler` where the dataset has token lengths (the
    dataset check adds them) and either several processes share the work or micro-batches are
    single samples; otherwise the Trainer's own `default`, made resumable (`epoch_seeded`)."""
    names = getattr(dataset, "column_names", None) or []
    if default is None or "length" not in names or (world == 1 and batch_size > 1):
        return epoch_seeded(default, seed)  # None: a stream without length, in its own order
    try:  # one read of the column (datasets reads a plain column row by row)
        lengths = dataset.select_columns(["length"]).with_format("numpy")["length"]
    except Exception:
        lengths = dataset["length"]
    lengths = list(lengths)
    if any(x is None or x != x for x in lengths):  # a user's own "length" column with gaps
        return epoch_seeded(default, seed)
    return BalancedShardSampler(lengths, world, batch_size, grad_accum, seed)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once all processes wrote it; adds saves every `save_steps`.

    `save_steps` (0: none) adds checkpoints at multiples of it, on top of the Trainer's own
    (at evaluations). A checkpoint step always logs the loss, so logging windows never straddle
    a checkpoint and a resumed run logs the same losses as an uninterrupted one.
    """

    def __init__(self, save_steps: int = 0):
        if save_steps < 0:
            raise ValueError(f"save_steps must be >= 0, got {save_steps}")
        self.save_steps = save_steps

    def on_step_end(self, args, state, control, **kwargs):
        if self.save_steps and state.global_step % self.save_steps == 0:
            control.should_save = True
        if control.should_save:
            control.should_log = True
            if state.is_world_process_zero:
                unmark(Path(args.output_dir) / f"{PREFIX}-{state.global_step}")
        return control

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every process has written its part (its RNG state) before the marker
        if state.is_world_process_zero:
            mark_complete(Path(args.output_dir) / f"{PREFIX}-{state.global_step}",
                          state.global_step)
        _barrier()
        return control


def SamplerEpoch(trainer):
    """A callback that tells the training sampler its epoch when each epoch begins.

    The Trainer and accelerate call `set_epoch` themselves, but when a run of several processes
    resumes in the middle of an epoch, the sampler sits below both `skip_first_batches` and
    accelerate's `BatchSamplerShard`, where neither call reaches: the resumed epoch would
    replay epoch 0's order. ``state.epoch`` (restored from the checkpoint, e.g. 1.5)
    gives the epoch before the loader is iterated.
    """
    from transformers import TrainerCallback

    class SamplerEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if trainer.order_sampler is not None:
                trainer.order_sampler.set_epoch(int(state.epoch + 1e-6))

    return SamplerEpoch()
