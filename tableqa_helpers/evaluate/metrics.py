"""Deterministic answer metrics and the stage comparison.

These metrics are a cheap, reproducible PROXY for the evaluation of the Visual-TableQA paper,
not a reproduction of it. The paper grades each answer with an LLM jury: 5 LLM judges each
give a binary verdict ("the answer is logically consistent with, and has the same meaning as,
the reference"), the verdict is the majority vote, and a designated judge breaks ties. That
protocol is available, against endpoints you configure, in `tableqa_helpers.evaluate.jury`.

Here, instead:

* `extract_final_answer` pulls the conclusion out of a step-by-step justification
  (``\\boxed{X}``; "final answer is X" / "Final answer: X" / "the answer is X" /
  "**Answer:** X"; else a "Therefore/Thus/Hence/So, ..." conclusion; else the last sentence).
  A conclusion clause "A is B" is reduced to its answer part: B, or A when B is a description
  ("North is the region with the highest sales" -> "North"); "Yes, ..." -> "Yes";
  parenthetical remarks are dropped.
* `correct` = exact match of the normalised final answers OR numeric match of the numbers in
  them. Numbers written as integers on both sides must be equal; otherwise they must agree
  within ``rel_tol`` (1 % by default), and "12.5" also matches "12.5 million" / "$12.5M" and
  "3.4%" also matches "0.034". Every number of one answer must match one of the other: a
  hedged "1,250 or 1,350" fails.
* `f1` (SQuAD-style token F1) and `rouge_l` (token LCS F-measure, beta = 1) compare the WHOLE
  answer with the whole reference, so they also reward the justification.

A fluent answer with a wrong number fails `correct`; a right answer phrased in a way the
heuristics do not recognise fails too, so read `correct` as a lower bound of the jury's verdict
and check a sample with the prediction browser (`browse`) or the jury.
"""
from __future__ import annotations

from collections import Counter

from .answers import _clean_answer, _tokens, extract_final_answer, normalize
from .numbers import _numbers_agree


STAGE_ORDER = ("base", "a", "merged", "b")  # rows of the comparison, in this order, when present
METRICS = ("correct", "exact_match", "numeric_match", "f1", "rouge_l")  # averaged per stage
def _em(pred_final: str, ref_final: str) -> bool:
    p, r = normalize(pred_final), normalize(ref_final)
    return bool(r) and p == r


def exact_match(pred: str, ref: str) -> bool:
    """Normalised final answers of `pred` and `ref` are equal (False when `ref` has none)."""
    return _em(extract_final_answer(pred), extract_final_answer(ref))


def numeric_match(pred: str, ref: str, rel_tol: float = 0.01) -> bool:
    """The numbers in the final answers of `pred` and `ref` agree.

    Every number of each answer must match a number of the other: exactly when both are written
    as integers, else within `rel_tol` (relative). False when the reference (or prediction) final
    answer holds no number.
    """
    return _numbers_agree(extract_final_answer(pred), extract_final_answer(ref), rel_tol)


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style F1 over normalised tokens of the whole texts (1.0 when both are empty)."""
    p, r = _tokens(pred), _tokens(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure (beta = 1) over normalised tokens: 2PR/(P+R), P = LCS/len(pred), R = LCS/len(ref)."""
    p, r = _tokens(pred), _tokens(ref)
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, reference: str, final_answer: str | None = None,
          rel_tol: float = 0.01) -> dict:
    """All metrics of one answer: {exact_match, numeric_match, f1, rouge_l, correct}.

    exact_match / numeric_match / correct compare the prediction's extracted final answer with
    `final_answer` (the recorded gold answer of synthetic data) when given, else with the final
    answer extracted from `reference`; f1 / rouge_l compare the whole texts.
    """
    prediction, reference = prediction or "", reference or ""
    pred_final = extract_final_answer(prediction)
    has_gold = final_answer is not None and str(final_answer).strip() != ""
    ref_final = _clean_answer(str(final_answer)) if has_gold else extract_final_answer(reference)
    em = _em(pred_final, ref_final)
    num = _numbers_agree(pred_final, ref_final, rel_tol)
    return {"exact_match": em, "numeric_match": num, "f1": token_f1(prediction, reference),
            "rouge_l": rouge_l(prediction, reference), "correct": em or num}


# ----------------------------------------------------------------------------- files
