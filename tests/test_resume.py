"""Persistence and resume: a run killed mid-training (SIGKILL) and re-run ends exactly where an
uninterrupted run ends; a torn checkpoint is never resumed from.

The integration test runs `python -m tableqa_helpers train --tier a` three times on the stand-in
(16 samples, micro-batch 4, 2 epochs = 8 optimizer steps, a checkpoint every 2 steps): once to
the end; once killed with SIGKILL after the step-7 loss is logged (the step-6 checkpoint is
complete, training went past it, mid-way through the second epoch); then the same command again,
which resumes. Before the re-run a torn ``checkpoint-8`` (truncated weights, no marker) is
planted, as a kill during a write would leave it; stock `get_last_checkpoint` would pick it.

Comparison: the final adapter tensors with `torch.equal` (bit-for-bit: same seed, same data order
per epoch, same float32 CPU kernels in the same thread count, restored optimizer/scheduler/RNG,
so no tolerance is needed), and the loss log (`loss` and `grad_norm` by step) exactly.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tableqa_helpers.train import resume
from tableqa_helpers.config import get_config

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train_limit=16", "eval_limit=1", "tier_a.epochs=2", "batch_size=4", "grad_accum=1",
            "logging_steps=1", "eval_steps=1000", "save_steps=2", "seed=7", "cache_vision=true"]


def _command(standins, run_root) -> list[str]:
    base = get_config("unit", root=str(standins))
    sets = [f"model_id={base.model_id}", f"dataset_id={base.dataset_id}", f"root={run_root}",
            *SETTINGS]
    return [sys.executable, "-m", "tableqa_helpers", "train", "--tier", "a", "--profile", "unit",
            *[x for s in sets for x in ("--set", s)]]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "2", "TABLEQA_PROFILE": "unit"}


def _run(cmd) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _run_and_kill(cmd, checkpoints: Path, complete_step: int, past_epoch: str) -> str:
    """Start `cmd`; SIGKILL it once checkpoint `complete_step` is complete and the log shows
    `past_epoch` (a later step). Returns what it printed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(rf"'epoch': '?{re.escape(past_epoch)}'?[,}}]", line) and \
                    resume.is_complete(checkpoints / f"checkpoint-{complete_step}"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:  # a failed check above: do not leave the process running
            proc.kill()
        proc.wait(timeout=60)
    out = "".join(seen)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{out[-3000:]}"
    return out


def _losses(run_root: Path) -> list[tuple]:
    log = json.loads((run_root / "unit" / "logs" / "tier_a.json").read_text())
    return [(e["step"], e["loss"], e["grad_norm"]) for e in log["log_history"] if "loss" in e]


def _adapter(run_root: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_root / "unit" / "tier_a" / "adapter_model.safetensors"))


def test_killed_run_resumes_to_the_same_adapter_and_losses(standins, tmp_path):
    t0 = time.perf_counter()
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_command(standins, straight))
    t1 = time.perf_counter()

    checkpoints = killed / "unit" / "checkpoints" / "tier_a"
    # 4 steps an epoch: step 7 ("epoch": 1.75) is mid-way through the second epoch
    _run_and_kill(_command(standins, killed), checkpoints, complete_step=6, past_epoch="1.75")
    assert not (killed / "unit" / "tier_a").exists(), "the killed run must not have finished"
    assert resume.last_complete_checkpoint(checkpoints, clean=False).name == "checkpoint-6"
    # a kill while writing checkpoint-8 leaves it torn; stock get_last_checkpoint would take it
    torn = checkpoints / "checkpoint-8"
    shutil.copytree(checkpoints / "checkpoint-6", torn)
    (torn / resume.MARKER).unlink()
    with open(torn / "adapter_model.safetensors", "r+b") as f:
        f.truncate(100)
    t2 = time.perf_counter()

    _run(_command(standins, killed))  # the same command again: resumes from checkpoint-6
    t3 = time.perf_counter()
    print(f"\nuninterrupted {t1 - t0:.0f}s, killed run {t2 - t1:.0f}s, resumed {t3 - t2:.0f}s")

    a, b = _adapter(straight), _adapter(killed)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _losses(straight) == _losses(killed)
    assert [s for s, _, _ in _losses(killed)] == list(range(1, 9))
    assert resume.is_complete(checkpoints / "checkpoint-8")  # rewritten by the resumed run


# ---- the checkpoint rules, on fake checkpoint folders ------------------------------------------
def _fake_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"w" * 64)
    (path / "optimizer.pt").write_bytes(b"o" * 128)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        resume.mark_complete(path, step)
    return path


def test_half_written_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    good = _fake_checkpoint(tmp_path, 10)
    unmarked = _fake_checkpoint(tmp_path, 20, complete=False)  # killed before the marker
    assert resume.last_complete_checkpoint(tmp_path, clean=False) == good
    truncated = _fake_checkpoint(tmp_path, 30)  # marked, then a file lost bytes
    with open(truncated / "optimizer.pt", "r+b") as f:
        f.truncate(5)
    missing = _fake_checkpoint(tmp_path, 40)  # marked, then a file disappeared
    (missing / "adapter_model.safetensors").unlink()
    garbled = _fake_checkpoint(tmp_path, 50)  # a torn marker
    (garbled / resume.MARKER).write_text('{"step": 50, "fi')
    assert resume.last_complete_checkpoint(tmp_path, clean=False) == good
    assert all(p.exists() for p in (unmarked, truncated, missing, garbled))
    assert resume.last_complete_checkpoint(tmp_path) == good  # clean: incomplete ones removed
    assert [p.name for _, p in resume.checkpoint_dirs(tmp_path)] == ["checkpoint-10"]
    assert resume.last_complete_checkpoint(tmp_path / "nowhere") is None


def test_disk_full_while_marking_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    good = _fake_checkpoint(tmp_path, 2)
    new = _fake_checkpoint(tmp_path, 4, complete=False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        resume.mark_complete(new, 4)
    monkeypatch.undo()
    assert not (new / resume.MARKER).exists()
    assert not list(tmp_path.glob("checkpoint-4/.COMPLETE*"))  # no temporary marker left
    assert resume.last_complete_checkpoint(tmp_path) == good


def test_fresh_start_removes_old_checkpoints(tmp_path):
    _fake_checkpoint(tmp_path, 75)  # an earlier run's, with a higher step than the new run's
    assert resume.prepare(tmp_path, resume=True).name == "checkpoint-75"
    assert resume.prepare(tmp_path, resume=False) is None
    assert resume.checkpoint_dirs(tmp_path) == []


def test_resume_refuses_a_checkpoint_of_another_adapter_shape(tmp_path):
    """A run folder holding a Tier B checkpoint of rank 8, then asked for rank 16: a clear
    error that names the settings (not torch's size mismatch), and the checkpoint kept."""
    from types import SimpleNamespace

    path = _fake_checkpoint(tmp_path, 100)
    (path / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "lora_alpha": 32, "target_modules": "model\\.visual\\.blocks\\.3\\.attn\\.qkv"}))
    resume.mark_complete(path, 100)  # the marker lists the files: add the config to it

    def model(**lora):
        return SimpleNamespace(peft_config={"default": SimpleNamespace(**{
            "r": 8, "lora_alpha": 32, "target_modules": "model\\.visual\\.blocks\\.3\\.attn\\.qkv",
            **lora})})

    assert resume.prepare(tmp_path, True, model=model()) == path  # same shape: resumes
    with pytest.raises(ValueError, match=r"r 8 there, 16 now.*--no-resume"):
        resume.prepare(tmp_path, True, model=model(r=16))
    with pytest.raises(ValueError, match="target_modules"):
        resume.prepare(tmp_path, True, model=model(target_modules={"q_proj", "v_proj"}))
    (path / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "lora_alpha": 32, "target_modules": ["v_proj", "q_proj"]}))
    resume.mark_complete(path, 100)
    assert resume.prepare(tmp_path, True, model=model(target_modules={"q_proj", "v_proj"})) == path
    assert resume.last_complete_checkpoint(tmp_path) == path  # nothing removed
    assert resume.prepare(tmp_path, True, model=object()) == path  # not a PEFT model: no check


def test_callback_adds_saves_logs_them_and_unmarks_a_rewritten_step(tmp_path):
    from transformers import TrainerControl, TrainerState

    class Args:
        output_dir = str(tmp_path)

    stale = _fake_checkpoint(tmp_path, 4)  # an old marker in a folder about to be overwritten
    cb = resume.CompleteCheckpoints(save_steps=2)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 3
    cb.on_step_end(Args, state, control)
    assert not control.should_save and not control.should_log
    state.global_step = 4
    cb.on_step_end(Args, state, control)
    assert control.should_save and control.should_log
    assert not (stale / resume.MARKER).exists()
    cb.on_save(Args, state, control)
    assert resume.is_complete(stale)
    with pytest.raises(ValueError):
        resume.CompleteCheckpoints(save_steps=-1)


def test_save_total_limit_keeps_the_previous_checkpoint():
    assert resume.min_save_total_limit(1) == 2
    assert resume.min_save_total_limit(3) == 3
    assert resume.min_save_total_limit(None) is None


def test_group_by_length_order_depends_only_on_seed_and_epoch():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = list(range(40))
    one = resume.epoch_seeded(LengthGroupedSampler(4, lengths=lengths), seed=3)
    two = resume.epoch_seeded(LengthGroupedSampler(4, lengths=lengths), seed=3)
    torch.manual_seed(0)
    one.set_epoch(1)
    first = list(one)
    torch.manual_seed(123)  # the global RNG does not matter
    two.set_epoch(1)
    assert list(two) == first
    two.set_epoch(0)
    assert list(two) != first
