"""Batched generation equals one-at-a-time generation; an interrupted run resumes exactly."""
import json
import os
import signal
import subprocess
import sys
import time

from tableqa_helpers.data import GenerationCollator
from tableqa_helpers.data import load_tableqa
from tableqa_helpers.infer import generate_batch, predict, stage_model


def test_batched_equals_unbatched(pipeline):
    cfg = pipeline["cfg"]
    model, processor = stage_model(cfg, "a")
    rows = load_tableqa(cfg.dataset_id, "train", limit=8)
    samples = [rows[i] for i in (0, 2, 5, 7)]
    collate = GenerationCollator(processor, cfg.system_prompt)
    batched, counts = generate_batch(model, processor, collate(samples), 64)
    single = [generate_batch(model, processor, collate([s]), 64)[0][0] for s in samples]
    assert batched == single
    assert all(0 < n <= 64 for n in counts)


def _cli(cfg, out_root, extra=()):
    sets = [f"root={out_root}", f"model_id={cfg.model_id}", f"dataset_id={cfg.dataset_id}",
            "gen_batch_size=1", "max_new_tokens=24", "test_limit=6", *extra]
    cmd = [sys.executable, "-m", "tableqa_helpers", "predict", "--profile", "unit",
           "--stage", "base", "--split", "test"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _rows(path):
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
        r.pop("seconds")
    return rows


def test_killed_run_resumes_to_the_same_file(tiny_cfg, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    full = tmp_path / "full"
    subprocess.run(_cli(tiny_cfg, full), check=True, env=env, capture_output=True)
    expected = _rows(full / "unit" / "predictions" / "test" / "base.jsonl")
    assert len(expected) == 6

    part = tmp_path / "part"
    out = part / "unit" / "predictions" / "test" / "base.jsonl"
    proc = subprocess.Popen(_cli(tiny_cfg, part), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill, mid-run
    proc.wait()
    written = len(out.read_text().splitlines())
    assert 2 <= written < 6, written
    with open(out, "a") as f:
        f.write('{"index": 99, "torn')  # as if killed mid-line
    subprocess.run(_cli(tiny_cfg, part), check=True, env=env, capture_output=True)
    assert _rows(out) == expected


def test_predict_skips_finished_samples(pipeline, monkeypatch):
    cfg = pipeline["cfg"]
    path = predict(cfg, "merged", "test", limit=2, progress=False)
    first = path.read_text()
    import tableqa_helpers.infer as infer
    monkeypatch.setattr(infer, "stage_model", lambda *a: (_ for _ in ()).throw(AssertionError("reloaded")))
    assert predict(cfg, "merged", "test", limit=2, progress=False).read_text() == first


def test_prompts_prepared_by_workers_give_the_same_predictions(pipeline, tmp_path):
    """predict() with DataLoader workers collating ahead writes what it writes without them."""
    import dataclasses

    from tableqa_helpers.infer import prompt_batches

    cfg = pipeline["cfg"]
    model, processor = stage_model(cfg, "merged")
    got = {}
    for workers in (0, 2):
        run = dataclasses.replace(cfg, root=str(tmp_path / f"w{workers}"), gen_batch_size=3,
                                  dataloader_workers=workers)
        got[workers] = _rows(predict(run, "merged", "test", limit=7, model=model,
                                     processor=processor, progress=False))
    assert len(got[0]) == 7 and got[2] == got[0]
    rows = load_tableqa(cfg.dataset_id, "test", limit=4)
    items = list(prompt_batches(rows, [[0, 1], [3]], processor, cfg.system_prompt, workers=2))
    assert [it[0] for it in items] == [[0, 1], [3]]  # chunks in order, indices as given
    assert items[1][3]["input_ids"].shape[0] == 1 and items[1][1][0]["question"] == rows[3]["question"]


def test_predict_with_liger_where_it_cannot_run_stops_before_writing(pipeline, tmp_path, monkeypatch):
    """fused_kernels='liger' on a machine without liger-kernel or a GPU: a clear error, no file."""
    import dataclasses

    import pytest

    from tableqa_helpers.model import fused

    monkeypatch.setattr(fused, "liger_missing", lambda: "liger-kernel is not installed (test)")
    cfg = dataclasses.replace(pipeline["cfg"], root=str(tmp_path), fused_kernels="liger")
    with pytest.raises(RuntimeError, match="fused_kernels='liger' but liger-kernel is not installed"):
        predict(cfg, "merged", "test", limit=2, progress=False)
    assert not (tmp_path / cfg.profile / "predictions" / "test" / "merged.jsonl").exists()
