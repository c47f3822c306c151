"""The tiny profile's miniature of the paper's experiment: from the shipped, pretrained mini base,
Tier A teaches the answer format and raises the score, and merging keeps it.

Runs Tier A (about 3 minutes on 2 CPU cores) and predicts 100 test samples twice; not timed.
The same check with training switched off (learning rate 1e-12; validate refuses 0) must fail.
"""
import pytest

from tableqa_helpers.config import get_config
from tableqa_helpers.evaluate.compare import compare_stages
from tableqa_helpers.infer import predict
from tableqa_helpers.merge import merge_tier_a
from tableqa_helpers.offline.standin import ensure_standins
from tableqa_helpers.train.trainer import train_tier


def _stages(root, **overrides) -> dict:
    """{stage: {question type or "all": row}} after Tier A and the merge on the tiny profile."""
    cfg = get_config("tiny", {"root": str(root), **overrides})
    ensure_standins(cfg)
    train_tier(cfg, "a", resume=False)
    merge_tier_a(cfg)
    paths = {s: predict(cfg, s, "test", progress=False) for s in ("base", "a", "merged")}
    rows = compare_stages(paths, cfg.eval_dir / "test")
    table = {}
    for r in rows:
        table.setdefault(r["stage"], {})[r["question_type"]] = r
    return table


def check_rises(table: dict) -> None:
    """What the tiny series must show; AssertionError names the first rise missing."""
    base, a, merged = (table[s]["all"] for s in ("base", "a", "merged"))
    assert a["n"] >= 100 and len(table["a"]) == 6, "100 test samples of all five types"
    assert a["correct"] >= base["correct"] + 0.15, \
        f"Tier A correct {a['correct']} vs base {base['correct']}"
    assert a["f1"] >= base["f1"] + 0.30, f"Tier A token F1 {a['f1']} vs base {base['f1']}"
    assert abs(merged["correct"] - a["correct"]) <= 0.01, "the merge changed the answers"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _stages(tmp_path_factory.mktemp("mini"))


def test_tier_a_rises_over_the_mini_base_and_the_merge_keeps_it(trained):
    check_rises(trained)
    assert trained["base"]["all"]["correct"] <= 0.02  # the base reads but cannot answer yet


def test_the_check_fails_when_training_is_off(tmp_path):
    table = _stages(tmp_path, **{"tier_a.lr": 1e-12, "tier_a.epochs": 0.25})
    with pytest.raises(AssertionError, match="Tier A"):
        check_rises(table)
