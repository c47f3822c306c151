"""The mini base's pretraining: a deterministic reading curriculum, labels on the answers only,
a checkpoint that loads like the real model; and the table knobs it draws its tables with."""
from __future__ import annotations

import io
import json
import random
import sys

import pytest

from tableqa_helpers.offline.mini import (LINES_ASK, TABLE, LineSet, ReadingCollator, ReadingSet,
                                          mini_table, build_mini_untrained, chat_messages,
                                          reading_turns)
from tableqa_helpers.offline.render import render_table
from tableqa_helpers.offline.tables import make_table


@pytest.fixture(scope="module")
def mini():
    return build_mini_untrained(seed=0)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _freeze(sample: dict):
    if "text" in sample:
        return ("text", sample["text"])
    return ("image", _png(sample["image"]), sample["turns"])


def test_reading_set_is_deterministic():
    a, b = ReadingSet(40, seed=3), ReadingSet(40, seed=3)
    kinds = set()
    for i in (0, 1, 2, 5, 17, 39):
        first = _freeze(a[i])
        assert first == _freeze(b[i]) == _freeze(a[i])  # same (seed, i), same sample, any order
        kinds.add(first[0])
    assert kinds == {"text", "image"}
    assert _freeze(ReadingSet(40, seed=4)[1]) != _freeze(a[1])
    sample = next(a[i] for i in range(40) if "image" in a[i])
    assert 2 <= len(sample["turns"]) <= 6 and all(q and ans for q, ans in sample["turns"])
    assert sample["image"].mode == "RGB" and sample["image"].height >= TABLE["min_height"]
    r, g, bl = sample["image"].split()
    assert r.tobytes() == g.tobytes() == bl.tobytes()  # grayscale page


def test_line_set_draws_strings_of_a_mini_table():
    from tableqa_helpers.offline.tables import cell_texts

    a, b = LineSet(300, seed=3), LineSet(300, seed=3)
    counts = set()
    for i in range(0, 300, 7):
        sample = a[i]
        assert _freeze(sample) == _freeze(b[i])  # (seed, i) fixes the page
        header, body, _ = cell_texts(mini_table(random.Random(f"mini-lines/3/{i}"), i))
        (ask, answer), = sample["turns"]
        lines = answer.split("\n")
        assert ask == LINES_ASK and 1 <= len(lines) <= 3 and all(lines)
        assert set(lines) <= set(header) | {c for row in body for c in row}
        counts.add(len(lines))
        page = sample["image"]
        assert page.width in (224, 280, 336, 392, 448) and page.height in (224, 280, 336)
        assert page.convert("L").getextrema() == (0, 255)  # black ink on white
    assert counts == {1, 2, 3}
    assert _freeze(LineSet(10, seed=4)[1]) != _freeze(a[1])


def test_lines_accuracy_asks_about_held_out_pages(mini, monkeypatch):
    from tableqa_helpers.offline import mini as module

    model, processor = mini
    rng = random.Random("mini-lines-eval/7")
    pages = [module.draw_lines(rng, 7 + i) for i in range(3)]
    answers = iter(["\n".join(pages[0][1]), "wrong", "\n".join(pages[2][1])])
    monkeypatch.setattr(module, "generate_answer", lambda *a, **k: next(answers))
    acc = module.lines_accuracy(model, processor, n=3, seed=7)
    assert acc["line_accuracy"] == pytest.approx(2 / 3)
    assert [want for _, want, _ in acc["examples"]] == ["\n".join(t) for _, t in pages]


def test_reading_turns_transcribe_the_table():
    from tableqa_helpers.offline.tables import cell_texts

    table = make_table(random.Random(0), 0, rows=TABLE["rows"], cols=TABLE["cols"])
    header, body, totals = cell_texts(table)
    kinds = 12 + bool(table["legend"]) + bool(totals) + bool(table["groups"])
    turns = dict(reading_turns(table, random.Random(1), 99))  # every kind once (cells 4 times)
    assert len(reading_turns(table, random.Random(1), 99)) == kinds
    assert turns["Transcribe the header row."] == " | ".join(header)
    whole = turns["Transcribe the table, one row per line."].split("\n")
    assert len(whole) == 1 + len(table["rows"]) + bool(totals)
    assert whole[0].startswith(table["key_name"] + " | ") and whole[0].count(" | ") == len(body[0]) - 1
    assert [line.split(" | ")[0] for line in whole[1:1 + len(body)]] == [r["key"] for r in table["rows"]]
    assert all(line.split(" | ")[1:] == row[1:] for line, row in zip(whole[1:], body))
    assert turns[f"List the entries of the {table['key_name']} column."] == ", ".join(
        row[0] for row in body)
    cells = {ans for q, ans in turns.items() if q.startswith("Transcribe the cell")}
    assert cells and cells <= {cell for row in body for cell in row[1:]}
    assert len(reading_turns(table, random.Random(1), 3)) == 3


def test_names_turns_repeat_the_instruction_names():
    from tableqa_helpers.offline.tables import cell_texts, header_text

    table = make_table(random.Random(0), 0, rows=TABLE["rows"], cols=TABLE["cols"])
    _, body, _ = cell_texts(table)
    cells = {(row[0], table["columns"][c]["name"]): row[c + 1] for row in body
             for c in range(len(table["columns"]))}
    heads = {header_text(table, c): table["columns"][c]["name"] for c in range(len(table["columns"]))}
    seen = set()
    for seed in range(20):
        for ask, answer in reading_turns(table, random.Random(seed), 99, names=True):
            if ask.endswith(", with the row and the column."):  # "<key>, <col>: <value>"
                names, value = answer.split(": ")
                key, col = names.split(", ")
                assert f" {col} of {key}," in ask and cells[key, heads.get(col, col)] == value
                seen.add("named_cell")
            elif " cells of " in ask:  # "<a>: <value>; <b>: <value>", both named in the ask
                col = ask.removeprefix("Transcribe the ").split(" cells of ")[0]
                pairs = [part.split(": ") for part in answer.split("; ")]
                assert len(pairs) == 2 and pairs[0][0] != pairs[1][0]
                assert all(f" {key}" in ask and cells[key, heads.get(col, col)] == value
                           for key, value in pairs)
                seen.add("two_rows")
    assert seen == {"named_cell", "two_rows"}
    plain = reading_turns(table, random.Random(3), 99)
    assert not any("with the row" in a or " cells of " in a for a, _ in plain)


def test_sentence_turns_carry_the_names_and_the_cells_value():
    from tableqa_helpers.offline.tables import cell_texts, header_text

    table = make_table(random.Random(2), 2, rows=TABLE["rows"], cols=TABLE["cols"])
    _, body, _ = cell_texts(table)
    heads = {header_text(table, c): c for c in range(len(table["columns"]))}
    heads.update({col["name"]: c for c, col in enumerate(table["columns"])})
    keys = {row[0]: r for r, row in enumerate(body)}
    seen = set()
    for seed in range(30):
        for ask, answer in reading_turns(table, random.Random(seed), 99, names=True,
                                         sentences=True):
            if ask.startswith("Read the ") or ask.startswith("In a sentence, say"):
                col, key = ask.split(" the ", 2)[-1].split(" of ", 1)  # "... the <col> of <key>..."
                key = key.removesuffix(".").removesuffix(" and say it in a sentence")
                # the names come back inside the sentence, the cell's text after them
                value = body[keys[key]][heads[col] + 1]
                assert answer.endswith(f"{value}.") or answer.endswith(f"under {col}.")
                assert key in answer and col in answer and value in answer
                assert answer.index(key) < answer.index(value)
                seen.add("said_cell")
            elif ask.startswith("Say in a sentence what the table"):
                assert f'"{table["title"]}"' in answer and str(len(body)) in answer
                seen.add("said_table")
            elif ask.startswith("Say in a sentence what the "):
                seen.add("said_pair")
                assert all(k in answer for k in keys if f" {k} " in ask or f" {k}." in ask)
    assert seen == {"said_cell", "said_pair", "said_table"}
    assert not any("sentence" in a for a, _ in reading_turns(table, random.Random(5), 99,
                                                             names=True))


def test_names_stage_data_is_unchanged():
    """The names stage's turns and samples are those run 15 (the shipped base) trained on: a
    digest of them as the code before the sentences stage (939874b) produced them."""
    import hashlib

    out = []
    for seed in range(30):
        table = make_table(random.Random(seed), seed, rows=TABLE["rows"], cols=TABLE["cols"])
        out.append(reading_turns(table, random.Random(seed), 8, names=True))
    data = ReadingSet(12, seed=4, names=True)
    out.append([data[i].get("turns", data[i].get("text")) for i in range(12)])
    assert hashlib.sha256(repr(out).encode()).hexdigest() == (
        "f5911d0df2cb205e9fc94d80363ee806268a50e0096f10ca81800e293747e670")


def test_tables_stage_data_is_unchanged():
    """Without names, turns and samples are those the documented runs 8 to 13 trained on: a
    digest of them as the code before the names stage (83b6e96) produced them."""
    import hashlib

    out = []
    for seed in range(30):
        table = make_table(random.Random(seed), seed, rows=TABLE["rows"], cols=TABLE["cols"])
        out.append(reading_turns(table, random.Random(seed), 6))
    data = ReadingSet(12, seed=3)
    out.append([data[i].get("turns", data[i].get("text")) for i in range(12)])
    assert hashlib.sha256(repr(out).encode()).hexdigest() == (
        "06f0cbdaba1374f5c491ddaadb02650704c619595b67b72a69cab6de9b69357b")


def test_collator_labels_only_the_answers(mini):
    _, processor = mini
    tok = processor.tokenizer
    data = ReadingSet(40, seed=0)
    samples = [data[i] for i in range(12)]
    chats = [s for s in samples if "image" in s]
    texts = [s for s in samples if "text" in s]
    assert chats and texts
    batch = ReadingCollator(processor)(samples)
    assert batch["labels"].shape == batch["input_ids"].shape
    for ids, labels, mask, s in zip(batch["input_ids"], batch["labels"], batch["attention_mask"],
                                    samples):
        kept = [t for t in labels.tolist() if t != -100]
        if "image" in s:
            want = "".join(answer + "<|im_end|>" for _, answer in s["turns"])
            assert tok.decode(kept) == want  # no prompt, image, header or newline token
        else:
            assert labels[mask == 1].tolist() == ids[mask == 1].tolist()  # every token
            assert tok.decode(kept) == s["text"] + "<|endoftext|>"
        assert (labels[mask == 0] == -100).all()


def test_chat_messages_put_the_image_in_the_first_turn():
    msgs = chat_messages([("a?", "A"), ("b?", "B")])
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 2
    assert msgs[0]["content"][0] == {"type": "image"}
    assert all(part["type"] == "text" for m in msgs[1:] for part in m["content"])


def test_mini_model_shape(mini):
    model, processor = mini
    from transformers import Qwen2_5_VLForConditionalGeneration

    assert type(model) is Qwen2_5_VLForConditionalGeneration
    n = sum(p.numel() for p in model.parameters())
    assert 6.2e6 < n < 6.4e6, n
    assert model.config.text_config.vocab_size == len(processor.tokenizer)


def test_pretrain_saves_a_loadable_checkpoint(tmp_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from tableqa_helpers.train.pretrain import pretrain

    out = tmp_path / "mini"
    summary = pretrain(out, steps=3, batch_size=4, workers=0, device="cpu")
    assert summary["steps"] == 3 and 0 <= summary["cell_accuracy"] <= 1
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["steps"] == 3 and log["log"][0]["step"] == 1 and log["log"][0]["loss"] > 0
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert 6.2e6 < sum(p.numel() for p in model.parameters()) < 6.4e6
    assert len(processor.tokenizer) == model.config.text_config.vocab_size


def test_probes_follow_eval_every_and_init_continues(tmp_path, monkeypatch):
    from tableqa_helpers.train import pretrain as module

    probed = []
    monkeypatch.setattr(module, "reading_accuracy", lambda model, processor, n=64, device="cpu":
                        probed.append(n) or {"cell_accuracy": 0.5, "examples": []})
    first = module.pretrain(tmp_path / "a", steps=9, batch_size=1, workers=0, warmup=2,
                            log_every=5, eval_every=4, device="cpu")
    assert [e["step"] for e in first["log"] if "cell_accuracy" in e] == [4, 8]
    assert probed == [32, 32, 64] and first["total_steps"] == 9
    second = module.pretrain(tmp_path / "b", steps=2, batch_size=1, workers=0, warmup=1,
                             device="cpu", init=tmp_path / "a", seed=1)
    assert second["init"] == str(tmp_path / "a") and second["steps"] == 2


def test_lines_stage_probes_line_accuracy(tmp_path, monkeypatch):
    from tableqa_helpers.train import pretrain as module

    probed = []
    monkeypatch.setattr(module, "reading_accuracy", None)  # the tables' probe must not be used
    monkeypatch.setattr(module, "lines_accuracy", lambda model, processor, n=64, device="cpu":
                        probed.append(n) or {"line_accuracy": 0.25, "examples": []})
    summary = module.pretrain(tmp_path / "l", steps=2, batch_size=2, workers=0, warmup=1,
                              eval_every=1, device="cpu", stage="lines")
    assert summary["stage"] == "lines" and summary["line_accuracy"] == 0.25
    assert [e["step"] for e in summary["log"] if "line_accuracy" in e] == [1, 2]
    assert probed == [32, 32, 64]
    with pytest.raises(ValueError, match="unknown stage 'words'"):
        module.pretrain(tmp_path / "w", steps=2, device="cpu", stage="words")
    assert not (tmp_path / "w").exists()


def test_init_rejects_what_is_not_a_mini_checkpoint(tmp_path, standins):
    from tableqa_helpers.config import get_config
    from tableqa_helpers.train.pretrain import pretrain

    with pytest.raises(FileNotFoundError, match="no mini checkpoint"):
        pretrain(tmp_path / "x", steps=1, workers=0, device="cpu", init=tmp_path / "missing")
    tiny = get_config("unit", root=str(standins)).model_id  # the random tiny stand-in
    with pytest.raises(ValueError, match="hidden_size"):
        pretrain(tmp_path / "x", steps=1, workers=0, device="cpu", init=tiny)
    with pytest.raises(ValueError, match="50 with a time budget"):
        pretrain(tmp_path / "x", steps=100, warmup=10, time_budget=60, workers=0, device="cpu")
    assert not (tmp_path / "x").exists()


def test_lr_warmup_does_not_depend_on_the_total():
    from tableqa_helpers.train.pretrain import lr_factor

    for s in range(200):
        assert lr_factor(s, 200, 368) == lr_factor(s, 200, 3000) == min(1.0, (s + 1) / 200)
    assert lr_factor(200, 200, 368) == 1.0
    assert abs(lr_factor(368, 200, 368) - 0.1) < 1e-12 and lr_factor(500, 200, 368) == lr_factor(368, 200, 368)
    assert lr_factor(284, 200, 368) < lr_factor(284, 200, 3000)


def test_pretrain_imports_no_datasets():
    import subprocess

    code = ("import sys, tableqa_helpers.train.pretrain; "
            "sys.exit(1 if 'datasets' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    code = "import sys, tableqa_helpers.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # a fast --help


def test_cli_and_module_call_pretrain_alike(monkeypatch, capsys):
    from tableqa_helpers import cli
    from tableqa_helpers.train import pretrain as module

    calls = []
    monkeypatch.setattr(module, "pretrain", lambda *a, **k: calls.append((a, k)) or {"log": []})
    argv = ["OUT", "--steps", "7", "--batch-size", "2", "--lr", "0.01", "--workers", "1",
            "--time-budget", "9", "--seed", "5", "--device", "cpu", "--init", "X", "--eval-every", "3",
            "--stage", "lines"]
    module.main(argv)
    cli.main(["pretrain-mini", *argv])
    assert len(calls) == 2 and calls[0] == calls[1]
    assert calls[0][1]["steps"] == 7 and calls[0][1]["time_budget"] == 9.0
    assert calls[0][1]["init"] == "X" and calls[0][1]["eval_every"] == 3
    assert calls[0][1]["stage"] == "lines"
    # the same options and defaults in both parsers
    module.main(["OUT"])
    cli.main(["pretrain-mini", "OUT"])
    assert calls[2] == calls[3] and calls[2][1]["steps"] == 3000
    assert calls[2][1]["stage"] == "tables"


# ---- the table knobs ------------------------------------------------------------------------

def test_default_tables_are_unchanged_by_the_knobs():
    for i in range(30):
        plain = make_table(random.Random(i), i)
        explicit = make_table(random.Random(i), i, rows=(3, 10), cols=(2, 5), min_height=None)
        assert plain == explicit
        assert plain["style"]["min_height"] is None
        assert _png(render_table(plain)) == _png(render_table(explicit))


def test_table_knobs_are_respected():
    sizes = set()
    for i in range(60):
        t = make_table(random.Random(i), i, rows=(3, 5), cols=(2, 3), min_width=640,
                       max_width=900, min_height=200)
        assert 3 <= len(t["rows"]) <= 5 and 2 <= len(t["columns"]) <= 3
        sizes.add((len(t["rows"]), len(t["columns"])))
        image = render_table(t)
        assert 640 <= image.width <= 900 and image.height >= 200
        assert render_table(t, random.Random(i)).height >= 200  # a redrawn style keeps the floor
    assert sizes == {(r, c) for r in range(3, 6) for c in (2, 3)}
    t = make_table(random.Random(1), 1, rows=(7, 7), cols=(4, 4))
    assert len(t["rows"]) == 7 and len(t["columns"]) == 4
    short = make_table(random.Random(2), 2, rows=(3, 3), cols=(2, 2), min_width=640, max_width=900)
    tall = make_table(random.Random(2), 2, rows=(3, 3), cols=(2, 2), min_width=640, max_width=900,
                      min_height=1500)
    assert render_table(short).height < 1500 <= render_table(tall).height
