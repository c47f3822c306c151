"""Synthetic Visual-TableQA: round trip through `datasets`, determinism, speed, computed answers."""
from __future__ import annotations

import random
import re
import time
from decimal import Decimal

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

import tableqa_helpers.offline as synth  # noqa: E402

SIZES = dict(train=100, validation=20, test=20)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default-size dataset (100/20/20), its build time in seconds, and its loaded DatasetDict."""
    root = tmp_path_factory.mktemp("synth")
    start = time.perf_counter()
    out = synth.make_synthetic_dataset(root / "ds", **SIZES, seed=0)
    seconds = time.perf_counter() - start
    loaded = datasets.load_dataset(str(out), cache_dir=str(root / "hf-cache"))
    return out, seconds, loaded


def _fills(image) -> set[tuple[int, int, int]]:
    """Colours of the image sampled every 4th pixel (solid fills survive nearest sampling)."""
    small = image.resize((image.width // 4, image.height // 4), Image.Resampling.NEAREST)
    return {color for _, color in small.getcolors(small.width * small.height)}


def test_build_time_under_30_seconds(built):
    # a requirement, not a benchmark: the CPU profile rebuilds this data on 2 cores
    _, seconds, _ = built
    assert seconds < 30, f"make_synthetic_dataset(100, 20, 20) took {seconds:.1f} s"


def test_layout_on_disk(built):
    out, _, _ = built
    assert out.is_dir() and (out / "README.md").is_file()
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        f"{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_round_trip_splits_columns_and_types(built):
    _, _, loaded = built
    assert set(loaded) == set(SIZES)
    for split, n in SIZES.items():
        ds = loaded[split]
        assert ds.num_rows == n
        assert list(ds.features) == list(synth.COLUMNS)
        assert isinstance(ds.features["image"], datasets.Image)
        for name in synth.COLUMNS:
            if name != "image":
                assert ds.features[name].dtype == "string"
        row = ds[0]
        assert row["image"].mode == "RGB"
        assert all(isinstance(row[c], str) and row[c] for c in synth.COLUMNS if c != "image")


def test_table_ids_unique_and_disjoint(built):
    _, _, loaded = built
    ids = {split: loaded[split]["table_id"] for split in SIZES}
    everything = [i for split_ids in ids.values() for i in split_ids]
    assert len(everything) == len(set(everything))
    assert all(re.fullmatch(r"synth_\d{6}", i) for i in everything)


def test_answers_end_with_their_final_answer(built):
    _, _, loaded = built
    for split in SIZES:
        for row in loaded[split].select_columns(["answer", "final_answer", "question_type"]):
            assert row["final_answer"] in row["answer"]
            last = re.split(r"(?<=[.?!])\s+", row["answer"])[-1]
            assert row["final_answer"] in last and "answer" in last
            assert 30 <= len(row["answer"].split()) <= 150
            assert row["question_type"] in synth.QUESTION_TYPES


def test_images_size_mode_and_variety(built):
    _, _, loaded = built
    headers, highlights = set(), 0
    for image in loaded["train"]["image"]:
        assert image.mode == "RGB"
        assert 500 <= image.width <= 3000 and 500 <= image.height <= 3000
        fills = _fills(image)
        headers |= {fill for fill, _ in synth.HEADER_COLORS if fill in fills}
        highlights += any(rgb in fills for rgb in synth.HIGHLIGHTS.values())
    assert len(headers) >= 2
    assert 20 <= highlights < 100  # some tables with coloured cells and a legend, not all
    widths = [image.width for image in loaded["validation"]["image"]]
    assert len(set(widths)) > 5


def test_question_type_and_content_variety(built):
    _, _, loaded = built
    train = loaded["train"]
    assert set(train["question_type"]) == set(synth.QUESTION_TYPES)
    assert len(set(train["question"])) >= 85
    assert any("**" in a for a in train["answer"])
    finals = train["final_answer"]
    assert {"yes", "no"} & set(finals)
    assert any("," in f for f in finals) and any("%" in f or "$" in f for f in finals)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = synth.make_synthetic_dataset(tmp_path / "a", 4, 1, 1, seed=3)
    b = synth.make_synthetic_dataset(tmp_path / "b", 4, 1, 1, seed=3)
    c = synth.make_synthetic_dataset(tmp_path / "c", 4, 1, 1, seed=4)
    for split in ("train", "validation", "test"):
        name = f"data/{split}-00000-of-00001.parquet"
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    ta = datasets.Dataset.from_parquet(str(a / "data/train-00000-of-00001.parquet"))
    tb = datasets.Dataset.from_parquet(str(b / "data/train-00000-of-00001.parquet"))
    for column in ("table_id", "question", "answer", "final_answer"):
        assert ta[column] == tb[column]
    raw = ta.cast_column("image", datasets.Image(decode=False))["image"]
    assert raw == tb.cast_column("image", datasets.Image(decode=False))["image"]


def test_replaces_existing_folder_only_when_complete(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    real = synth.make_sample

    def failing(rng, index, *args, **kwargs):
        if index == 3:
            raise RuntimeError("boom")
        return real(rng, index, *args, **kwargs)

    monkeypatch.setattr(synth.dataset, "make_sample", failing)  # what make_synthetic_dataset calls
    with pytest.raises(RuntimeError):
        synth.make_synthetic_dataset(out, 4, 1, 1)
    assert (out / "stale.txt").read_text() == "old"  # previous version intact
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # temporary folder removed

    monkeypatch.setattr(synth.dataset, "make_sample", real)
    synth.make_synthetic_dataset(out, 2, 1, 1)
    assert not (out / "stale.txt").exists() and (out / "README.md").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def _cell(table: dict, question: str) -> tuple[int, int]:
    """The (row, column) whose key and column name the question mentions."""
    rows = [r for r, row in enumerate(table["rows"]) if row["key"] in question]
    cols = [c for c, col in enumerate(table["columns"]) if col["name"] in question]
    assert len(rows) == 1 and len(cols) == 1, question
    return rows[0], cols[0]


def test_answers_are_computed_from_the_table():
    checked = dict(lookup=0, color_count=0, total=0, range=0)
    for i in range(300):
        rng = random.Random(i)
        qtype = synth.QUESTION_TYPES[i % len(synth.QUESTION_TYPES)]
        table = synth.make_table(rng, i, highlights=qtype == "color_count")
        qa = synth.make_question(table, rng, qtype)
        q, final = qa["question"], qa["final_answer"]
        if qtype == "lookup":
            r, c = _cell(table, q)
            assert final == synth.format_value(table, c, table["rows"][r]["values"][c])
            checked["lookup"] += 1
        elif qtype == "color_count":
            colors = [color for color, meaning in table["legend"] if color in q or meaning in q]
            cols = [c for c, col in enumerate(table["columns"]) if col["name"] in q]
            expected = sum(1 for _, c, color in table["highlights"]
                           if color in colors and (not cols or c in cols))
            assert final == str(expected)
            checked["color_count"] += 1
        elif q.startswith("What is the total") and "group" not in q:
            c = [c for c, col in enumerate(table["columns"]) if col["name"] in q][0]
            total = sum(row["values"][c] for row in table["rows"])
            assert final == synth.format_value(table, c, total)
            checked["total"] += 1
        elif q.startswith("What is the difference between the highest"):
            c = [c for c, col in enumerate(table["columns"]) if col["name"] in q][0]
            values = [row["values"][c] for row in table["rows"]]
            assert final == synth.format_value(table, c, max(values) - min(values))
            checked["range"] += 1
    assert all(n > 0 for n in checked.values()), checked


def test_format_value_units_and_separators():
    table = {"columns": [dict(name="A", unit="", kind=k, additive=True)
                         for k in ("count", "percent", "money_m", "money_b", "decimal")]}
    assert synth.format_value(table, 0, Decimal("1250")) == "1,250"
    assert synth.format_value(table, 1, Decimal("3.4")) == "3.4%"
    assert synth.format_value(table, 2, Decimal("12.5")) == "$12.5M"
    assert synth.format_value(table, 3, Decimal("1204.75")) == "$1,204.8B"  # half up
    assert synth.format_value(table, 4, Decimal("2.25")) == "2.3"
    assert synth.format_value(table, 0, Decimal("2.125"), extra_decimals=2) == "2.13"


def test_render_table_restyles_with_rng_and_keeps_bounds():
    table = synth.make_table(random.Random(5), 5, highlights=True, min_width=600, max_width=900)
    first = synth.render_table(table)
    assert first.tobytes() == synth.render_table(table).tobytes()
    for seed in range(4):
        image = synth.render_table(table, random.Random(seed))
        assert 600 <= image.width <= 900 and 600 <= image.height <= 900


def test_corpus_sentences_deterministic_and_covering():
    corpus = synth.corpus_sentences(3000, seed=0)
    assert len(corpus) == 3000 and corpus == synth.corpus_sentences(3000, seed=0)
    text = " ".join(corpus)
    assert "**" in text and all(d in text for d in "0123456789") and "%" in text and "$" in text
    words = set(re.findall(r"[A-Za-z]+", text))
    for i in range(60):
        sample_rng = random.Random(f"other-{i}")
        table = synth.make_table(sample_rng, i, highlights=True)
        qa = synth.make_question(table, sample_rng)
        used = set(re.findall(r"[A-Za-z]+", " ".join([table["title"], qa["question"], qa["answer"]])))
        assert used <= words, used - words


@pytest.mark.parametrize("size", [{}, dict(min_width=640, max_width=900, rows=(3, 5), cols=(2, 3),
                                           min_height=200)])
def test_colour_counts_are_not_mostly_one(size):
    """Left to the tables, 53% (default) and 74% (3 to 5 rows) of colour counts were 1, so always
    answering 1 scored like seeing; make_sample now draws the count first."""
    from collections import Counter

    counts = Counter(synth.make_sample(random.Random(f"c/{i}"), i, "color_count", **size)["final_answer"]
                     for i in range(120))
    assert set(counts) == {"1", "2", "3", "4"}
    assert max(counts.values()) <= 0.4 * 120, counts
