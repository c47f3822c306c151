"""What a mini base can read, kind of reading by kind: the probe behind docs/mini-base.md's
"tenth day".

`reading_accuracy` (one named cell per table) says how often the base answers a lookup; this
probe says why not more often. It asks each held-out table the pretraining's own instructions
(`reading_turns`' wording) and scores the transcriptions cell by cell:

- in order: the whole table, a column named by its header, the title, the key column;
- by name: one cell named by its row and column, and the row named by its key.

A base that reads in order but not by name can see the glyphs and cannot find a row from its
name, which is what a lookup question needs. `row_chance` is the share a row picked at random
would score (its cells right if it is the named row), to set the named rows beside.
"""
from __future__ import annotations

import random

import torch
from PIL import ImageOps

from .mini import _cell_turn, generate_answer, mini_table
from .render import render_table, title_text
from .tables import cell_texts, header_text

KINDS = ("table_cells", "column_cells", "title", "keys", "named_cell", "row_cells")


def _cells(text: str, sep: str) -> list[str]:
    return [part.strip() for part in text.split(sep)]


@torch.no_grad()
def reading_profile(model, processor, n: int = 24, seed: int = 10 ** 6, device="cpu") -> dict:
    """Share of cells (or answers) read right, per kind in `KINDS`, over `n` held-out tables
    (the same tables as `reading_accuracy`'s for the same `seed`), and `row_chance`."""
    rng = random.Random(f"mini-probe/{seed}")
    right = {k: 0 for k in KINDS}
    total = {k: 0 for k in KINDS}
    chance = 0.0
    model.eval()

    def ask(image, text, tokens):
        return generate_answer(model, processor, image, text, device, max_new_tokens=tokens)

    def score(kind, ok):
        right[kind] += bool(ok)
        total[kind] += 1

    table_rng = random.Random(f"mini-eval/{seed}")
    for i in range(n):
        table = mini_table(table_rng, seed + i)
        cell_ask, cell_want = _cell_turn(table, table_rng)  # `reading_accuracy`'s cell of this table
        image = ImageOps.grayscale(render_table(table)).convert("RGB")
        header, body, totals = cell_texts(table)
        got = {line.split(" | ")[0]: _cells(line, "|")
               for line in ask(image, "Transcribe the table, one row per line.", 200).split("\n")}
        for row in body:
            for j, cell in enumerate(row[1:], 1):
                line = got.get(row[0], [])
                score("table_cells", len(line) > j and line[j] == cell)
        c = rng.randrange(len(table["columns"]))
        said = ask(image, f"Transcribe the column {header_text(table, c)}, top to bottom.", 64)
        pairs = dict(p.split(": ", 1) for p in said.split("; ") if ": " in p)
        for row in body:
            score("column_cells", pairs.get(row[0]) == row[c + 1])
        score("title", ask(image, "Transcribe the title.", 32) == title_text(table))
        score("keys", ask(image, f"List the entries of the {table['key_name']} column.", 48)
              == ", ".join(row[0] for row in body))
        score("named_cell", ask(image, cell_ask, 24) == cell_want)
        r = rng.randrange(len(body))
        line = _cells(ask(image, f"Transcribe the row of {body[r][0]}.", 48), "|")
        for j, cell in enumerate(body[r][1:], 1):
            score("row_cells", len(line) > j and line[j] == cell)
        chance += 1 / len(body)
    model.train()
    return {**{k: round(right[k] / max(total[k], 1), 3) for k in KINDS},
            "row_chance": round(chance / n, 3), "tables": n}
