"""Prediction browser: an ipywidgets view of per-stage predictions, and the same view as static HTML.

A *record* is one sample with every stage's prediction (what `load_records` returns):

    {"index": int, "table_id": str, "question": str, "reference": str,
     "final_answer": str?, "question_type": str?,
     "stages": {stage: {"prediction": str, "correct": bool | None, "tokens"?, "seconds"?, ...}},
     "image": PIL image | zero-argument callable returning one | None}   # optional

A stage whose `correct` key is missing is scored lazily with `tableqa_helpers.evaluate.score`;
`correct: None` means "no verdict" and is shown as "?".

    records = load_records({"base": ".../base.jsonl", "a": ".../a.jsonl"}, dataset=test_split)
    browser = PredictionBrowser(records)        # last line of a cell shows it
    export_html(records, run_dir / "browser.html")
"""

from __future__ import annotations

import base64
import difflib
import functools
import html
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "STAGE_ORDER",
    "FILTER_KINDS",
    "load_records",
    "highlight_diff",
    "PredictionBrowser",
    "export_html",
]

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
        from . import evaluate
        result = evaluate.score(prediction, reference, final_answer=final_answer)
        correct = result.get("correct") if isinstance(result, Mapping) else None
        return None if correct is None else bool(correct)
    except Exception as exc:  # evaluate.py missing or failing: show "?" rather than break the view
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

_TOKEN_RE = re.compile(r"\S+|\s+")
_PUNCT = ".,;:!?()[]{}\"'`*"


def _norm_word(word: str) -> str:
    return word.strip(_PUNCT).lower() or word


def highlight_diff(prediction: str, reference: str) -> str:
    """Escaped HTML of `prediction` with the words that differ from `reference` in <mark>.

    Word-level alignment with difflib (case and surrounding punctuation ignored); whitespace kept.
    """
    tokens = _TOKEN_RE.findall(prediction or "")
    words = [(i, t) for i, t in enumerate(tokens) if not t.isspace()]
    matcher = difflib.SequenceMatcher(a=[_norm_word(w) for w in (reference or "").split()],
                                      b=[_norm_word(t) for _, t in words], autojunk=False)
    marked = set()
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            marked.update(words[j][0] for j in range(j1, j2))
    return "".join(f'<mark class="tqa-diff" style="{_MARK_STYLE}">{html.escape(t)}</mark>'
                   if i in marked else html.escape(t) for i, t in enumerate(tokens))


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_TEXT_STYLE = "white-space:pre-wrap;word-break:break-word;line-height:1.4"


def _question_html(record: dict) -> str:
    meta = [f"sample #{_esc(record.get('index'))}"]
    if record.get("table_id"):
        meta.append(f"table {_esc(record['table_id'])}")
    if record.get("question_type"):
        meta.append(f"type <b>{_esc(record['question_type'])}</b>")
    return (f'<div class="tqa-question"><div style="color:#666;font-size:0.85em">{" &middot; ".join(meta)}</div>'
            f'<div style="font-weight:600;margin-top:4px">Question</div>'
            f'<div class="tableqa-question-text" style="{_TEXT_STYLE}">{_esc(record.get("question"))}</div></div>')


def _reference_html(record: dict) -> str:
    final = ""
    if record.get("final_answer") not in (None, ""):
        final = (f'<div style="margin-top:4px">Final answer: '
                 f'<b class="tableqa-final-answer">{_esc(record["final_answer"])}</b></div>')
    return (f'<div class="tqa-reference"><div style="font-weight:600;margin-top:8px">Reference</div>'
            f'<div class="tableqa-reference-text" style="{_TEXT_STYLE};max-height:18em;overflow:auto">'
            f'{_esc(record.get("reference"))}</div>{final}</div>')


def _stage_html(record: dict, stage: str) -> str:
    entry = record.get("stages", {}).get(stage)
    head = f'<span style="font-weight:600">{_esc(stage)}</span>'
    if entry is None:
        return (f'<div class="tqa-stage" data-stage="{_esc(stage)}">{head} '
                f'<div style="color:#888">no prediction</div></div>')
    verdict = _verdict(record, stage)
    info = []
    if entry.get("tokens") is not None:
        info.append(f"{_esc(entry['tokens'])} tokens")
    if isinstance(entry.get("seconds"), (int, float)):
        info.append(f"{entry['seconds']:.1f} s")
    info_html = f' <span style="color:#888;font-size:0.85em">{" &middot; ".join(info)}</span>' if info else ""
    return (f'<div class="tqa-stage" data-stage="{_esc(stage)}">'
            f'<div>{head} <span class="tqa-verdict" style="font-size:1.2em">{_VERDICT_HTML[verdict]}</span>'
            f'{info_html}</div>'
            f'<div class="tableqa-prediction" style="{_TEXT_STYLE};max-height:24em;overflow:auto;margin-top:4px">'
            f'{highlight_diff(str(entry.get("prediction") or ""), str(record.get("reference") or ""))}</div></div>')


def _stage_list(records: list[dict], stages: Iterable[str] | None) -> list[str]:
    if stages is not None:
        return list(stages)
    seen: dict[str, None] = {}
    for record in records:
        for stage in record.get("stages", {}):
            seen.setdefault(stage, None)
    return list(seen)


def _question_types(records: list[dict]) -> list[str]:
    return sorted({str(r["question_type"]) for r in records if r.get("question_type") not in (None, "")})


def _matches(record: dict, kind: str, stage: str | None, question_type: str | None, stages: list[str]) -> bool:
    if question_type is not None and str(record.get("question_type")) != question_type:
        return False
    if kind == "all":
        return True
    if kind == "disagree":
        return _disagree(record, stages)
    verdict = _verdict(record, stage) if stage is not None else None
    return verdict is (kind == "correct")


# --------------------------------------------------------------------------- the widget

class PredictionBrowser:
    """ipywidgets browser over records: Prev/Next, a slider, filters, image, question, stage columns.

    State for tests and code: `position` (place in `filtered`), `filtered` (positions in `records`
    that pass the filter), `current` (the record shown, or None), `next()`, `prev()`, `go_to()`,
    `set_filter()`; the widget is `widget` and the object displays itself in a notebook.
    """

    def __init__(
        self,
        records: Iterable[dict],
        image_for: Callable[[dict], Any] | None = None,  # record -> PIL image; default record["image"]
        *,
        stages: Iterable[str] | None = None,  # columns to show; default every stage in the records
        thumb_px: int = 640,  # longest side of the thumbnail
        full_px: int = 4096,  # longest side in "full resolution" (caps huge images)
    ):
        import ipywidgets as W

        self.records = [dict(r, stages={s: dict(e) for s, e in r.get("stages", {}).items()}) for r in records]
        self.stages = _stage_list(self.records, stages)
        self.question_types = _question_types(self.records)
        self.image_for = image_for
        self.thumb_px, self.full_px = thumb_px, full_px
        self.filtered: list[int] = list(range(len(self.records)))
        self.filter_kind, self.filter_stage, self.filter_question_type = "all", None, None
        self._position = 0
        self._syncing = False
        self._image_cache: dict[tuple[int, bool], tuple[bytes, str] | None] = {}

        button = W.Layout(width="90px")
        self.prev_button = W.Button(description="Prev", icon="arrow-left", tooltip="previous sample", layout=button)
        self.next_button = W.Button(description="Next", icon="arrow-right", tooltip="next sample", layout=button)
        self.prev_button.add_class("tableqa-prev")
        self.next_button.add_class("tableqa-next")
        self.slider = W.IntSlider(min=0, max=0, value=0, readout=False, continuous_update=False,
                                  layout=W.Layout(flex="1 1 auto", min_width="120px"))
        self.counter = W.HTML(layout=W.Layout(min_width="170px"))
        self.counter.add_class("tableqa-counter")
        self.filter_dropdown = W.Dropdown(options=[(_FILTER_LABELS[k], k) for k in FILTER_KINDS], value="all",
                                          description="Show", layout=W.Layout(width="220px"))
        default_stage = self.stages[-1] if self.stages else None
        self.stage_dropdown = W.Dropdown(options=self.stages, value=default_stage, description="by stage",
                                         disabled=True, layout=W.Layout(width="200px"))
        self.filter_stage = default_stage
        # "" is "any type" (a None value would read as "nothing selected" to ipywidgets)
        self.type_dropdown = W.Dropdown(options=[("any type", "")] + [(t, t) for t in self.question_types],
                                        value="", description="Type", layout=W.Layout(width="220px"))
        if not self.question_types:
            self.type_dropdown.layout.display = "none"
        self.full_toggle = W.ToggleButton(value=False, description="Full resolution", icon="search-plus",
                                          tooltip="show the table image at full resolution")
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.image_note = W.HTML()
        self.image_box = W.VBox([self.image, self.image_note],
                                layout=W.Layout(max_width="55%", overflow="auto", margin="0 12px 0 0"))
        self.question_html = W.HTML()
        self.question_html.add_class("tableqa-question")
        self.reference_html = W.HTML()
        self.reference_html.add_class("tableqa-reference")
        self.text_box = W.VBox([self.question_html, self.reference_html],
                               layout=W.Layout(flex="1 1 300px", min_width="260px"))
        self.stage_html = {s: W.HTML(layout=W.Layout(flex="1 1 0", min_width="180px", border="1px solid #ddd",
                                                     padding="4px 8px", margin="0 4px 0 0"))
                           for s in self.stages}
        for w in self.stage_html.values():
            w.add_class("tableqa-stage")
        self.stage_box = W.HBox(list(self.stage_html.values()), layout=W.Layout(width="100%", margin="8px 0 0 0"))

        self.widget = W.VBox([
            W.HBox([self.prev_button, self.slider, self.next_button, self.counter],
                   layout=W.Layout(align_items="center")),
            W.HBox([self.filter_dropdown, self.stage_dropdown, self.type_dropdown, self.full_toggle],
                   layout=W.Layout(flex_flow="row wrap", align_items="center")),
            W.HBox([self.image_box, self.text_box], layout=W.Layout(flex_flow="row wrap", margin="8px 0 0 0")),
            self.stage_box,
        ])
        self.widget.add_class("tableqa-browser")

        self.prev_button.on_click(lambda _b: self.prev())
        self.next_button.on_click(lambda _b: self.next())
        self.slider.observe(self._on_slider, names="value")
        for dropdown in (self.filter_dropdown, self.stage_dropdown, self.type_dropdown):
            dropdown.observe(self._on_filter_widgets, names="value")
        self.full_toggle.observe(lambda _c: self._render(), names="value")
        self._refilter()

    # -- state
    @property
    def position(self) -> int:
        """Place of the shown sample in `filtered` (0-based)."""
        return self._position

    @position.setter
    def position(self, value: int) -> None:
        self.go_to(value)

    @property
    def current(self) -> dict | None:
        """The record shown, or None when no sample passes the filter."""
        return self.records[self.filtered[self._position]] if self.filtered else None

    def go_to(self, position: int) -> None:
        """Show the sample at `position` in `filtered` (clamped)."""
        self._position = max(0, min(int(position), len(self.filtered) - 1)) if self.filtered else 0
        self._render()

    def go_to_index(self, index: int) -> bool:
        """Show the sample whose `index` field is `index`; False when it is not in `filtered`."""
        for pos, rec_pos in enumerate(self.filtered):
            if self.records[rec_pos].get("index") == index:
                self.go_to(pos)
                return True
        return False

    def next(self) -> None:
        """Show the next sample (stays on the last)."""
        self.go_to(self._position + 1)

    def prev(self) -> None:
        """Show the previous sample (stays on the first)."""
        self.go_to(self._position - 1)

    def set_filter(self, kind: str = "all", stage: str | None = None, question_type: str | None = None) -> list[int]:
        """Filter samples; returns `filtered`.

        kind: "all", "correct" / "incorrect" (by `stage`; None keeps the chosen one) or "disagree"
        (the stages' verdicts differ); question_type: keep only that type (None, "" or "all": any).
        The shown sample stays if it passes, else the first that passes is shown.
        """
        if kind not in FILTER_KINDS:
            raise ValueError(f"unknown filter {kind!r}; expected one of {FILTER_KINDS}")
        if stage is not None and stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r}; expected one of {self.stages}")
        if question_type in ("all", ""):
            question_type = None
        if question_type is not None and str(question_type) not in self.question_types:
            raise ValueError(f"unknown question type {question_type!r}; expected one of {self.question_types}")
        self.filter_kind = kind
        self.filter_stage = stage if stage is not None else self.filter_stage
        self.filter_question_type = None if question_type is None else str(question_type)
        self._syncing = True
        try:
            self.filter_dropdown.value = kind
            self.stage_dropdown.value = self.filter_stage
            self.stage_dropdown.disabled = kind not in ("correct", "incorrect")
            self.type_dropdown.value = self.filter_question_type or ""
        finally:
            self._syncing = False
        self._refilter()
        return self.filtered

    # -- display
    def display(self) -> None:
        """Display the widget (outside a notebook's last line)."""
        from IPython.display import display
        display(self.widget)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- internals
    def _refilter(self) -> None:
        shown = self.filtered[self._position] if self.filtered else None
        self.filtered = [i for i, r in enumerate(self.records)
                         if _matches(r, self.filter_kind, self.filter_stage, self.filter_question_type, self.stages)]
        self._position = self.filtered.index(shown) if shown in self.filtered else 0
        self._render()

    def _on_filter_widgets(self, _change) -> None:
        if self._syncing:
            return
        self.set_filter(self.filter_dropdown.value, self.stage_dropdown.value, self.type_dropdown.value)

    def _on_slider(self, change) -> None:
        if not self._syncing and change["new"] != self._position:
            self.go_to(change["new"])

    def _image_bytes(self, rec_pos: int, full: bool) -> tuple[bytes, str] | None:
        key = (rec_pos, full)
        if key not in self._image_cache:
            img = _image_of(self.records[rec_pos], self.image_for)
            value = None
            if img is not None:
                data, fmt, _size = _encode_image(img, self.full_px if full else self.thumb_px)
                value = (data, fmt)
            if len(self._image_cache) >= 16:  # keep memory bounded while browsing
                self._image_cache.pop(next(iter(self._image_cache)))
            self._image_cache[key] = value
        return self._image_cache[key]

    def _render(self) -> None:
        n, total = len(self.filtered), len(self.records)
        active = n != total or self.filter_kind != "all" or self.filter_question_type is not None
        suffix = f" (filtered from {total})" if active else ""
        self._syncing = True
        try:
            self.slider.max = max(n - 1, 0)
            self.slider.value = self._position
            self.slider.disabled = n <= 1
        finally:
            self._syncing = False
        self.prev_button.disabled = n == 0 or self._position == 0
        self.next_button.disabled = n == 0 or self._position >= n - 1
        record = self.current
        if record is None:
            self.counter.value = f"<b>0</b> of 0{suffix}"
            self.question_html.value = '<div style="color:#888">No sample matches this filter.</div>'
            self.reference_html.value = ""
            for w in self.stage_html.values():
                w.value = ""
            self.image.layout.display = "none"
            self.image_note.value = ""
            return
        self.counter.value = f"<b>{self._position + 1}</b> of {n}{suffix}"
        self.question_html.value = _question_html(record)
        self.reference_html.value = _reference_html(record)
        for stage, w in self.stage_html.items():
            w.value = _stage_html(record, stage)
        full = bool(self.full_toggle.value)
        encoded = self._image_bytes(self.filtered[self._position], full)
        if encoded is None:
            self.image.layout.display = "none"
            self.image_note.value = '<div style="color:#888;padding:8px">no table image</div>'
        else:
            self.image.format, self.image.value = encoded[1], encoded[0]
            self.image.layout.display = None
            self.image.layout.max_width = None if full else "100%"
            self.image_box.layout.max_width = "100%" if full else "55%"
            self.image_box.layout.max_height = "80vh" if full else None
            self.image_note.value = ""


# --------------------------------------------------------------------------- static HTML

_PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1f2328;background:#fff}
.tqa-controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:1;
 display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.tqa-controls input[type=range]{flex:1 1 200px}
.tqa-top{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px}
.tqa-image{max-width:55%;overflow:auto}
.tqa-image img{max-width:100%;height:auto;cursor:zoom-in;border:1px solid #eee}
body.tqa-full .tqa-image{max-width:100%;flex-basis:100%;max-height:85vh}
body.tqa-full .tqa-image img{max-width:none;cursor:zoom-out}
.tqa-text{flex:1 1 300px;min-width:260px}
.tqa-stages{display:flex;gap:8px;margin-top:12px}
.tqa-stage{flex:1 1 0;min-width:180px;border:1px solid #ddd;padding:4px 8px}
.tqa-sample{border-bottom:2px solid #eee;padding-bottom:16px}
.tqa-noimage{color:#888;padding:8px}
"""

_PAGE_JS = r"""
(function () {
  var samples = Array.prototype.slice.call(document.querySelectorAll('.tqa-sample'));
  var $ = function (id) { return document.getElementById(id); };
  var filtered = [], pos = 0;
  function verdicts(s) { return JSON.parse(s.getAttribute('data-verdicts') || '{}'); }
  function matches(s) {
    var kind = $('tqa-filter').value, stage = $('tqa-stage').value, qtype = $('tqa-type').value;
    if (qtype && s.getAttribute('data-type') !== qtype) return false;
    if (kind === 'all') return true;
    if (kind === 'disagree') return s.getAttribute('data-disagree') === '1';
    return verdicts(s)[stage] === (kind === 'correct');
  }
  function show() {
    samples.forEach(function (s) { s.hidden = true; });
    var n = filtered.length, total = samples.length;
    var active = n !== total || $('tqa-filter').value !== 'all' || $('tqa-type').value;
    $('tqa-empty').hidden = n > 0;
    $('tqa-counter').textContent = (n ? pos + 1 : 0) + ' of ' + n + (active ? ' (filtered from ' + total + ')' : '');
    $('tqa-slider').max = Math.max(n - 1, 0); $('tqa-slider').value = pos; $('tqa-slider').disabled = n <= 1;
    $('tqa-prev').disabled = n === 0 || pos === 0; $('tqa-next').disabled = n === 0 || pos >= n - 1;
    if (n) {
      var s = samples[filtered[pos]]; s.hidden = false;
      if (history.replaceState) history.replaceState(null, '', '#sample=' + s.getAttribute('data-index'));
    }
  }
  function refilter() {
    var cur = filtered.length ? filtered[pos] : -1;
    filtered = [];
    samples.forEach(function (s, i) { if (matches(s)) filtered.push(i); });
    pos = Math.max(0, filtered.indexOf(cur));
    var kind = $('tqa-filter').value; $('tqa-stage').disabled = kind !== 'correct' && kind !== 'incorrect';
    show();
  }
  function go(p) { if (filtered.length) { pos = Math.max(0, Math.min(p, filtered.length - 1)); show(); } }
  $('tqa-prev').addEventListener('click', function () { go(pos - 1); });
  $('tqa-next').addEventListener('click', function () { go(pos + 1); });
  $('tqa-slider').addEventListener('input', function () { go(parseInt(this.value, 10)); });
  ['tqa-filter', 'tqa-stage', 'tqa-type'].forEach(function (id) { $(id).addEventListener('change', refilter); });
  $('tqa-full').addEventListener('change', function () { document.body.classList.toggle('tqa-full', this.checked); });
  document.addEventListener('click', function (e) {
    if (e.target.closest && e.target.closest('.tqa-image img')) { $('tqa-full').click(); }
  });
  document.addEventListener('keydown', function (e) {
    var tag = e.target.tagName; if (tag === 'SELECT' || tag === 'INPUT' || tag === 'TEXTAREA') return;
    if (e.key === 'ArrowRight') go(pos + 1); else if (e.key === 'ArrowLeft') go(pos - 1);
  });
  $('tqa-js').hidden = false;
  refilter();
  var m = /sample=([^&]+)/.exec(location.hash);
  if (m) { for (var i = 0; i < filtered.length; i++) {
    if (samples[filtered[i]].getAttribute('data-index') === decodeURIComponent(m[1])) { go(i); break; } } }
})();
"""


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and os.replace."""
    try:
        from .io import atomic_write_text  # the package's own helper, when present
    except ImportError:
        pass
    else:
        atomic_write_text(path, text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def export_html(
    records: Iterable[dict],
    path: str | os.PathLike,
    image_for: Callable[[dict], Any] | None = None,  # record -> PIL image; default record["image"]
    max_image_px: int = 1600,  # longest side of embedded images (full resolution is capped here)
    *,
    stages: Iterable[str] | None = None,  # columns to show; default every stage in the records
    title: str = "Visual-TableQA predictions",
) -> Path:
    """Write the browser as one self-contained HTML page (images inline, a small inline script).

    Works from a file, GitHub pages or any static host: no kernel, no network. Without JavaScript
    every sample is listed. Returns the path written (atomically).
    """
    records = [dict(r, stages={s: dict(e) for s, e in r.get("stages", {}).items()}) for r in records]
    stage_names = _stage_list(records, stages)
    qtypes = _question_types(records)
    default_stage = stage_names[-1] if stage_names else ""
    sections = []
    for pos, record in enumerate(records):
        verdicts = {s: _verdict(record, s) for s in stage_names if s in record["stages"]}
        img = _image_of(record, image_for)
        if img is not None:
            data, fmt, size = _encode_image(img, max_image_px, fmt="auto")
            image_html = (f'<img src="data:image/{fmt};base64,{base64.b64encode(data).decode("ascii")}" '
                          f'width="{size[0]}" height="{size[1]}" alt="table {_esc(record.get("table_id"))}">')
        else:
            image_html = '<div class="tqa-noimage">no table image</div>'
        columns = "".join(_stage_html(record, s) for s in stage_names)
        qtype = record.get("question_type")
        sections.append(
            f'<section class="tqa-sample" data-pos="{pos}" data-index="{_esc(record.get("index"))}" '
            f'data-type="{_esc("" if qtype is None else qtype)}" data-verdicts="{_esc(json.dumps(verdicts))}" '
            f'data-disagree="{int(_disagree(record, stage_names))}">'
            f'<div class="tqa-top"><div class="tqa-image">{image_html}</div>'
            f'<div class="tqa-text">{_question_html(record)}{_reference_html(record)}</div></div>'
            f'<div class="tqa-stages">{columns}</div></section>')
    filter_options = "".join(f'<option value="{k}">{_esc(_FILTER_LABELS[k])}</option>' for k in FILTER_KINDS)
    stage_options = "".join(f'<option value="{_esc(s)}"{" selected" if s == default_stage else ""}>{_esc(s)}</option>'
                            for s in stage_names)
    type_options = '<option value="">any type</option>' + "".join(
        f'<option value="{_esc(t)}">{_esc(t)}</option>' for t in qtypes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_PAGE_CSS}</style></head>
<body><h1 style="font-size:1.3em;margin:0 0 8px">{_esc(title)}</h1>
<div class="tqa-controls" id="tqa-js" hidden>
<button id="tqa-prev" type="button">&larr; Prev</button>
<input id="tqa-slider" type="range" min="0" max="0" value="0" aria-label="sample">
<button id="tqa-next" type="button">Next &rarr;</button>
<span id="tqa-counter" class="tableqa-counter"></span>
<label>Show <select id="tqa-filter">{filter_options}</select></label>
<label>by stage <select id="tqa-stage" disabled>{stage_options}</select></label>
<label{"" if qtypes else " hidden"}>Type <select id="tqa-type">{type_options}</select></label>
<label><input id="tqa-full" type="checkbox"> full resolution</label>
</div>
<div id="tqa-empty" hidden style="color:#888;margin:16px 0">No sample matches this filter.</div>
{"".join(sections)}
<script>{_PAGE_JS}</script>
</body></html>
"""
    out = Path(path)
    _atomic_write_text(out, page)
    return out
