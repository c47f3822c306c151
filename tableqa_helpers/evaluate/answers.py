"""Final-answer extraction from a step-by-step justification, and answer normalisation.

`extract_final_answer` pulls the conclusion out of a step-by-step justification
(``\\boxed{X}``; "final answer is X" / "Final answer: X" / "the answer is X" /
"**Answer:** X"; else a "Therefore/Thus/Hence/So, ..." conclusion; else the last sentence).
A conclusion clause "A is B" is reduced to its answer part: B, or A when B is a description
("North is the region with the highest sales" -> "North"); "Yes, ..." -> "Yes";
parenthetical remarks are dropped.
"""
from __future__ import annotations

import re

from .numbers import _CURRENCY, _strip_markdown, _words_to_digits


_YES = {"yes", "y", "true", "correct", "right", "affirmative", "indeed", "yeah", "yep"}
_NO = {"no", "n", "false", "incorrect", "wrong", "negative", "nope", "not"}
_ARTICLES = {"a", "an", "the"}


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
    t = t.replace("_", " ")  # before the number words: "_one" is the word "one" once "_" goes
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
