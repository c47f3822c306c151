"""The benchmark script runs end to end at the tiny shape on the CPU (what `bench/run.sh 7b` does
on the GPU machine, minus the tutorial's reference script): records and the summary table."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_at_the_tiny_shape(tmp_path):
    scratch = tmp_path / "tmp"  # the run's temporary folders go here and must be gone after
    scratch.mkdir()
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable, "STAGES": "ours report",
           "OURS_ARGS": "--parts vision,a,b,infer --a-variants default,eager --b-variants default",
           "TMPDIR": str(scratch)}
    run = subprocess.run(["bash", "bench/run.sh", "tiny"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "ours.jsonl").read_text().splitlines()]
    parts = {(r["part"], r.get("variant")) for r in records}
    for want in [("tier_a", "default"), ("tier_a", "eager"), ("tier_b", "default"),
                 ("infer", "ours batched"), ("infer", "tutorial one-at-a-time"), ("vision", None)]:
        assert want in parts, want
    assert not [r for r in records if "error" in r], [r for r in records if "error" in r]
    tier_a = [r for r in records if r["part"] == "tier_a"]
    assert all(r["samples_per_s"] > 0 and r["cache"]["hits"] == r["cache"]["misses"] for r in tier_a)
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
