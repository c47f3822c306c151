"""Records for the prediction browser: every stage's prediction per sample, verdicts, images.

A *record* is one sample with every stage's prediction (what `load_records` returns):

    {"index": int, "table_id": str, "question": str, "reference": str,
     "final_answer": str?, "question_type": str?,
     "stages": {stage: {"prediction": str, "correct": bool | None, "tokens"?, "seconds"?, ...}},
     "image": PIL image | zero-argument callable returning one | None}   # optional

A stage whose `correct` key is missing is scored lazily with `tableqa_helpers.evaluate.score`;
`correct: None` means "no verdict" and is shown as "?".

    records = load_records({"base": ".../base.jsonl", "a": ".../a.jsonl"}, dataset=test_split)
    browser = PredictionBrowser(records)        # last line of a cell shows it
"""
from __future__ import annotations

import functools
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping


STAGE_ORDER = ("base", "a", "merged", "b")  # order of the known stages in columns
FILTER_KINDS = ("all", "correct", "incorrect", "disagree")  # `correct`/`incorrect` use a chosen stage
_FILTER_LABELS = {"all": "all samples", "correct": "correct", "incorrect": "incorrect",
                  "disagree": "stages disagree"}
_SAMPLE_KEYS = ("table_id", "question", "reference", "final_answer", "question_type")
_MARK_STYLE = "background:#ffd866;color:#000;border-radius:2px;padding:0 1px"
_VERDICT_HTML = {True: '<span style="color:#1a7f37" title="correct">&#10003;</span>',
                 False: '<span style="color:#cf222e" title="incorrect">&#10007;</span>',
                 None: '<span style="color:#888" title="no verdict">?</span>'}


# --------------------------------------------------------------------------- loading

def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a line that is not valid JSON (a truncated last write) is skipped."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{lineno}: skipped a line that is not valid JSON", stacklevel=3)
    return rows


def _stage_rank(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _resolve_pred_paths(pred_paths) -> dict[str, Path]:
    """`{stage: path}` from a mapping, or from a folder of `{stage}.jsonl` files."""
    if isinstance(pred_paths, (str, os.PathLike)):
        folder = Path(pred_paths)
        files = sorted(folder.glob("*.jsonl"), key=lambda p: _stage_rank(p.stem))
        if not files:
            raise FileNotFoundError(f"no <stage>.jsonl prediction files in {folder}")
        return {p.stem: p for p in files}
    return {str(stage): Path(path) for stage, path in dict(pred_paths).items()}


def _dataset_image_loader(dataset) -> Callable[[int], Any]:
    """`index -> PIL image` for a `datasets.Dataset` split or a list of dicts with an `image` key."""
    def load(index: int):
        return dataset[index]["image"]
    return load


def load_records(
    pred_paths: Mapping[str, str | os.PathLike] | str | os.PathLike,
    dataset=None,
    *,
    image_loader: Callable[[int], Any] | None = None,  # index -> PIL image; overrides `dataset`
    scores: str | os.PathLike | Iterable[Mapping] | None = None,  # scores.jsonl rows with index, stage, correct
) -> list[dict]:
    """Join per-stage prediction JSONL files by `index` into one record per sample, sorted by index.

    `pred_paths` is `{stage: path}` (a missing file is skipped with a warning) or a folder holding
    `{stage}.jsonl`. Verdicts come from a `correct` field in the prediction rows, else from `scores`
    (`RUN/eval/{split}/scores.jsonl` or its rows), else are computed lazily by the browser. Images
    are attached lazily (`record["image"]` is a callable) from `dataset[index]["image"]` or
    `image_loader(index)`; without either the records have no image.
    """
    paths = _resolve_pred_paths(pred_paths)
    by_index: dict[int, dict] = {}
    found = 0
    for stage, path in paths.items():
        if not path.exists():
            warnings.warn(f"no predictions for stage {stage!r}: {path} does not exist", stacklevel=2)
            continue
        found += 1
        for row in _read_jsonl(path):
            if "index" not in row:
                warnings.warn(f"{path}: skipped a row without 'index'", stacklevel=2)
                continue
            index = int(row["index"])
            record = by_index.setdefault(index, {"index": index, "stages": {}})
            for key in _SAMPLE_KEYS:
                if row.get(key) is not None and record.get(key) is None:
                    record[key] = row[key]
            entry = {k: v for k, v in row.items() if k not in _SAMPLE_KEYS and k not in ("index", "stage")}
            entry.setdefault("prediction", "")
            record["stages"][stage] = entry  # a resumed run's later row for the same index wins
    if not found:
        raise FileNotFoundError(f"none of the prediction files exist: {[str(p) for p in paths.values()]}")

    if scores is not None:
        rows = _read_jsonl(Path(scores)) if isinstance(scores, (str, os.PathLike)) else list(scores)
        for row in rows:
            entry = by_index.get(int(row.get("index", -1)), {}).get("stages", {}).get(row.get("stage"))
            if entry is not None and "correct" in row and "correct" not in entry:
                entry["correct"] = None if row["correct"] is None else bool(row["correct"])
                entry["metrics"] = {k: v for k, v in row.items() if k not in ("index", "stage")}

    records = [by_index[i] for i in sorted(by_index)]
    for record in records:
        for key in ("table_id", "question", "reference"):
            record.setdefault(key, "")
        record["stages"] = {s: record["stages"][s] for s in paths if s in record["stages"]}
    loader = image_loader or (_dataset_image_loader(dataset) if dataset is not None else None)
    if loader is not None:
        for record in records:
            record["image"] = functools.partial(loader, record["index"])
    return records


# --------------------------------------------------------------------------- verdicts and images

_score_warned = False


def _score_correct(prediction: str, reference: str, final_answer: str | None) -> bool | None:
    """`correct` from `tableqa_helpers.evaluate.score`, or None when it is not available."""
    global _score_warned
    try:
        from .. import evaluate  # looked up at call time (tests replace it)
        result = evaluate.score(prediction, reference, final_answer=final_answer)
        correct = result.get("correct") if isinstance(result, Mapping) else None
        return None if correct is None else bool(correct)
    except Exception as exc:  # evaluate missing or failing: show "?" rather than break the view
        if not _score_warned:
            _score_warned = True
            warnings.warn(f"could not score predictions ({exc!r}); verdicts shown as '?'", stacklevel=3)
        return None


def _verdict(record: dict, stage: str) -> bool | None:
    """The stage's verdict, scored (and cached in the record) when its `correct` key is missing."""
    entry = record.get("stages", {}).get(stage)
    if entry is None:
        return None
    if "correct" not in entry:
        entry["correct"] = _score_correct(str(entry.get("prediction") or ""),
                                          str(record.get("reference") or ""), record.get("final_answer"))
    c = entry["correct"]
    return None if c is None else bool(c)


def _disagree(record: dict, stages: list[str]) -> bool:
    """True when the stages with a verdict do not all agree."""
    verdicts = {_verdict(record, s) for s in stages if s in record.get("stages", {})}
    verdicts.discard(None)
    return len(verdicts) > 1


def _image_of(record: dict, image_for: Callable | None):
    """The record's PIL image (or None): `image_for(record)`, else `record["image"]`."""
    from PIL import Image
    try:
        img = image_for(record) if image_for is not None else record.get("image")
        if callable(img) and not isinstance(img, Image.Image):
            img = img()
        if isinstance(img, (str, os.PathLike)):
            img = Image.open(img)
        elif isinstance(img, (bytes, bytearray)):
            img = Image.open(io.BytesIO(img))
        elif isinstance(img, Mapping) and img.get("bytes"):  # datasets' undecoded Image feature
            img = Image.open(io.BytesIO(img["bytes"]))
        return img if isinstance(img, Image.Image) else None
    except Exception as exc:
        warnings.warn(f"no image for sample {record.get('index')}: {exc!r}", stacklevel=2)
        return None


def _encode_image(img, max_px: int | None, fmt: str = "png") -> tuple[bytes, str, tuple[int, int]]:
    """(bytes, format, size) of `img` scaled to at most `max_px` on its longest side.

    `fmt="auto"` keeps PNG (lossless, sharp text) unless JPEG is much smaller.
    """
    img = img.copy()
    if max_px:
        img.thumbnail((max_px, max_px))
    if img.mode not in ("RGB", "L"):
        img = _flatten(img.convert("RGBA"))
    png = io.BytesIO()
    img.save(png, format="PNG", optimize=fmt != "png")
    if fmt == "png":
        return png.getvalue(), "png", img.size
    jpeg = io.BytesIO()
    img.convert("RGB").save(jpeg, format="JPEG", quality=88, optimize=True)
    if png.tell() <= 1.3 * jpeg.tell():
        return png.getvalue(), "png", img.size
    return jpeg.getvalue(), "jpeg", img.size


def _flatten(rgba):
    """RGBA -> RGB on a white background."""
    from PIL import Image
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


# --------------------------------------------------------------------------- rendering (shared)
