"""Deterministic answer metrics and the stage comparison.

These metrics are a cheap, reproducible PROXY for the evaluation of the Visual-TableQA paper,
not a reproduction of it. The paper grades each answer with an LLM jury: 5 LLM judges each
give a binary verdict ("the answer is logically consistent with, and has the same meaning as,
the reference"), the verdict is the majority vote, and a designated judge breaks ties. That
protocol is available, against endpoints you configure, in `tableqa_helpers.jury`.

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
and check a sample with the prediction browser (`widgets.py`) or the jury.
"""
from __future__ import annotations

import csv
import io as _stdio
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Mapping

from .io import atomic_write_text

log = logging.getLogger(__name__)

STAGE_ORDER = ("base", "a", "merged", "b")  # rows of the comparison, in this order, when present
METRICS = ("correct", "exact_match", "numeric_match", "f1", "rouge_l")  # averaged per stage

# ----------------------------------------------------------------------------- number words
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine".split())}
_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: (i + 2) * 10 for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_NUMBER_WORDS = sorted([*_UNITS, *_TEENS, *_TENS, "hundred", *_SCALES], key=len, reverse=True)
_NW = "(?:" + "|".join(_NUMBER_WORDS) + ")"
_NUMBER_WORD_RUN = re.compile(rf"\b{_NW}(?:(?:[ \t]+|-|[ \t]+and[ \t]+){_NW})*\b", re.IGNORECASE)
# a lone "one" after these words is a pronoun ("the one with...") and not a number
_PRONOUN_ONE_BEFORE = {"the", "this", "that", "which", "each", "every", "any", "no"}


def _word_kind(w: str) -> str:
    if w in _UNITS:
        return "unit"
    if w in _TEENS:
        return "teen"
    if w in _TENS:
        return "tens"
    if w == "hundred":
        return "hundred"
    return "scale"


def _parse_word_run(words: list[str]) -> list[tuple[int, int, int]]:
    """Split a run of number words into numbers: [(value, first_word, last_word_exclusive)].

    A small grammar keeps "three four" or "three and four" as two numbers, and "two hundred
    and fifty", "one thousand two hundred fifty", "twenty-one" as one.
    """
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(words)
    while i < n:
        if words[i] == "and":
            i += 1
            continue
        start, total, current, last, scale_cap = i, 0, 0, None, math.inf
        while i < n:
            w = words[i]
            if w == "and":
                nxt = words[i + 1] if i + 1 < n else None
                if last in ("hundred", "scale") and nxt is not None and _word_kind(nxt) in ("unit", "teen", "tens"):
                    i += 1
                    continue
                break
            kind = _word_kind(w)
            if kind == "unit":
                ok = last in (None, "hundred", "scale") or (last == "tens" and w != "zero")
                ok = ok and not (w == "zero" and last is not None)
                if not ok:
                    break
                current += _UNITS[w]
            elif kind in ("teen", "tens"):
                if last not in (None, "hundred", "scale"):
                    break
                current += _TEENS.get(w) or _TENS[w]
            elif kind == "hundred":
                if last not in ("unit", "teen") or current >= 100 or current == 0:
                    break
                current *= 100
            else:
                value = _SCALES[w]
                if last not in ("unit", "teen", "tens", "hundred") or value >= scale_cap or current == 0:
                    break
                total += current * value
                current, scale_cap = 0, value
            last = kind
            i += 1
        if i == start:  # a word that cannot start a number ("hundred", "million" alone)
            i += 1
            continue
        out.append((total + current, start, i))
    return out


def _words_to_digits(text: str, keep_pronoun_one: bool = False) -> str:
    """Replace number words by digits: "twenty-one" -> "21", "two hundred and fifty" -> "250"."""

    def repl(m: re.Match) -> str:
        run = m.group(0)
        parts = re.split(r"([ \t]+and[ \t]+|[ \t]+|-)", run)
        words = [p.lower() for p in parts[0::2]]
        seps = parts[1::2]
        tokens: list[str] = []  # words with "and" separators made explicit
        for k, w in enumerate(words):
            if k and seps[k - 1].strip().lower() == "and":
                tokens.append("and")
            tokens.append(w)
        pieces = []
        for value, a, b in _parse_word_run(tokens):
            if keep_pronoun_one and b - a == 1 and tokens[a] == "one":
                before = text[: m.start()].split()
                if a == 0 and before and before[-1].lower() in _PRONOUN_ONE_BEFORE:
                    pieces.append((a, b, "one"))
                    continue
            pieces.append((a, b, str(value)))
        # rebuild: numbers, with the original words kept between them ("3 and 4")
        out, pos = [], 0
        for a, b, s in pieces:
            if a > pos:
                out.append(" ".join(tokens[pos:a]))
            out.append(s)
            pos = b
        if pos < len(tokens):
            out.append(" ".join(tokens[pos:]))
        return " ".join(x for x in out if x)

    return _NUMBER_WORD_RUN.sub(repl, text)


# ----------------------------------------------------------------------------- numbers
_CURRENCY = "$€£¥₹"
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9.])"
    r"(?P<sign>[-+])?"
    rf"(?P<cur>[{_CURRENCY}])?"
    r"(?P<sign2>(?<=[" + _CURRENCY + r"])[-+])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:(?P<pct>\s?%|\s?(?i:percent|per cent)\b)"
    r"|\s?(?P<word>(?i:thousand|million|billion|trillion|mn|bn))\b"
    r"|(?P<suffix>[kKMB])(?![A-Za-z])"
    r"|(?P<csuffix>[mb])(?![A-Za-z]))?"
)
_WORD_SCALE = {"thousand": 10**3, "million": 10**6, "mn": 10**6, "billion": 10**9, "bn": 10**9,
               "trillion": 10**12, "k": 10**3, "m": 10**6, "b": 10**9}


@dataclass(frozen=True)
class _Num:
    value: float  # the value as written, scaled by any magnitude ("1.2 million" -> 1.2e6)
    alts: tuple  # values it may also mean: the unscaled mantissa, a percent as a fraction
    is_int: bool  # written as a plain integer (no decimals, magnitude or percent)


def _clean_for_numbers(text: str) -> str:
    text = _strip_markdown(text or "").replace("\u2212", "-").replace("\u00a0", " ").replace("\u202f", " ")
    return _words_to_digits(text, keep_pronoun_one=True)


def _scan_numbers(text: str) -> list[_Num]:
    out = []
    for m in _NUMBER.finditer(_clean_for_numbers(text)):
        raw = m.group("num").replace(",", "")
        try:
            mant = Decimal(raw)
        except InvalidOperation:  # pragma: no cover - the regex only matches numbers
            continue
        if m.group("sign") == "-" or m.group("sign2") == "-":
            mant = -mant
        scale = 1
        word = (m.group("word") or "").lower()
        if word:
            scale = _WORD_SCALE[word]
        elif m.group("suffix"):
            scale = _WORD_SCALE[m.group("suffix").lower()]
        elif m.group("csuffix") and m.group("cur"):  # "$5m": million; "5m" alone: metres
            scale = _WORD_SCALE[m.group("csuffix")]
        value = float(mant * scale)
        alts = {value, float(mant)}
        if m.group("pct"):
            alts.add(float(mant / 100))
        is_int = scale == 1 and not m.group("pct") and "." not in raw
        out.append(_Num(value, tuple(sorted(alts)), is_int))
    return out


def parse_numbers(text: str) -> list[float]:
    """Every number in `text`, in order, as floats.

    Handles thousands separators ("1,250"), decimals, negatives ("-7"), currency ("$12.5M" ->
    12500000.0), magnitudes ("1.2 million", "5k", "3 bn"), percents ("3.4%" -> 3.4, the value
    as written), units ("12.5 kg" -> 12.5) and number words ("twenty-one" -> 21.0; a pronoun
    "the one" is not a number). Digits glued after letters ("A1", "Q3") and ranges ("2019-2020"
    -> 2019, 2020) are not negatives.
    """
    return [n.value for n in _scan_numbers(text)]


def _num_eq(a: _Num, b: _Num, rel_tol: float) -> bool:
    if a.is_int and b.is_int:
        return a.value == b.value
    return any(math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-12) for x in a.alts for y in b.alts)


def _numbers_agree(pred: str, ref: str, rel_tol: float) -> bool:
    r, p = _scan_numbers(ref), _scan_numbers(pred)
    if not r or not p:
        return False
    return all(any(_num_eq(x, y, rel_tol) for y in p) for x in r) and \
        all(any(_num_eq(y, x, rel_tol) for x in r) for y in p)


# ----------------------------------------------------------------------------- normalisation
_YES = {"yes", "y", "true", "correct", "right", "affirmative", "indeed", "yeah", "yep"}
_NO = {"no", "n", "false", "incorrect", "wrong", "negative", "nope", "not"}
_ARTICLES = {"a", "an", "the"}


def _strip_markdown(text: str) -> str:
    text = re.sub(r"\\boxed\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"(?m)^[ \t]*(?:#{1,6}|>|[-*+](?=\s))[ \t]*", "", text)
    text = re.sub(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])", r"\1", text)  # *italic*
    return text


def normalize(text: str) -> str:
    """Canonical form for comparing answers.

    Lowercase; markdown, punctuation and articles removed; whitespace collapsed; number words
    to digits ("three" -> "3", "twenty-one" -> "21"); thousands separators removed ("1,250" ->
    "1250"); trailing decimal zeros dropped ("12.50" -> "12.5"); currency symbols dropped but
    the number kept ("$12.5M" -> "12.5m"); "percent" -> "%" ("3.4 percent" -> "3.4%"); a
    negative sign kept ("-7"); a whole answer that is a yes/no synonym ("True", "Correct.",
    "Nope") -> "yes" / "no".
    """
    t = _strip_markdown(text or "")
    t = t.replace("\u2212", "-").replace("\u00a0", " ").replace("\u202f", " ").lower()
    t = _words_to_digits(t)
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)
    t = re.sub(r"(?<=\d)\s*(?:percent|per cent)\b", "%", t)
    t = re.sub(rf"[{_CURRENCY}](?=[\d.+-])", "", t)  # "-$7" -> "-7"
    t = re.sub(rf"[{_CURRENCY}]", " ", t)
    t = re.sub(r"(?<![^\s-])\.(?=\d)", "0.", t)  # ".5" -> "0.5"
    t = re.sub(r"[^\w\s.%\-]|_", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # a dot survives only inside a number
    t = re.sub(r"-(?!\d)|(?<=\S)-", " ", t)  # a hyphen survives only as a leading minus sign
    t = re.sub(r"(?<=\d)\s+%", "%", t)
    t = re.sub(r"(?<!\d)%", " ", t)
    t = re.sub(r"\b(\d+)\.(\d*?)0+\b", lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), t)
    tokens = [w for w in t.split() if w not in _ARTICLES]
    out = " ".join(tokens)
    if out in _YES:
        return "yes"
    if out in _NO:
        return "no"
    return out


def _tokens(text: str) -> list[str]:
    return normalize(text).split()


# ----------------------------------------------------------------------------- extraction
_SENT_END = re.compile(r"[.!?](?=\s|$)|\n")
_EXPLICIT = [
    re.compile(r"\bfinal\s+answer\b\s*(?:is\s*[:=]?|[:=\-]|would\s+be|will\s+be)?", re.IGNORECASE),
    re.compile(r"\banswer\s*(?:is\b\s*[:=]?|[:=])", re.IGNORECASE),
]
_CONNECTIVE = re.compile(
    r"(?:\b(?:therefore|thus|hence|consequently|in conclusion|in summary|to conclude|overall)\b"
    r"|(?:^|(?<=[.!?]\s)|(?<=\n))\s*so\b)\s*,?\s*",
    re.IGNORECASE)
_LEAD_IN = re.compile(
    r"^(?:(?:we|i)\s+(?:can\s+)?(?:see|find|conclude|get|have|know|obtain)(?:\s+that)?"
    r"|it\s+(?:follows|is\s+clear|can\s+be\s+seen)\s+that|this\s+(?:means|shows|indicates)\s+that"
    r"|that)\s+", re.IGNORECASE)
_COPULA = re.compile(
    r"\b(?:is|are|was|were|be|equals?|gives|yields|totals|makes|has|have|had|"
    r"comes\s+to|amounts\s+to|results\s+in)\b", re.IGNORECASE)
_SUBORDINATE = re.compile(r",?\s+(?:which|because|since|as\s+(?:it|this|shown|seen)|making)\b|,\s+as\b|;",
                          re.IGNORECASE)
_NOT_A_SUBJECT = {"the", "this", "that", "these", "those", "it", "there", "a", "an", "its", "their",
                  "which", "what", "in", "on", "at", "for", "from", "by", "with", "of", "after",
                  "when", "if", "since", "because", "as", "each", "every", "all", "both", "we", "i"}


def _cut_sentence(rest: str) -> str:
    rest = rest.lstrip()
    m = _SENT_END.search(rest)
    return rest[: m.start()] if m else rest


def _clean_answer(ans: str) -> str:
    ans = re.sub(r"\s+", " ", ans).strip()
    inner = re.sub(r"\s*\([^()]*\)", "", ans).strip()  # drop "(sum of 500 and 750)" remarks
    if inner:
        ans = inner
    ans = ans.strip(" \t\"'“”‘’*_")
    ans = re.sub(r"^[:\s]+", "", ans)
    ans = re.sub(r"[\s.,;:!?\"'“”‘’]+$", "", ans)
    return ans


def _conclusion(clause: str) -> str:
    """Reduce a conclusion clause to its answer part (see the module docstring)."""
    clause = _clean_answer(clause)
    m = re.match(r"(yes|no)\b\s*(?:[,.;:!]|$)", clause, re.IGNORECASE)
    if m:
        return m.group(1)
    clause = _LEAD_IN.sub("", clause)
    copulas = list(_COPULA.finditer(clause))
    if not copulas:
        return clause
    sub = _SUBORDINATE.search(clause, copulas[0].end())
    if sub:
        clause = clause[: sub.start()]
        copulas = [c for c in copulas if c.end() <= sub.start()]
    a = clause[: copulas[0].start()].strip(" ,")
    b = clause[copulas[-1].end():].strip(" ,")
    a_words, b_words = a.split(), b.split()
    b_is_description = bool(b_words) and b_words[0].lower() in ("the", "a", "an", "this", "one")
    if a_words and len(a_words) <= 5 and b_is_description and a_words[0].lower() not in _NOT_A_SUBJECT \
            and not a_words[0].lower().endswith("ing"):
        return _clean_answer(a)
    return _clean_answer(b) if b else clause


def extract_final_answer(text: str) -> str:
    """The final answer of a step-by-step justification (see the module docstring for the rules).

    >>> extract_final_answer("500 + 750 = 1,250. Therefore, the final answer is **1,250**.")
    '1,250'
    """
    if not text or not text.strip():
        return ""
    t = _strip_markdown(text) if "\\boxed" not in text else text
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", t)
    if boxed:
        return _clean_answer(boxed[-1])
    best = None
    for pat in _EXPLICIT:
        for m in pat.finditer(t):
            if best is None or m.end() > best.end():
                best = m
    conn = list(_CONNECTIVE.finditer(t))
    if best is not None:
        ans = _cut_sentence(t[best.end():])
        ans_end = best.end() + len(t[best.end():]) - len(t[best.end():].lstrip()) + len(ans)
        # a conclusion after the explicit answer's sentence wins ("Answer:\nStep 1 ... Therefore, X")
        later = [m for m in conn if m.start() > ans_end and _cut_sentence(t[m.end():]).strip()]
        if ans.strip() and not later:
            return _conclusion(ans)
    for m in reversed(conn):
        clause = _cut_sentence(t[m.end():])
        if clause.strip():
            return _conclusion(clause)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", t.strip()) if _clean_answer(s)]
    return _conclusion(sentences[-1]) if sentences else ""


# ----------------------------------------------------------------------------- metrics
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
def read_predictions(path: str | Path) -> list[dict]:
    """Rows of a predictions JSONL (CONTRIBUTING.md format). A torn last line is ignored; when an
    `index` appears twice (a resumed run), the last row wins."""
    from .io import read_jsonl

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
