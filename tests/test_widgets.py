"""Headless tests of the prediction browser (ipywidgets state, no browser) and the HTML export."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
import types

import pytest
from PIL import Image

from tableqa_helpers.browse import records as tw
from tableqa_helpers.browse import PredictionBrowser, export_html, highlight_diff, load_records

# index -> (question, reference, final answer, type, {stage: (prediction, correct)})
SAMPLES = {
    0: ("Q-zero: what is the total of column A?", "Add 1 and 2. Final answer: 3", "3", "aggregation",
        {"base": ("Add 1 and 2. Final answer: 4", False), "a": ("Add 1 and 2. Final answer: 3", True),
         "b": ("Final answer: 3", True)}),
    1: ("Q-one: which row is largest?", "Row B is largest. Final answer: B", "B", "comparison",
        {"base": ("Row B is largest. Final answer: B", True), "a": ("Row B. Final answer: B", True),
         "b": ("Row B is largest. Final answer: B", True)}),
    2: ("Q-two <script>alert(1)</script> <|im_end|>", "Final answer: red", "red", "lookup",
        {"base": ("<b>blue</b> <|im_end|>", False), "a": ("Final answer: blue", False),
         "b": ("Final answer: red", True)}),
    3: ("Q-three: how many colored cells?", "Count them: 5. Final answer: 5", "5", "color_count",
        {"base": ("Final answer: 6", False), "a": ("Count them: 5. Final answer: 5", True),
         "b": ("Count: 6. Final answer: 6", False)}),
}
STAGES = ("base", "a", "b")


def _image(i: int, size=(40, 20)):
    return Image.new("RGB", size, (60 * i % 256, 120, 200))


def write_predictions(folder, stages=STAGES, with_correct=True, skip=()):
    """`{stage}.jsonl` in CONTRIBUTING's format; `skip` holds (stage, index) pairs left out."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stage in stages:
        path = folder / f"{stage}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for index in sorted(SAMPLES, reverse=True):  # out of order on purpose
                if (stage, index) in skip:
                    continue
                question, reference, final, qtype, preds = SAMPLES[index]
                row = {"index": index, "table_id": f"t{index}", "question": question, "reference": reference,
                       "prediction": preds[stage][0], "stage": stage, "tokens": 7, "seconds": 0.5,
                       "final_answer": final, "question_type": qtype}
                if with_correct:
                    row["correct"] = preds[stage][1]
                fh.write(json.dumps(row) + "\n")
        paths[stage] = path
    return paths


@pytest.fixture
def dataset():
    return [{"table_id": f"t{i}", "image": _image(i), "question": SAMPLES[i][0]} for i in sorted(SAMPLES)]


@pytest.fixture
def records(tmp_path, dataset):
    return load_records(write_predictions(tmp_path / "pred"), dataset=dataset)


def shown_question(browser) -> str:
    match = re.search(r'class="tableqa-question-text"[^>]*>(.*?)</div>', browser.question_html.value, re.S)
    assert match, browser.question_html.value
    return html.unescape(match.group(1))


def q(index):
    return SAMPLES[index][0]


# --------------------------------------------------------------------------- load_records

def test_load_records_joins_stages_by_index(records):
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    r2 = records[2]
    assert r2["question"] == q(2) and r2["reference"] == "Final answer: red"
    assert r2["final_answer"] == "red" and r2["question_type"] == "lookup" and r2["table_id"] == "t2"
    assert list(r2["stages"]) == list(STAGES)
    assert r2["stages"]["b"]["prediction"] == "Final answer: red" and r2["stages"]["b"]["correct"] is True
    assert r2["stages"]["base"]["tokens"] == 7
    image = r2["image"]()  # attached lazily from dataset[index]["image"]
    assert isinstance(image, Image.Image) and image.getpixel((0, 0)) == _image(2).getpixel((0, 0))


def test_load_records_missing_stage_truncated_line_and_folder(tmp_path):
    paths = write_predictions(tmp_path / "pred", skip={("a", 1)})
    with open(paths["b"], "a", encoding="utf-8") as fh:
        fh.write('{"index": 9, "predic')  # a write cut short
    with pytest.warns(UserWarning) as caught:
        records = load_records({**paths, "merged": tmp_path / "pred" / "merged.jsonl"})
    messages = " ".join(str(w.message) for w in caught)
    assert "merged" in messages and "not valid JSON" in messages
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert "a" not in records[1]["stages"] and "image" not in records[1]
    # a folder of {stage}.jsonl: stages in pipeline order
    with pytest.warns(UserWarning, match="not valid JSON"):
        folder_records = load_records(tmp_path / "pred")
    assert list(folder_records[0]["stages"]) == ["base", "a", "b"]


def test_load_records_scores_file_and_image_loader(tmp_path):
    paths = write_predictions(tmp_path / "pred", with_correct=False)
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"index": i, "stage": s, "exact_match": 0.0, "correct": p[1]}) + "\n"
                              for i, (*_, preds) in SAMPLES.items() for s, p in preds.items()))
    calls = []
    records = load_records(paths, image_loader=lambda i: calls.append(i) or _image(i), scores=scores)
    assert records[3]["stages"]["b"]["correct"] is False and records[3]["stages"]["a"]["correct"] is True
    assert records[3]["stages"]["a"]["metrics"]["exact_match"] == 0.0
    assert calls == []  # lazy
    assert records[3]["image"]().size == (40, 20) and calls == [3]


def test_load_records_with_datasets_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"image": [_image(i) for i in sorted(SAMPLES)]},
                                       features=datasets.Features({"image": datasets.Image()}))
    records = load_records(write_predictions(tmp_path / "pred"), dataset=split)
    assert records[1]["image"]().size == (40, 20)


# --------------------------------------------------------------------------- navigation

def test_next_prev_and_slider_change_the_shown_question(records):
    browser = PredictionBrowser(records)
    assert browser.position == 0 and browser.filtered == [0, 1, 2, 3]
    assert shown_question(browser) == q(0) and browser.current["index"] == 0
    assert "<b>1</b> of 4" in browser.counter.value
    assert browser.prev_button.disabled and not browser.next_button.disabled

    browser.next_button.click()
    assert browser.position == 1 and shown_question(browser) == q(1)
    assert browser.slider.value == 1 and "<b>2</b> of 4" in browser.counter.value
    browser.next()
    browser.next()
    browser.next()  # stays on the last
    assert browser.position == 3 and shown_question(browser) == q(3) and browser.next_button.disabled
    browser.prev_button.click()
    assert shown_question(browser) == q(2)

    browser.slider.value = 0  # dragging the slider
    assert browser.position == 0 and shown_question(browser) == q(0)
    browser.position = 3
    assert browser.current["index"] == 3
    assert browser.go_to_index(1) and shown_question(browser) == q(1)


def test_stage_columns_verdicts_and_diff(records):
    browser = PredictionBrowser(records)
    browser.go_to(3)
    base, a, b = (browser.stage_html[s].value for s in STAGES)
    assert "&#10007;" in base and "&#10003;" in a and "&#10007;" in b  # ✗ ✓ ✗
    assert "<mark" in base and "<mark" not in a  # a repeats the reference word for word
    assert len(browser.stage_box.children) == 3
    assert "Count them: 5." in browser.reference_html.value


def test_highlight_diff_marks_words_not_in_reference():
    out = highlight_diff("The answer is 41.\nDone <b>", "The answer is 42.")
    assert re.findall(r"<mark[^>]*>(.*?)</mark>", out) == ["41.", "Done", "&lt;b&gt;"]
    assert "\n" in out and "<b>" not in out
    assert "<mark" not in highlight_diff("the ANSWER is 42", "The answer is 42.")  # case, punctuation


# --------------------------------------------------------------------------- filters

def test_filters_by_verdict_type_and_disagreement(records):
    browser = PredictionBrowser(records)
    browser.next()  # on sample 1
    assert browser.set_filter("incorrect", stage="base") == [0, 2, 3]
    assert shown_question(browser) == q(0)  # sample 1 is filtered out: first match shown
    assert "(filtered from 4)" in browser.counter.value and "<b>1</b> of 3" in browser.counter.value
    browser.next()
    assert shown_question(browser) == q(2)
    assert browser.set_filter("correct", stage="b") == [0, 1, 2]
    assert shown_question(browser) == q(2)  # the shown sample passes: it stays
    assert browser.set_filter("disagree") == [0, 2, 3]  # sample 1: every stage correct
    assert browser.set_filter("all", question_type="lookup") == [2]
    assert browser.set_filter("correct", question_type="lookup") == [2]  # by the stage chosen before (b)
    assert browser.set_filter() == [0, 1, 2, 3]

    # the same through the widgets
    browser.stage_dropdown.value = "a"
    browser.filter_dropdown.value = "incorrect"
    assert browser.filtered == [2] and shown_question(browser) == q(2)
    assert not browser.stage_dropdown.disabled
    browser.filter_dropdown.value = "all"
    browser.type_dropdown.value = "comparison"
    assert browser.filtered == [1] and shown_question(browser) == q(1)
    browser.type_dropdown.value = ""
    assert browser.filtered == [0, 1, 2, 3]

    with pytest.raises(ValueError):
        browser.set_filter("wrong")
    with pytest.raises(ValueError):
        browser.set_filter("correct", stage="nope")


def test_empty_filter_result(tmp_path):
    records = load_records(write_predictions(tmp_path / "pred"))
    browser = PredictionBrowser(records)
    browser.set_filter("correct", stage="base", question_type="color_count")
    assert browser.filtered == [] and browser.current is None
    assert "No sample matches" in browser.question_html.value
    assert browser.next_button.disabled and browser.prev_button.disabled
    browser.next()
    browser.prev()
    assert "<b>0</b> of 0" in browser.counter.value


# --------------------------------------------------------------------------- verdicts from evaluate.py

def _fake_evaluate(monkeypatch, score):
    import tableqa_helpers

    module = types.ModuleType("tableqa_helpers.evaluate")
    module.score = score
    monkeypatch.setitem(sys.modules, "tableqa_helpers.evaluate", module)
    monkeypatch.setattr(tableqa_helpers, "evaluate", module, raising=False)


def test_missing_verdicts_are_scored_lazily(tmp_path, monkeypatch):
    calls = []

    def score(prediction, reference, final_answer=None):
        calls.append(prediction)
        return {"exact_match": 0.0, "numeric_match": 0.0, "f1": 0.0, "rouge_l": 0.0,
                "correct": final_answer is not None and prediction.endswith(final_answer)}

    _fake_evaluate(monkeypatch, score)
    records = load_records(write_predictions(tmp_path / "pred", with_correct=False))
    assert "correct" not in records[0]["stages"]["a"]
    browser = PredictionBrowser(records)
    assert 0 < len(calls) <= 3  # only the shown sample's stages
    assert "&#10003;" in browser.stage_html["a"].value
    assert browser.set_filter("incorrect", stage="b") == [3]
    assert "correct" not in records[0]["stages"]["a"]  # the caller's records are not modified


def test_unavailable_evaluate_shows_question_marks(tmp_path, monkeypatch):
    def score(*args, **kwargs):
        raise RuntimeError("evaluate.py not written yet")

    _fake_evaluate(monkeypatch, score)
    monkeypatch.setattr(tw, "_score_warned", False)
    records = load_records(write_predictions(tmp_path / "pred", with_correct=False))
    with pytest.warns(UserWarning, match="could not score"):
        browser = PredictionBrowser(records)
    assert 'title="no verdict"' in browser.stage_html["b"].value
    assert browser.set_filter("correct", stage="b") == []


# --------------------------------------------------------------------------- images

def test_works_without_images(tmp_path):
    browser = PredictionBrowser(load_records(write_predictions(tmp_path / "pred")))
    assert browser.image.layout.display == "none" and "no table image" in browser.image_note.value
    browser.next()
    assert shown_question(browser) == q(1)


def test_thumbnail_full_resolution_and_image_for(records):
    big = {i: _image(i, size=(1200, 600)) for i in SAMPLES}
    seen = []
    browser = PredictionBrowser(records, image_for=lambda r: seen.append(r["index"]) or big[r["index"]], thumb_px=300)
    assert seen == [0]
    assert Image.open(io.BytesIO(browser.image.value)).size == (300, 150)
    browser.full_toggle.value = True
    assert Image.open(io.BytesIO(browser.image.value)).size == (1200, 600)
    assert browser.image.layout.max_width is None
    browser.full_toggle.value = False
    assert Image.open(io.BytesIO(browser.image.value)).size == (300, 150)


def test_notebook_display_protocol(records):
    browser = PredictionBrowser(records)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "tableqa-browser" in browser.widget._dom_classes


# --------------------------------------------------------------------------- static HTML

def test_export_html_is_self_contained_and_escaped(tmp_path, records):
    out = tmp_path / "site" / "browser.html"
    out.parent.mkdir()
    out.write_text("old")
    assert export_html(records, out, max_image_px=32) == out
    page = out.read_text(encoding="utf-8")
    for index in SAMPLES:
        assert html.escape(q(index)) in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;|im_end|&gt;" in page and "<|im_end|>" not in page
    assert "<b>blue</b>" not in page
    images = re.findall(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(SAMPLES)
    assert Image.open(io.BytesIO(base64.b64decode(images[0][1]))).size == (32, 16)  # capped
    assert page.count("<script>") == 1  # the page's own navigation script only
    assert 'id="tqa-next"' in page and 'id="tqa-filter"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched
    verdicts = [json.loads(html.unescape(v)) for v in re.findall(r'data-verdicts="([^"]*)"', page)]
    assert verdicts[0] == {"base": False, "a": True, "b": True}
    assert [p.name for p in out.parent.iterdir()] == ["browser.html"]  # no temporary file left


def test_export_html_without_images(tmp_path):
    records = load_records(write_predictions(tmp_path / "pred"))
    page = export_html(records, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "data:image" not in page and page.count("no table image") == len(SAMPLES)
