"""Fabricated predictions for the browser tests: tiny table images and three stages' JSONL files.

Used by `browser_demo.ipynb` (served by Voila in tests/test_browser.py) and importable by tests.
No model and no network: every row is written here.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

STAGES = ("base", "a", "b")

# (table rows, question, reference, final answer, question type, {stage: (prediction, correct)})
_TABLE = [["City", "Population", "Area km2"], ["Oslo", "709,000", "454"],
          ["Bergen", "286,000", "465"], ["Trondheim", "212,000", "342"]]

SAMPLES = [
    dict(question="What is the population of Oslo?",
         reference="Find the row for Oslo. Its Population cell reads 709,000. Final answer: 709,000",
         final_answer="709,000", question_type="lookup",
         stages={"base": ("The population of Oslo is 286,000. Final answer: 286,000", False),
                 "a": ("Find the row for Oslo. Its Population cell reads 709,000. Final answer: 709,000", True),
                 "b": ("Oslo row: Population 709,000. Final answer: 709,000", True)}),
    dict(question="Which city has the largest area?",
         reference="Compare the Area column: 454, 465, 342. The largest is 465 (Bergen). Final answer: Bergen",
         final_answer="Bergen", question_type="comparison",
         stages={"base": ("The largest city is Oslo. Final answer: Oslo", False),
                 "a": ("Compare the Area column: 454, 465, 342. The largest is 465 (Bergen). "
                       "Final answer: Bergen", True),
                 "b": ("Areas are 454, 465 and 342, so Bergen. Final answer: Bergen", True)}),
    dict(question="What is the total population of the three cities?",
         reference="709,000 + 286,000 + 212,000 = 1,207,000. Final answer: 1,207,000",
         final_answer="1,207,000", question_type="aggregation",
         stages={"base": ("709,000 + 286,000 + 212,000 = 1,107,000. Final answer: 1,107,000", False),
                 "a": ("709,000 + 286,000 + 212,000 = 1,207,000. Final answer: 1,207,000", True),
                 "b": ("709,000 + 286,000 = 995,000. Final answer: 995,000", False)}),
    dict(question="Does the table contain <script>alert('x')</script> or <|im_end|> tokens?",
         reference="No cell contains markup; the answer is no. Final answer: no",
         final_answer="no", question_type="lookup",
         stages={"base": ("<|im_end|> yes <b>bold</b>. Final answer: yes", False),
                 "a": ("No cell contains markup; the answer is no. Final answer: no", True),
                 "b": ("No markup anywhere. Final answer: no", True)}),
    dict(question="How many cities have an area above 400 km2?",
         reference="Oslo (454) and Bergen (465) are above 400; Trondheim (342) is not. Final answer: 2",
         final_answer="2", question_type="aggregation",
         stages={"base": ("Two cities. Final answer: 2", True),
                 "a": ("Oslo (454) and Bergen (465) are above 400. Final answer: 2", True),
                 "b": ("Oslo (454) and Bergen (465) are above 400. Final answer: 2", True)}),
    dict(question="Which city has the smallest population?",
         reference="The populations are 709,000, 286,000 and 212,000; the smallest is Trondheim. "
                   "Final answer: Trondheim",
         final_answer="Trondheim", question_type="comparison",
         stages={"base": ("Final answer: Bergen", False),
                 "a": ("The smallest population is Bergen. Final answer: Bergen", False),
                 "b": ("The populations are 709,000, 286,000 and 212,000; the smallest is Trondheim. "
                       "Final answer: Trondheim", True)}),
]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable default font (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def table_image(rows: list[list[str]], title: str, width: int = 480, row_h: int = 34):
    """A small rendered table: a title line, a header row on grey, a grid."""
    font, bold = _font(16), _font(18)
    height = row_h * (len(rows) + 1) + 10
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="#1f2328", font=bold)
    col_w = (width - 20) // len(rows[0])
    for r, row in enumerate(rows):
        y = row_h * (r + 1)
        if r == 0:
            draw.rectangle([10, y, width - 10, y + row_h], fill="#dbe4f0")
        for c, cell in enumerate(row):
            x = 10 + c * col_w
            draw.rectangle([x, y, x + col_w, y + row_h], outline="#555")
            draw.text((x + 8, y + 8), cell, fill="#111", font=font)
    return img


def make_demo(folder: str | Path, n: int | None = None) -> tuple[dict[str, Path], list[dict]]:
    """Write `{stage}.jsonl` predictions under `folder`; return ({stage: path}, dataset rows with images)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = SAMPLES[: n or len(SAMPLES)]
    dataset = []
    for i, s in enumerate(samples):
        dataset.append({"table_id": f"demo-{i}", "image": table_image(_TABLE, f"Table demo-{i}: Norwegian cities"),
                        "question": s["question"], "answer": s["reference"],
                        "final_answer": s["final_answer"], "question_type": s["question_type"]})
    paths = {}
    for stage in STAGES:
        path = folder / f"{stage}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i, s in enumerate(samples):
                prediction, correct = s["stages"][stage]
                fh.write(json.dumps({"index": i, "table_id": f"demo-{i}", "question": s["question"],
                                     "reference": s["reference"], "prediction": prediction, "stage": stage,
                                     "tokens": len(prediction.split()), "seconds": 0.1 * (i + 1),
                                     "final_answer": s["final_answer"], "question_type": s["question_type"],
                                     "correct": correct}) + "\n")
        paths[stage] = path
    return paths, dataset
