"""Measuring answers: numbers in text (`numbers`), final-answer extraction (`answers`), the
deterministic metrics (`metrics`), scoring files and the stage comparison (`compare`), and the
optional LLM jury (`judges`, `jury`).

The metrics are a cheap, reproducible proxy for the paper's grading, not a reproduction: there
five LLM judges vote (majority; a designated judge breaks a tie); `jury` runs that protocol
against endpoints you configure. See `metrics` for what `correct` means.
"""
from .answers import extract_final_answer, normalize
from .compare import compare_stages, read_predictions, score_file, summarize
from .metrics import METRICS, STAGE_ORDER, exact_match, numeric_match, rouge_l, score, token_f1
from .numbers import parse_numbers

__all__ = ["METRICS", "STAGE_ORDER", "compare_stages", "exact_match", "extract_final_answer",
           "normalize", "numeric_match", "parse_numbers", "read_predictions", "rouge_l", "score",
           "score_file", "summarize", "token_f1"]
