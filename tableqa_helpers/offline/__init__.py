"""Everything the `tiny` profile builds offline: the stand-in tokenizer and tiny Qwen2.5-VL
(`standin`), and a synthetic Visual-TableQA: table content (`tables`), drawing (`render`),
questions with computed answers (`questions`), the dataset on disk (`dataset`).

Lowest layer: imports only `tableqa_helpers.io`.
"""
from .dataset import corpus_sentences, make_synthetic_dataset
from .questions import make_question, make_sample
from .render import render_table
from .standin import (CHAT_TEMPLATE, SPECIAL_TOKENS, build_processor, build_tiny_model,
                      build_tokenizer, ensure_standins, qwen25vl_7b_config)
from .tables import COLUMNS, HEADER_COLORS, HIGHLIGHTS, QUESTION_TYPES, SPLITS, format_value, make_table

__all__ = ["CHAT_TEMPLATE", "COLUMNS", "HEADER_COLORS", "HIGHLIGHTS", "QUESTION_TYPES", "SPECIAL_TOKENS",
           "SPLITS", "build_processor", "build_tiny_model", "build_tokenizer", "corpus_sentences",
           "ensure_standins", "format_value", "make_question", "make_sample", "make_synthetic_dataset",
           "make_table", "qwen25vl_7b_config", "render_table"]
