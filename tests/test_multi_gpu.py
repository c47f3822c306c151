"""Several processes: `train --tier a` under `accelerate launch` (accelerate/ddp.yaml), on the CPU.

The same config file that runs DDP over GPUs runs here with 2 CPU processes talking over gloo (the
wiring the GPU run uses: process group, sharded sampler, gradient all-reduce through the DDP
wrapper's forward, rank-0-only writes, the process group's teardown). accelerate runs FSDP only on
accelerators (on the CPU, its config falls back to this same data parallelism), so
accelerate/fsdp.yaml is checked on GPUs (bench/gpu_checks.sh), not here. The stand-in trains one
epoch of 16 samples with a global batch of 4: 2 processes x micro-batch 1 x 2 accumulation steps,
against 1 process x micro-batch 1 x 4 accumulation steps. Both see the same 4 samples in each
optimizer step and average the same 4 per-sample losses and gradients, only summed in another order
(all-reduce vs accumulation), so: losses and gradient norms equal within rtol 1e-4 (observed
~1e-7), adapter weights within atol 1e-4 (observed ~1e-5 on weights of ~0.1: Adam divides by the
root of tiny second moments, which magnifies the last-bit differences).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tableqa_helpers.train import resume
from tableqa_helpers.config import get_config

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train_limit=16", "eval_limit=1", "tier_a.epochs=1", "batch_size=1",
            "logging_steps=1", "eval_steps=1000", "save_steps=2", "seed=7"]

# Runs the CLI with the writes of interest recorded (rank, what, where) to $TRACE.
TRACED_CLI = '''
import os, sys
import tableqa_helpers.train.resume as resume
import tableqa_helpers.train.trainer as train

def log(what, where):
    with open(os.environ["TRACE"], "a") as f:
        f.write(f"{os.environ.get('RANK', '-')} {os.environ.get('WORLD_SIZE', '-')} {what} {where}\\n")

def traced(module, name, what):
    original = getattr(module, name)
    def wrapper(path, *args, **kwargs):
        log(what, path)
        return original(path, *args, **kwargs)
    setattr(module, name, wrapper)

traced(train, "atomic_dir", "adapter")
traced(train, "atomic_write_json", "log")
traced(resume, "mark_complete", "marker")
import torch.distributed as dist
destroy = dist.destroy_process_group

def traced_destroy(*args, **kwargs):
    log("teardown", "-")
    return destroy(*args, **kwargs)

dist.destroy_process_group = traced_destroy
log("start", "-")
from tableqa_helpers.cli import main
main(sys.argv[1:])
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(standins, run_root, grad_accum: int) -> list[str]:
    base = get_config("unit", root=str(standins))
    sets = [f"model_id={base.model_id}", f"dataset_id={base.dataset_id}", f"root={run_root}",
            f"grad_accum={grad_accum}", *SETTINGS]
    return ["train", "--tier", "a", "--profile", "unit", *[x for s in sets for x in ("--set", s)]]


def _run(cmd, trace: Path, retry_abort: bool = False) -> str:
    """Run `cmd`, which must succeed. retry_abort: run it once more, on a new port, if the rank
    that failed first died of SIGABRT (a native abort in gloo, "terminate called without an
    active exception", seen in one clean-clone run), not of a Python error; only for a command
    that can repeat."""
    env = {**os.environ, "TRACE": str(trace), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    root = done.stderr.split("Root Cause")[-1]  # torchrun's first failed rank (a Python error: 1)
    if done.returncode != 0 and retry_abort and "Root Cause" in done.stderr and "(SIGABRT)" in root:
        trace.unlink(missing_ok=True)
        if "--master_port" in cmd:
            cmd = list(cmd)
            cmd[cmd.index("--master_port") + 1] = str(_free_port())
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def _log(run_root: Path) -> list[tuple]:
    log = json.loads((run_root / "unit" / "logs" / "tier_a.json").read_text())
    return [(e["step"], e["loss"], e["grad_norm"]) for e in log["log_history"] if "loss" in e]


def test_two_cpu_processes_train_like_one_with_the_same_global_batch(standins, tmp_path):
    script = tmp_path / "traced_cli.py"
    script.write_text(TRACED_CLI)
    two, one = tmp_path / "two", tmp_path / "one"
    launch = [sys.executable, "-m", "accelerate.commands.launch",
              "--config_file", str(ROOT / "accelerate" / "ddp.yaml"), "--num_processes", "2",
              "--main_process_port", str(_free_port())]
    out = _run([*launch, str(script), *_args(standins, two, grad_accum=2)], tmp_path / "two.trace")
    assert out.count('"tier": "a"') == 1  # the summary, printed by rank 0 only
    _run([sys.executable, str(script), *_args(standins, one, grad_accum=4)], tmp_path / "one.trace")

    trace = [line.split() for line in (tmp_path / "two.trace").read_text().splitlines()]
    assert sorted(r for r, w, what, _ in trace if what == "start") == ["0", "1"]
    assert {w for _, w, _, _ in trace} == {"2"}
    assert sorted(r for r, _, what, _ in trace if what == "teardown") == ["0", "1"]
    writers = {(rank, what) for rank, _, what, _ in trace if what not in ("start", "teardown")}
    assert writers == {("0", "adapter"), ("0", "log"), ("0", "marker")}, trace  # rank 0 only

    checkpoints = two / "unit" / "checkpoints" / "tier_a"
    last = resume.last_complete_checkpoint(checkpoints, clean=False)
    assert last.name == "checkpoint-4"  # 16 samples / global batch 4: the data was split
    assert {p.name for p in last.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}

    timed = [e for e in json.loads((two / "unit" / "logs" / "tier_a.json").read_text())
             ["log_history"] if "step_seconds" in e]
    assert [e["step"] for e in timed] == [2, 3, 4]  # the first log holds the warm-up
    assert all(0 <= e["data_seconds"] <= e["step_seconds"] for e in timed), timed

    a, b = _log(one), _log(two)
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == [1, 2, 3, 4]
    for (_, loss1, norm1), (_, loss2, norm2) in zip(a, b):
        assert loss2 == pytest.approx(loss1, rel=1e-4)
        assert norm2 == pytest.approx(norm1, rel=1e-4)
    w1 = load_file(str(one / "unit" / "tier_a" / "adapter_model.safetensors"))
    w2 = load_file(str(two / "unit" / "tier_a" / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-4, rtol=0, msg=name)
    assert not list((two / "tiny").glob(".tier_a*"))  # no other rank's temporary adapter folder


def test_shipped_accelerate_configs_parse():
    import yaml

    ddp = yaml.safe_load((ROOT / "accelerate" / "ddp.yaml").read_text())
    fsdp = yaml.safe_load((ROOT / "accelerate" / "fsdp.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["mixed_precision"] == "no"
    assert fsdp["distributed_type"] == "FSDP"
    layers = fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(",")
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

    assert all(hasattr(qwen, name) for name in layers), layers


# Under torchrun on the CPU (gloo): Tier A on the stand-in, sharded with FSDP2 the way
# accelerate/fsdp.yaml wraps it (each decoder layer and vision block, then the whole model).
FSDP_SAVE = '''
import sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from tableqa_helpers.config import get_config
from tableqa_helpers.model import load_model
from tableqa_helpers.train import apply_tier_a
from tableqa_helpers.train import load_trainable_state_dict, trainable_state_dict

root, model_id, out = sys.argv[1:]
dist.init_process_group("gloo")
cfg = get_config("unit", root=root, model_id=model_id)
model = apply_tier_a(load_model(cfg, trainable=True), cfg)
torch.manual_seed(0)  # the same non-zero adapter weights on both ranks (LoRA B starts at zero)
for p in model.parameters():
    if p.requires_grad:
        p.data.normal_()
trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
if dist.get_rank() == 0:
    model.save_pretrained(out + "/whole")
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for m in model.modules():
    if type(m).__name__ in ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"):
        fully_shard(m, mesh=mesh)
fully_shard(model, mesh=mesh)
assert all(type(p).__name__ == "DTensor" for p in model.parameters())
state = trainable_state_dict(model)
if dist.get_rank() == 0:
    assert sorted(state) == trainable, (len(state), len(trainable))  # no frozen weight gathered
    assert all(v.device.type == "cpu" and v.shape == model.get_parameter(k).shape
               for k, v in state.items())
    model.save_pretrained(out + "/sharded", state_dict=state)
else:
    assert state == {}
dist.barrier()
# resuming: the saved adapter read back into the shards (here zeroed first) gives the same weights
for p in model.parameters():
    if p.requires_grad:
        p.data.zero_()
assert load_trainable_state_dict(model, out + "/sharded") == len(trainable)
again = trainable_state_dict(model)
if dist.get_rank() == 0:
    assert sorted(again) == trainable and all(torch.equal(again[k], state[k]) for k in state)
dist.barrier()
dist.destroy_process_group()
'''


def test_fsdp2_adapter_save_gathers_only_the_trainable_weights(standins, tmp_path):
    """`trainable_state_dict`, which `TableQATrainer.save_model` saves the adapter from under
    FSDP2: the same file as an unsharded save, without gathering the frozen model; and
    `load_trainable_state_dict`, which resumes from it, puts the same weights back into the
    shards. (The Trainer's FSDP branch itself needs accelerate's FSDP, which runs on GPUs only:
    see the next test.)"""
    script = tmp_path / "fsdp_save.py"
    script.write_text(FSDP_SAVE)
    base = get_config("unit", root=str(standins))
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", str(_free_port()), str(script), str(standins), base.model_id,
          str(tmp_path)], tmp_path / "fsdp.trace", retry_abort=True)
    whole = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    sharded = load_file(str(tmp_path / "sharded" / "adapter_model.safetensors"))
    assert whole.keys() == sharded.keys() and len(whole) > 0
    for name in whole:
        assert torch.equal(whole[name], sharded[name]), name


def test_fsdp2_checkpoint_holds_the_adapter_once_and_resumes_from_it(tiny_cfg, processor, dataset,
                                                                     monkeypatch):
    """The FSDP2 branch of `TableQATrainer` (forced on, on one CPU process; accelerate's
    optimizer save recorded): a checkpoint has adapter_model.safetensors and no second copy of
    the model (pytorch_model_fsdp.bin), and loading it restores the adapter."""
    import accelerate.utils

    from tableqa_helpers.model import load_model
    from tableqa_helpers.train import apply_tier_a, make_trainer
    from tableqa_helpers.train import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "fsdp2_full_state", lambda accelerator: True)
    saved_optimizer = []
    monkeypatch.setattr(accelerate.utils, "save_fsdp_optimizer",
                        lambda plugin, acc, opt, model, out: saved_optimizer.append(out))
    model = apply_tier_a(load_model(tiny_cfg, trainable=True), tiny_cfg)
    trainer = make_trainer(model, processor, tiny_cfg, "a", dataset["train"].select(range(2)), None,
                           output_dir=tiny_cfg.run_dir / "ckpt", max_steps=1, save_steps=1,
                           per_device_train_batch_size=2, gradient_accumulation_steps=1,
                           disable_tqdm=True)
    trainer.train()
    ckpt = tiny_cfg.run_dir / "ckpt" / "checkpoint-1"
    files = {p.name for p in ckpt.iterdir()}
    assert "adapter_model.safetensors" in files and "scheduler.pt" in files
    assert not files & {"pytorch_model_fsdp.bin", "model.safetensors", "pytorch_model.bin"}, files
    assert saved_optimizer == [str(ckpt)]
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for p in model.parameters():
        if p.requires_grad:
            p.data.zero_()
    trainer._load_from_checkpoint(str(ckpt))
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters() if p.requires_grad)
