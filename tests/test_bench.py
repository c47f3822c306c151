"""The benchmark script runs end to end at the tiny shape on the CPU (what `bench/run.sh 7b` does
on the GPU machine, minus the tutorial's reference script): records and the summary table."""
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_at_the_tiny_shape(tmp_path):
    scratch = tmp_path / "tmp"  # the run's temporary folders go here and must be gone after
    scratch.mkdir()
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable, "STAGES": "ours report",
           "OURS_ARGS": "--parts vision,profile_ours,a,b,infer --a-variants default,eager,pinned "
                        "--b-variants default --gen-batches 2,4s+compiled --profiler",
           "TMPDIR": str(scratch)}
    run = subprocess.run(["bash", "bench/run.sh", "tiny"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "ours.jsonl").read_text().splitlines()]
    parts = {(r["part"], r.get("variant")) for r in records}
    for want in [("tier_a", "default"), ("tier_a", "eager"), ("tier_b", "default"),
                 ("infer", "ours batched"), ("infer", "tutorial one-at-a-time"), ("vision", None),
                 ("tier_a", "pinned"), ("infer", "ours batched, sorted, compiled blocks"),
                 ("profile_ours", None), ("infer_profile", "ours batched")]:
        assert want in parts, want
    # the first --gen-batches entry profiled at 1 and 17 new tokens
    assert sorted(r["new_tokens"] for r in records if r["part"] == "infer_profile") == [1, 17]
    assert not [r for r in records if "error" in r], [r for r in records if "error" in r]
    tier_a = [r for r in records if r["part"] == "tier_a"]
    assert all(r["samples_per_s"] > 0 and r["cache"]["hits"] == r["cache"]["misses"] for r in tier_a)
    assert all(r["epoch2_after_first_step_samples_per_s"] > 0 for r in tier_a)  # 2 steps an epoch
    assert all(r["prefill_first_batch_s"] > 0 for r in records
               if r["part"] == "infer" and r.get("batch", 1) > 1)
    summary = (tmp_path / "summary.md").read_text()
    assert "ours Tier A default" in summary and "ours batched" in summary
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert not left, left  # (torch's compile cache is meant to stay: later runs reuse it)


def test_limited_signals_only_what_it_started(tmp_path):
    """bench/env.sh's `limited`: its command gets SIGABRT (stack dump) before the time limit; a
    look-alike training process that `limited` did not start keeps running."""
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "-m", "tableqa_helpers", "train"])  # a command line like a run's
    try:
        script = (f"source bench/env.sh; limited 4 {sys.executable} -c "
                  f"'import time; time.sleep(30)' -m tableqa_helpers train; echo rc=$?")
        run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "OUT": str(tmp_path / "out"),
                                              "PY": sys.executable})
        assert "rc=134" in run.stdout, run.stdout + run.stderr  # aborted at t/2, not at t
        assert "Fatal Python error: Aborted" in run.stderr  # the fault handler's stack dump
        assert decoy.poll() is None  # not ours: untouched
    finally:
        decoy.kill()
        decoy.wait()


def test_reading_onset_proxy_runs_and_reports(tmp_path):
    """bench/reading_onset.py (the proxy behind docs/mini-base.md's sweep): a few steps on the
    CPU, one JSON line per event, the final one with the held-out accuracy and the knobs."""
    import random

    from bench import reading_onset

    args = SimpleNamespace(digits=4, font=20, position="random")
    image, number = reading_onset.sample(random.Random(0), args)
    assert image.size == (224, 224) and len(number) == 4 and number.isdigit()
    assert image.convert("L").getextrema()[0] < 128  # the number is drawn
    run = subprocess.run([sys.executable, "-m", "bench.reading_onset", "--name", "t", "--seconds",
                          "1", "--batch-size", "2", "--digits", "2", "--init-range", "0.02", "--eval", "2"],
                         cwd=ROOT, text=True, capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    final = json.loads(run.stdout.strip().splitlines()[-1])
    assert final["final"] and final["steps"] >= 1 and final["last_loss"] > 0
    assert final["accuracy"] in (0.0, 0.5, 1.0)  # of 2 pages
    too_big = subprocess.run([sys.executable, "-m", "bench.reading_onset", "--name", "t",
                              "--digits", "9", "--font", "40"], cwd=ROOT, text=True,
                             capture_output=True, timeout=120)
    assert too_big.returncode == 2 and "do not fit a 224-pixel page" in too_big.stderr


def test_reading_onset_takes_the_vision_tower_of_a_checkpoint(tmp_path):
    """--vision-init DIR: the vision tower is the checkpoint's, the language model the fresh one."""
    import torch

    from bench import reading_onset
    from tableqa_helpers.offline.mini import build_mini_untrained

    trained, _ = build_mini_untrained(seed=7)
    trained.save_pretrained(tmp_path / "ckpt")
    knobs = dict(rope_theta=None, mrope=None, init_range=None)
    fresh, _ = reading_onset.build_model(SimpleNamespace(**knobs, vision_init=None))
    model, _ = reading_onset.build_model(SimpleNamespace(**knobs, vision_init=tmp_path / "ckpt"))
    for name, p in model.model.visual.state_dict().items():
        assert torch.equal(p, trained.model.visual.state_dict()[name]), name
    assert not torch.equal(model.model.visual.patch_embed.proj.weight,
                           fresh.model.visual.patch_embed.proj.weight)
    assert torch.equal(model.lm_head.weight, fresh.lm_head.weight)


def test_gen_batches_entries_parse_or_name_the_bad_one():
    from bench.bench import gen_spec

    assert gen_spec("32") == (32, False, None, False, False)
    assert gen_spec("64s+static") == (64, True, "static", False, False)
    assert gen_spec("64s+compiled+static") == (64, True, "static", True, False)
    assert gen_spec("64s+liger") == (64, True, None, False, True)
    for bad in ("64x", "s", "32+fast"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            gen_spec(bad)
