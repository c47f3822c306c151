"""The reading probe (`offline.mini_probe`): it scores what it asks, cell by cell, and tells
reading in order from reading by name."""
from __future__ import annotations

import pytest

from tableqa_helpers.offline import mini_probe
from tableqa_helpers.offline.mini import build_mini_untrained, reading_accuracy
from tableqa_helpers.offline.tables import cell_texts, header_text


class _Reader:
    """Answers the probe's instructions from the table it was drawn for, perfectly, or with the
    named row's cells taken from another row (a base that cannot find a row by its name)."""

    def __init__(self, wrong_rows: bool):
        self.wrong_rows, self.table, self.draw = wrong_rows, None, mini_probe.mini_table

    def table_for(self, rng, index):
        self.table = self.draw(rng, index)
        return self.table

    def answer(self, model, processor, image, ask, device, max_new_tokens):
        t = self.table
        header, body, totals = cell_texts(t)
        keys = [row[0] for row in body]
        if ask.startswith("Transcribe the table"):
            return "\n".join(" | ".join(line) for line in [header] + body)
        if ask.startswith("Transcribe the column "):
            c = [header_text(t, c) for c in range(len(t["columns"]))].index(
                ask.removeprefix("Transcribe the column ").removesuffix(", top to bottom."))
            return "; ".join(f"{row[0]}: {row[c + 1]}" for row in body)
        if ask == "Transcribe the title.":
            return mini_probe.title_text(t)
        if ask.startswith("List the entries"):
            return ", ".join(keys)
        if ask.startswith("Transcribe the cell at row "):
            key, col = ask.removeprefix("Transcribe the cell at row ").removesuffix(".").split(
                ", column ")
            r = keys.index(key)
            r = (r + 1) % len(keys) if self.wrong_rows else r
            return body[r][[header_text(t, c) for c in range(len(t["columns"]))].index(col) + 1]
        if ask.startswith("Transcribe the row of "):
            r = keys.index(ask.removeprefix("Transcribe the row of ").removesuffix("."))
            other = body[(r + 1) % len(keys)] if self.wrong_rows else body[r]
            return " | ".join([body[r][0]] + other[1:])
        raise AssertionError(f"the probe asked something the curriculum never does: {ask!r}")


@pytest.mark.parametrize("wrong_rows", [False, True])
def test_probe_scores_cells_and_tells_in_order_from_by_name(monkeypatch, wrong_rows):
    reader = _Reader(wrong_rows)
    monkeypatch.setattr(mini_probe, "mini_table", reader.table_for)
    monkeypatch.setattr(mini_probe, "generate_answer", reader.answer)
    got = mini_probe.reading_profile(_Model(), None, n=12)
    for kind in ("table_cells", "column_cells", "title", "keys"):
        assert got[kind] == 1.0
    assert 0.2 < got["row_chance"] < 0.34  # 3 to 5 rows a table
    if wrong_rows:  # another row's cells: right only where two rows share a cell's text
        assert got["named_cell"] < 0.2 and got["row_cells"] < 0.2
    else:
        assert got["named_cell"] == 1.0 and got["row_cells"] == 1.0


class _Model:
    def eval(self):
        return self

    def train(self):
        return self


def test_probe_named_cell_is_reading_accuracy_on_the_same_tables(monkeypatch):
    import tableqa_helpers.offline.mini as mini

    model, processor = build_mini_untrained(seed=0)
    asked = []

    def answer(model, processor, image, ask, device, max_new_tokens):
        asked.append(ask)
        return ""

    monkeypatch.setattr(mini, "generate_answer", answer)
    monkeypatch.setattr(mini_probe, "generate_answer", answer)
    reading_accuracy(model, processor, n=3)
    first, asked[:] = list(asked), []
    mini_probe.reading_profile(model, processor, n=3)
    assert len(first) == 3
    assert [a for a in asked if a.startswith("Transcribe the cell at row")] == first


def test_cli_names_a_folder_that_holds_no_checkpoint(tmp_path):
    from tableqa_helpers.cli import main

    with pytest.raises(SystemExit, match="no mini checkpoint there"):
        main(["probe-mini", str(tmp_path / "nothing")])
