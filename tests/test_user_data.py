"""Your own data (data/user.py): an image folder with metadata.jsonl / metadata.csv, a parquet
file, a save_to_disk folder; trained on, checked like the synthetic data, and `predict_one`."""
import json
import random

import pytest

from conftest import make_cfg
from tableqa_helpers.data import DataError, check_dataset, load_tableqa
from tableqa_helpers.offline import make_sample

SIZES = {"train": 4, "validation": 2, "test": 2}


def _image_folder(root, sizes=SIZES, suffix=".jsonl"):
    """train/ validation/ test/ with PNG tables and a metadata file each (no table_id column)."""
    rows = {}
    for split, n in sizes.items():
        folder = root / split
        folder.mkdir(parents=True)
        rows[split] = []
        for i in range(n):
            s = make_sample(random.Random(f"{split}{i}"), i, min_width=300, max_width=400)
            name = f"{split}_{i}.png"
            s["image"].save(folder / name)
            rows[split].append({"file_name": name, "question": s["question"], "answer": s["answer"]})
        if suffix == ".jsonl":
            (folder / "metadata.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows[split]), encoding="utf-8")
        else:
            import csv
            with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, ["file_name", "question", "answer"])
                w.writeheader()
                w.writerows(rows[split])
    return rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_image_folder_loads_as_the_projects_rows(tmp_path, suffix):
    rows = _image_folder(tmp_path / "mine", suffix=suffix)
    dd = load_tableqa(str(tmp_path / "mine"))
    assert set(dd) == set(SIZES)
    for split, n in SIZES.items():
        ds = dd[split]
        assert {"table_id", "image", "question", "answer"} <= set(ds.column_names)
        assert ds["table_id"] == [f"{split}_{i}" for i in range(n)]  # from the file names
        assert ds["question"] == [r["question"] for r in rows[split]]
        assert ds[0]["image"].size[0] >= 300


def test_tier_a_trains_one_step_on_an_image_folder_and_predicts(standins, tmp_path):
    from tableqa_helpers.infer import STAGE_CACHE, predict_one
    from tableqa_helpers.train import train_tier

    rows = _image_folder(tmp_path / "mine")
    cfg = make_cfg(standins, tmp_path / "runs", dataset_id=str(tmp_path / "mine"),
                   train_limit=4, eval_limit=2, batch_size=4, eval_steps=1000,
                   **{"tier_a.epochs": 1})
    summary = train_tier(cfg, "a")
    assert summary["steps"] == 1 and summary["train_loss"] > 0  # one step on 4 rows of yours
    assert (cfg.tier_a_dir / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "mine" / "data").exists()  # no synthetic data written into yours

    image = tmp_path / "mine" / "test" / "test_0.png"
    answer = predict_one(cfg, image, rows["test"][0]["question"], stage="a", max_new_tokens=8)
    assert isinstance(answer, str)
    model = STAGE_CACHE.model
    again = predict_one(cfg, str(image), rows["test"][0]["question"], stage="a", max_new_tokens=8)
    assert STAGE_CACHE.model is model and again == answer  # loaded once, greedy: same answer
    with pytest.raises(DataError, match="question is empty"):
        predict_one(cfg, image, "  ", stage="a")
    STAGE_CACHE.clear()


def test_predict_one_names_the_missing_stage(standins, tmp_path):
    from tableqa_helpers.config import ConfigError
    from tableqa_helpers.infer import predict_one

    _image_folder(tmp_path / "mine", {"test": 1})
    cfg = make_cfg(standins, tmp_path / "runs", dataset_id=str(tmp_path / "mine"))
    with pytest.raises(ConfigError, match="notebook 03"):
        predict_one(cfg, tmp_path / "mine" / "test" / "test_0.png", "Which row?", stage="merged")


def test_data_check_sees_the_users_rows(standins, tmp_path):
    rows = _image_folder(tmp_path / "mine")
    rows["train"][1]["question"] = "   "
    (tmp_path / "mine" / "train" / "metadata.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows["train"]), encoding="utf-8")
    cfg = make_cfg(standins, tmp_path / "runs", dataset_id=str(tmp_path / "mine"))
    report = check_dataset(cfg, progress=False, write=False)
    found = [(p.kind, p.split, p.index, p.table_id) for p in report.problems]
    assert found == [("missing_field", "train", 1, "train_1")]


@pytest.mark.parametrize("breakage, message", [
    ("no_metadata", r"images but no metadata\.jsonl or metadata\.csv"),
    ("no_question", r"metadata\.jsonl has no question column"),
    ("missing_image", r"row 2: file_name 'train_1\.png' is not a file"),
    ("bad_json", r"metadata\.jsonl line 1: not JSON"),
])
def test_malformed_folder_names_what_is_missing(tmp_path, breakage, message):
    rows = _image_folder(tmp_path / "mine", {"train": 2})
    meta = tmp_path / "mine" / "train" / "metadata.jsonl"
    if breakage == "no_metadata":
        meta.unlink()
    elif breakage == "no_question":
        meta.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "question"}) + "\n"
                                for r in rows["train"]))
    elif breakage == "missing_image":
        (tmp_path / "mine" / "train" / "train_1.png").unlink()
    else:
        meta.write_text("{not json\n")
    with pytest.raises(DataError, match=message):
        load_tableqa(str(tmp_path / "mine"))


def test_a_split_folder_without_its_metadata_is_named(tmp_path):
    _image_folder(tmp_path / "mine")
    (tmp_path / "mine" / "validation" / "metadata.jsonl").unlink()
    with pytest.raises(DataError, match=r"validation: images but no metadata\.jsonl"):
        load_tableqa(str(tmp_path / "mine"))


def test_training_without_a_validation_split_says_so(standins, tmp_path):
    from tableqa_helpers.train import build_trainer

    _image_folder(tmp_path / "mine", {"train": 2})
    cfg = make_cfg(standins, tmp_path / "runs", dataset_id=str(tmp_path / "mine"))
    with pytest.raises(DataError, match="no validation split"):
        build_trainer(cfg, "a")


def test_parquet_file_and_save_to_disk_folder(tmp_path):
    import datasets

    _image_folder(tmp_path / "mine", {"test": 2})
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "mine"))["test"]
    ds.to_parquet(str(tmp_path / "test.parquet"))
    from_parquet = load_tableqa(str(tmp_path / "test.parquet"))
    assert list(from_parquet) == ["test"]  # the split is the file's name
    assert len(from_parquet["test"]["table_id"]) == 2
    ds.save_to_disk(str(tmp_path / "saved"))
    saved = load_tableqa(str(tmp_path / "saved"), split="train")  # one Dataset: a train split
    assert saved["table_id"] == ["test_0", "test_1"] and saved["question"] == ds["question"]
    with pytest.raises(DataError, match="must be .parquet"):
        (tmp_path / "x.txt").write_text("hi")
        load_tableqa(str(tmp_path / "x.txt"))
