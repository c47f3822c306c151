"""HTML pieces of the prediction browser: the word diff, question, reference and stage cells,
and the filters (shared by the widget and the static page).
"""
from __future__ import annotations

import difflib
import html
import re
from typing import Any, Iterable

from .records import _MARK_STYLE, _VERDICT_HTML, _disagree, _verdict


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
