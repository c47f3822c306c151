"""Regenerate the README's pictures in images/ from code and a finished tiny run.

    bash scripts/run_series.sh            # leaves runs/tiny/ with logs and predictions
    python scripts/make_images.py runs/tiny
    TABLEQA_UPDATE_IMAGES=1 python -m pytest tests/test_browser.py   # images/browser.png
"""
import json
import sys
from pathlib import Path

from tableqa_helpers.plots import plot_loss_curves, plot_pipeline, plot_stage_comparison, show_samples

out = Path(__file__).resolve().parent.parent / "images"
run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/tiny")
plot_pipeline(out / "pipeline.png")
for tier in ("a", "b"):
    log = json.loads((run / "logs" / f"tier_{tier}.json").read_text())
    plot_loss_curves(log["log_history"], f"Tier {tier.upper()} (tiny profile)", out / f"loss_tier_{tier}.png")
rows = [dict(r) for r in __import__("csv").DictReader(open(run / "eval" / "test" / "comparison.csv"))]
for r in rows:
    for k in ("correct", "exact_match", "numeric_match", "f1", "rouge_l"):
        r[k] = float(r[k])
plot_stage_comparison(rows, out / "stage_comparison.png")
config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
from tableqa_helpers.data import load_tableqa  # noqa: E402

dataset = config.get("dataset_id") or str(run.parent / "standins" / "synthetic-visual-tableqa")
show_samples(load_tableqa(dataset, "train"), n=3, path=out / "samples.png")
print("wrote", sorted(p.name for p in out.glob("*.png")))
