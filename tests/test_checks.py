"""`check-data` and `clean_split` on the synthetic dataset, clean and with planted defects.

The report of the planted copy must equal the planted set exactly (each defect found, nothing
else), the clean dataset must report nothing, policies decide skip / stop / keep, and the rows
`clean_split` keeps all go through the training collator.
"""
import json

import pytest

from tableqa_helpers.data import DataCheckError, ImageMemo, check_dataset, clean_split, plant_defects
from tableqa_helpers.data.checks import _raw
from tableqa_helpers.config import DATA_PROBLEMS, get_config
from tableqa_helpers.data import load_tableqa


@pytest.fixture(scope="module")
def base_cfg(standins):
    return get_config("unit", root=str(standins))


@pytest.fixture(scope="module")
def planted(base_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "visual-tableqa-defects"
    return out, plant_defects(base_cfg.dataset_id, out)


def _cfg(base_cfg, run_root, dataset_id=None, **overrides):
    return get_config("unit", root=str(run_root), model_id=base_cfg.model_id,
                      dataset_id=str(dataset_id or base_cfg.dataset_id), **overrides)


@pytest.fixture(scope="module")
def planted_report(base_cfg, planted, processor, tmp_path_factory):
    cfg = _cfg(base_cfg, tmp_path_factory.mktemp("run"), planted[0])
    return cfg, check_dataset(cfg, processor=processor, progress=False)


def test_clean_synthetic_dataset_reports_nothing(base_cfg, processor, tmp_path):
    cfg = _cfg(base_cfg, tmp_path)
    report = check_dataset(cfg, processor=processor, progress=False)
    assert report.problems == [] and not report.fatal
    assert report.rows == {"train": 100, "validation": 20, "test": 20}
    assert "no problems found" in report.summary()


def test_every_planted_defect_and_nothing_else(planted, planted_report):
    _, what = planted
    _, report = planted_report
    assert set(what) == set(DATA_PROBLEMS)  # one or more of every kind was planted
    assert report.found() == what
    assert not report.fatal


def test_report_json_is_written_into_the_run_folder(planted, planted_report):
    cfg, report = planted_report
    saved = json.loads((cfg.run_dir / "data_check.json").read_text())
    assert saved["counts"] == report.counts()
    assert saved["rejected"] == {s: report.rejected(s) for s in ("train", "validation", "test")}
    assert {(p["kind"], p["split"], p["index"]) for p in saved["problems"]} == \
        {(k, s, i) for k, where in planted[1].items() for s, i in where}
    assert not list(cfg.run_dir.glob(".*.tmp"))  # written atomically, no temporary left


def test_summary_table_lists_every_kind_with_counts_and_examples(planted_report):
    _, report = planted_report
    text = report.summary()
    lines = {line.split()[0]: line for line in text.splitlines()[3:] if line.split()}
    for kind in DATA_PROBLEMS:
        assert kind in lines
    assert lines["missing_field"].split()[1:5] == ["skip", "4", "1", "0"]
    assert lines["image_undecodable"].split()[1:5] == ["skip", "4", "0", "1"]
    assert "train[14] table_id" in lines["duplicate_table_id"]
    assert "is also in test" in lines["split_leak_table_id"]
    assert "rows rejected: train 14, validation 2, test 1" in text


def test_cli_check_data_exit_codes(base_cfg, planted, processor, tmp_path, capsys, monkeypatch):
    from tableqa_helpers.data import checks
    from tableqa_helpers.cli import main

    real = checks.check_dataset
    monkeypatch.setattr(checks, "check_dataset",  # reuse the loaded processor; same code path
                        lambda cfg: real(cfg, processor=processor, progress=False))
    args = ["check-data", "--profile", "unit", "--set", f"root={tmp_path}",
            "--set", f"model_id={base_cfg.model_id}", "--set", f"dataset_id={planted[0]}"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "image_too_large" in out and "rows rejected: train 14" in out
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--set", "data_policy.too_long=stop"])
    assert exit_.value.code == 1
    assert "STOP: policy 'stop' for too_long" in capsys.readouterr().out


def test_clean_split_drops_exactly_the_rejected_rows(base_cfg, planted, planted_report, processor,
                                                     tmp_path):
    cfg = _cfg(base_cfg, tmp_path, planted[0])
    ds = load_tableqa(cfg.dataset_id)
    train, report = clean_split(ds["train"], processor, cfg, "train", progress=False)
    planted_train = sorted(i for where in planted[1].values() for s, i in where if s == "train")
    assert report.rejected("train") == planted_train == planted_report[1].rejected("train")
    assert len(train) == 100 - len(planted_train)
    assert train["table_id"] == [ds["train"][i]["table_id"] for i in range(100)
                                 if i not in planted_train]
    assert min(train["length"]) > 64  # token counts, for batching by length
    assert (cfg.run_dir / "logs" / "data_train.json").exists()
    validation, report = clean_split(ds["validation"], processor, cfg, "validation", progress=False)
    assert report.found() == {"missing_field": [("validation", 0)],
                              "split_leak_image": [("validation", 1)]}
    assert len(validation) == 18


def test_clean_split_on_a_limited_split(base_cfg, planted, processor, tmp_path):
    """The first `train_limit` rows, as training selects them: indices stay those of the split."""
    cfg = _cfg(base_cfg, tmp_path, planted[0])
    ds = load_tableqa(cfg.dataset_id, "train", limit=8)
    kept, report = clean_split(ds, processor, cfg, "train", progress=False)
    assert report.rejected("train") == [1, 2, 3, 4, 5, 6, 7]
    assert len(kept) == 1 and kept[0]["table_id"] == ds[0]["table_id"]


def test_stop_policy_refuses_to_train(base_cfg, planted, processor, tmp_path):
    cfg = _cfg(base_cfg, tmp_path, planted[0], data_policy={"image_too_large": "stop"})
    ds = load_tableqa(cfg.dataset_id, "train")
    with pytest.raises(DataCheckError, match="STOP: policy 'stop' for image_too_large"):
        clean_split(ds, processor, cfg, "train", progress=False)
    assert json.loads((cfg.run_dir / "logs" / "data_train.json").read_text())["fatal"] is True


def test_keep_policy_reports_but_keeps(base_cfg, planted, processor, tmp_path):
    cfg = _cfg(base_cfg, tmp_path, planted[0], data_policy={"duplicate_table_id": "keep",
                                                            "split_leak_table_id": "keep"})
    ds = load_tableqa(cfg.dataset_id, "train")
    kept, report = clean_split(ds, processor, cfg, "train", progress=False)
    assert report.found()["duplicate_table_id"] == [("train", 14)]
    assert 14 not in report.rejected("train") and 15 not in report.rejected("train")
    assert len(kept) == 100 - 12


def test_image_memo_skips_decoding_and_follows_the_bomb_limit(base_cfg, planted, planted_report,
                                                             monkeypatch):
    from PIL import Image

    cfg, report = planted_report
    memo = ImageMemo(cfg.cache_dir / "image_checks.json")
    assert len(memo.items) >= 130  # every decoded image of the first scan
    monkeypatch.setattr(ImageMemo, "_decode", staticmethod(lambda image: pytest.fail("decoded")))
    value = _raw(load_tableqa(str(planted[0]), "test"))[0]["image"]  # bytes as stored
    width, height, _ = memo.inspect(value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height - 1)
    with pytest.raises(Exception, match="bomb limit") as e:
        memo.inspect(value)
    assert e.value.kind == "image_too_large"



def test_trainer_never_meets_a_rejected_sample(base_cfg, planted, tmp_path):
    """build_trainer on the planted copy: every batch of both dataloaders collates."""
    from tableqa_helpers import train

    cfg = _cfg(base_cfg, tmp_path, planted[0], train_limit=None, eval_limit=None)
    trainer = train.build_trainer(cfg, "a")
    planted_ids = {s: sorted(i for where in planted[1].values() for sp, i in where if sp == s)
                   for s in ("train", "validation")}
    assert len(trainer.train_dataset) == 100 - len(planted_ids["train"])
    assert len(trainer.eval_dataset) == 20 - len(planted_ids["validation"])
    seen = sum(len(b["input_ids"]) for b in trainer.get_train_dataloader())
    seen += sum(len(b["input_ids"]) for b in trainer.get_eval_dataloader())
    assert seen == len(trainer.train_dataset) + len(trainer.eval_dataset)
