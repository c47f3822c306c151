"""Scoring prediction files and the stage comparison (scores.jsonl, comparison.csv/.md).
"""
from __future__ import annotations

import csv
import io as _stdio
import json
import logging
from pathlib import Path
from typing import Iterable, Mapping

from ..io import atomic_write_text
from .metrics import METRICS, STAGE_ORDER, score
from .answers import _clean_answer, extract_final_answer

log = logging.getLogger(__name__)


def read_predictions(path: str | Path) -> list[dict]:
    """Rows of a predictions JSONL (CONTRIBUTING.md format). A torn last line is ignored; when an
    `index` appears twice (a resumed run), the last row wins."""
    from ..io import read_jsonl

    rows = read_jsonl(path)
    by_index: dict = {}
    out: list[dict] = []
    for row in rows:
        idx = row.get("index")
        if idx is None:
            out.append(row)
        else:
            if idx in by_index:
                out[by_index[idx]] = row
                continue
            by_index[idx] = len(out)
            out.append(row)
    return out


def score_file(predictions_jsonl: str | Path, rel_tol: float = 0.01, stage: str | None = None) -> list[dict]:
    """Score every row of a predictions JSONL; one row per sample:

    ``{"stage", "index", "table_id", "question_type" (only when the predictions have it),
    "pred_answer" (extracted), "ref_answer" (gold final_answer or extracted from the reference),
    "exact_match": bool, "numeric_match": bool, "f1": float, "rouge_l": float, "correct": bool}``

    `stage` overrides the rows' own `stage` (default: the row's, else the file name stem).
    """
    path = Path(predictions_jsonl)
    rows = []
    for rec in read_predictions(path):
        gold = rec.get("final_answer")
        s = score(str(rec.get("prediction") or ""), str(rec.get("reference") or ""), gold, rel_tol)
        has_gold = gold is not None and str(gold).strip() != ""
        row = {"stage": stage or rec.get("stage") or path.stem, "index": rec.get("index"),
               "table_id": rec.get("table_id")}
        if rec.get("question_type") is not None:
            row["question_type"] = rec["question_type"]
        row["pred_answer"] = extract_final_answer(str(rec.get("prediction") or ""))
        row["ref_answer"] = _clean_answer(str(gold)) if has_gold else \
            extract_final_answer(str(rec.get("reference") or ""))
        row.update(s)
        rows.append(row)
    return rows


def _stage_key(stage: str, given: list[str]) -> tuple:
    return (STAGE_ORDER.index(stage), 0) if stage in STAGE_ORDER else (len(STAGE_ORDER), given.index(stage))


def _means(rows: list[dict]) -> dict:
    return {m: sum(float(r[m]) for r in rows) / len(rows) for m in METRICS}


def summarize(score_rows: Iterable[Mapping]) -> list[dict]:
    """Comparison rows from per-sample score rows (see `compare_stages`)."""
    rows = list(score_rows)
    given: list[str] = []
    for r in rows:
        if r["stage"] not in given:
            given.append(r["stage"])
    out = []
    for stage in sorted(given, key=lambda s: _stage_key(s, given)):
        srows = [r for r in rows if r["stage"] == stage]
        out.append({"stage": stage, "question_type": "all", "n": len(srows), **_means(srows)})
        types = sorted({str(r["question_type"]) for r in srows if r.get("question_type") is not None})
        for qt in types:
            trows = [r for r in srows if str(r.get("question_type")) == qt]
            out.append({"stage": stage, "question_type": qt, "n": len(trows), **_means(trows)})
    return out


def _csv_text(comparison: list[dict]) -> str:
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["stage", "question_type", "n", *METRICS])
    for r in comparison:
        w.writerow([r["stage"], r["question_type"], r["n"], *(f"{r[m]:.6f}" for m in METRICS)])
    return buf.getvalue()


def _md_text(comparison: list[dict]) -> str:
    labels = {"correct": "correct", "exact_match": "exact match", "numeric_match": "numeric match",
              "f1": "token F1", "rouge_l": "ROUGE-L"}
    lines = ["# Stage comparison", "",
             "Deterministic proxy metrics (not the paper's LLM jury), in %. `correct` = exact or numeric",
             "match of the final answer; token F1 and ROUGE-L compare whole answers.", "",
             "| stage | n | " + " | ".join(labels[m] for m in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    overall = [r for r in comparison if r["question_type"] == "all"]
    for r in overall:
        lines.append(f"| {r['stage']} | {r['n']} | " + " | ".join(f"{100 * r[m]:.1f}" for m in METRICS) + " |")
    types = sorted({r["question_type"] for r in comparison if r["question_type"] != "all"})
    if types:
        lines += ["", "## Correct by question type (%)", "",
                  "| stage | " + " | ".join(types) + " |", "|---|" + "---:|" * len(types)]
        for o in overall:
            cells = []
            for qt in types:
                hit = [r for r in comparison if r["stage"] == o["stage"] and r["question_type"] == qt]
                cells.append(f"{100 * hit[0]['correct']:.1f} (n={hit[0]['n']})" if hit else "-")
            lines.append(f"| {o['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_stages(pred_paths: Mapping[str, str | Path | None], out_dir: str | Path,
                   rel_tol: float = 0.01) -> list[dict]:
    """Score each stage's predictions and write the comparison; returns the comparison rows.

    pred_paths: {stage: predictions JSONL}; stages whose file is None or missing are skipped
    (with a warning). Writes atomically in `out_dir`:
    * ``scores.jsonl``: one `score_file` row per sample and stage;
    * ``comparison.csv``: the returned rows, columns stage, question_type, n, correct,
      exact_match, numeric_match, f1, rouge_l;
    * ``comparison.md``: a Markdown table (stages as rows, overall metrics in %), plus a table of
      `correct` per question type when the predictions have `question_type`.

    Returned rows (for `plots.py`), stages ordered base, a, merged, b, then any other:
    ``{"stage": str, "question_type": "all" | <type>, "n": int, "correct": float,
    "exact_match": float, "numeric_match": float, "f1": float, "rouge_l": float}``
    (means in [0, 1]; one "all" row per stage, then one per question type). A stage with an
    empty predictions file has no row.
    """
    out_dir = Path(out_dir)
    all_rows: list[dict] = []
    for stage, path in pred_paths.items():
        if path is None or not Path(path).exists():
            log.warning("stage %s: no predictions file (%s); skipped", stage, path)
            continue
        rows = score_file(path, rel_tol=rel_tol, stage=stage)
        if not rows:
            log.warning("stage %s: %s holds no predictions; skipped", stage, path)
        all_rows.extend(rows)
    comparison = summarize(all_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "scores.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rows))
    atomic_write_text(out_dir / "comparison.csv", _csv_text(comparison))
    atomic_write_text(out_dir / "comparison.md", _md_text(comparison))
    return comparison
