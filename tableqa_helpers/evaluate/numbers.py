"""Numbers in answers: number words ("twelve thousand"), units, scales and percentages, and
whether the numbers of two answers agree within a relative tolerance.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


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


def _strip_markdown(text: str) -> str:
    text = re.sub(r"\\boxed\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"(?m)^[ \t]*(?:#{1,6}|>|[-*+](?=\s))[ \t]*", "", text)
    text = re.sub(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])", r"\1", text)  # *italic*
    return text


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
