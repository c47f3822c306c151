"""The command line: stand-ins in seconds, and `plan` states the 7B numbers offline."""
import os
import subprocess
import sys
import time

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tableqa_helpers", *args], check=True,
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def test_plan_full_profile_offline():
    out = run("plan", "--profile", "full").stdout
    assert "40,673,280" in out and "245,760" in out
    assert "vision block 31" in out and "merger" in out
    seed = run("plan", "--profile", "full", "--tier", "a", "--seed-targets").stdout
    assert "47,589,376" in seed and "7,219,200" in seed


def test_synth_data_command_is_fast(tmp_path):
    start = time.perf_counter()
    run("synth-data", str(tmp_path / "ds"), "--train", "100", "--validation", "20", "--test", "20",
        "--seed", "1")
    assert time.perf_counter() - start < 30
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "ds"))
    assert {k: len(v) for k, v in ds.items()} == {"train": 100, "validation": 20, "test": 20}


def test_bad_override_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "tableqa_helpers", "plan", "--set", "nope=1"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode != 0 and "unknown config field 'nope'" in proc.stderr
