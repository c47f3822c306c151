"""The shipped mini base installs only when its checksum matches; stand-in data follows its args."""
import json
import shutil
from pathlib import Path

import pytest

from tableqa_helpers.config import get_config
from tableqa_helpers.offline.dataset import ARGS_FILE, made_with
from tableqa_helpers.offline.standin import (MINI_BASE_DIR, MINI_BASE_SHA256, ensure_standins,
                                             install_mini_base, sha256_of)


def test_shipped_weights_match_the_recorded_checksum():
    assert sha256_of(MINI_BASE_DIR / "model.safetensors") == MINI_BASE_SHA256


def test_install_copies_the_whole_base(tmp_path):
    out = install_mini_base(tmp_path / "m")
    shipped = {p.name for p in MINI_BASE_DIR.iterdir() if p.is_file()}
    assert {p.name for p in out.iterdir()} == shipped
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= shipped


def test_damaged_weights_are_refused_and_nothing_is_written(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(MINI_BASE_DIR, source)
    with open(source / "model.safetensors", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="SHA-256.*damaged"):
        install_mini_base(tmp_path / "m", source=source)
    assert not (tmp_path / "m").exists()


def test_a_missing_file_is_named(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(MINI_BASE_DIR, source)
    (source / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        install_mini_base(tmp_path / "m", source=source)


def test_synthetic_data_is_rebuilt_when_its_arguments_change(tmp_path):
    cfg = get_config("unit", {"root": str(tmp_path), "synth_sizes": (6, 2, 3)})
    ensure_standins(cfg)
    first = made_with(cfg.dataset_id)
    assert first["train"] == 6 and first["rows"] == [3, 10]
    assert ensure_standins(cfg) == {}  # same arguments: left alone
    mini = get_config("unit", {"root": str(tmp_path), "synth_sizes": (6, 2, 3),
                               "synth_tables": "mini"})
    assert ensure_standins(mini) == {"dataset": mini.dataset_id}
    assert made_with(mini.dataset_id)["rows"] == [3, 5]
    assert json.loads((Path(mini.dataset_id) / ARGS_FILE).read_text())["max_width"] == 900


def test_an_earlier_base_in_the_standin_folder_is_replaced_a_user_folder_never(tmp_path):
    from tableqa_helpers.offline.standin import ensure_standin_model

    cfg = get_config("tiny", {"root": str(tmp_path)})
    assert ensure_standin_model(cfg) is True  # first use: installed
    assert ensure_standin_model(cfg) is False  # the shipped weights: left alone
    weights = Path(cfg.model_id) / "model.safetensors"
    weights.write_bytes(b"an earlier version's weights")
    assert ensure_standin_model(cfg) is True  # ours but not the shipped base: installed again
    assert sha256_of(weights) == MINI_BASE_SHA256
    mine = tmp_path / "my-model"
    shutil.copytree(cfg.model_id, mine)
    (mine / "model.safetensors").write_bytes(b"my own weights")
    user = get_config("tiny", {"root": str(tmp_path), "model_id": str(mine)})
    assert ensure_standin_model(user) is False
    assert (mine / "model.safetensors").read_bytes() == b"my own weights"
