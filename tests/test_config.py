"""Config validation: every bad value fails early with a message naming the field and the fix.

Also: a later stage without the artifact of the stage before it, and artifacts whose weights
are not safetensors, are refused with a ConfigError before anything is loaded.
"""
import json
import os

import pytest

from tableqa_helpers.config import (DATA_PROBLEMS, PIXEL_UNIT, ConfigError, check_writable,
                                    get_config, require_saved)


def _raises(match, **overrides):
    with pytest.raises(ConfigError, match=match):
        get_config("unit", **overrides)


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'; choose one of tiny, full, unit"):
        get_config("huge")


def test_unknown_profile_from_the_environment(monkeypatch):
    monkeypatch.setenv("TABLEQA_PROFILE", "tinyy")
    with pytest.raises(ConfigError, match="unknown profile 'tinyy'"):
        get_config()


def test_unknown_fields_and_sections():
    with pytest.raises(ConfigError, match=r"unknown config field 'lr'.*known: .*batch_size"):
        get_config("unit", {"lr": "1e-3"})
    with pytest.raises(ConfigError, match="unknown config section 'tier_c'"):
        get_config("unit", {"tier_c.lr": "1e-3"})
    with pytest.raises(ConfigError, match="unknown config field 'tier_a.rank'"):
        get_config("unit", {"tier_a.rank": "8"})


def test_values_of_the_wrong_type():
    with pytest.raises(ConfigError, match="expected a boolean, got 'maybe'"):
        get_config("unit", {"use_standins": "maybe"})
    with pytest.raises(ConfigError, match="bad value for 'synth_sizes'"):
        get_config("unit", {"synth_sizes": "a,b,c"})


@pytest.mark.parametrize("field,value,match", [
    ("min_pixels", 100 * PIXEL_UNIT + 1, r"must be multiples of 28\*28=784"),
    ("max_pixels", 1000, r"must be multiples of 28\*28=784"),
    ("min_pixels", 0, "must be > 0"),
    ("max_pixels", -PIXEL_UNIT, "must be > 0"),
])
def test_pixel_budgets_must_be_positive_multiples_of_a_patch_group(field, value, match):
    _raises(match, **{field: value})


def test_min_pixels_above_max_pixels():
    _raises(r"min_pixels \(78400\) is larger than max_pixels \(50176\)",
            min_pixels=100 * PIXEL_UNIT, max_pixels=64 * PIXEL_UNIT)


@pytest.mark.parametrize("key", ["tier_a.lr", "tier_b.lr"])
@pytest.mark.parametrize("value", ["0", "-1e-4"])
def test_learning_rates_must_be_positive(key, value):
    with pytest.raises(ConfigError, match=rf"{key} must be > 0"):
        get_config("unit", {key: value})


@pytest.mark.parametrize("overrides,match", [
    ({"tier_a.r": "0"}, "tier_a.r must be > 0"),
    ({"tier_b.dropout": "1.0"}, r"tier_b.dropout must be in \[0, 1\)"),
    ({"tier_a.epochs": "0"}, "tier_a.epochs must be > 0"),
    ({"tier_b.last_n_blocks": "0"}, "tier_b.last_n_blocks must be >= 1"),
    ({"dtype": "fp8"}, "dtype must be one of bfloat16, float16, float32, got 'fp8'"),
    ({"batch_size": "0"}, "batch_size must be >= 1"),
    ({"max_length": "0"}, "max_length must be >= 1"),
])
def test_other_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        get_config("unit", overrides)


def test_last_n_blocks_larger_than_the_vision_depth(standins):
    # the tiny stand-in's vision tower has 4 blocks (read from its config.json, nothing loaded)
    model_id = str(get_config("unit", root=str(standins)).model_id)
    assert get_config("unit", root=str(standins), **{"tier_b.last_n_blocks": 4}).tier_b.last_n_blocks == 4
    with pytest.raises(ConfigError, match=r"last_n_blocks=5 but the vision tower of .* has only 4 "
                                          r"blocks; choose 1..4"):
        get_config("unit", root=str(standins), model_id=model_id, **{"tier_b.last_n_blocks": 5})
    # the hub 7B (32 blocks) is known offline
    with pytest.raises(ConfigError, match="has only 32 blocks"):
        get_config("full", {"tier_b.last_n_blocks": "33"})


def test_run_folder_below_a_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot be created: .*not-a-folder is a file, not a "
                                          r"folder; choose another folder with --set root="):
        get_config("unit", root=str(blocker / "runs"))


def test_run_folder_read_only(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (root ignores permission bits)
        ro.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match="is not writable"):
                get_config("unit", root=str(ro / "runs"))
        finally:
            ro.chmod(0o755)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    with pytest.raises(ConfigError, match=rf"run folder {ro}/runs/unit is not writable \({ro} is "
                                          rf"read-only\)"):
        get_config("unit", root=str(ro / "runs"))
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # validation creates nothing


def test_data_policy_defaults_overrides_and_errors(tmp_path):
    cfg = get_config("unit", root=str(tmp_path))
    assert cfg.data_policy == {kind: "skip" for kind in DATA_PROBLEMS}
    cfg = get_config("unit", {"data_policy.too_long": "stop", "data_policy.split_leak_image": "keep"},
                     root=str(tmp_path))
    assert cfg.data_policy["too_long"] == "stop" and cfg.data_policy["split_leak_image"] == "keep"
    assert cfg.data_policy["missing_field"] == "skip"
    partial = get_config("unit", root=str(tmp_path), data_policy={"too_long": "stop"})
    assert partial.data_policy == {**{k: "skip" for k in DATA_PROBLEMS}, "too_long": "stop"}
    assert json.loads(json.dumps(cfg.to_dict()))["data_policy"]["too_long"] == "stop"
    with pytest.raises(ConfigError, match="data_policy: unknown problem 'blurry'; known: missing_field"):
        get_config("unit", {"data_policy.blurry": "skip"})
    with pytest.raises(ConfigError, match="data_policy.too_long must be one of skip, stop, keep, got 'drop'"):
        get_config("unit", {"data_policy.too_long": "drop"})
    with pytest.raises(ConfigError, match="'keep' would let training meet a sample it cannot use"):
        get_config("unit", {"data_policy.image_undecodable": "keep"})
    with pytest.raises(ConfigError, match="data_policy must be a dict"):
        get_config("unit", {"data_policy": "skip"})


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from tableqa_helpers.cli import main

    with pytest.raises(SystemExit, match="error: unknown profile 'nope'"):
        main(["check-data", "--profile", "nope"])
    with pytest.raises(SystemExit, match="error: data_policy.too_long must be one of"):
        main(["check-data", "--set", "data_policy.too_long=maybe"])


# ---- later stages without the earlier stage's artifact ---------------------------------------
def test_stages_without_their_inputs(tiny_cfg):
    from tableqa_helpers.infer import stage_model
    from tableqa_helpers.merge import merge_tier_a
    from tableqa_helpers.train import build_trainer

    with pytest.raises(ConfigError, match=r"no adapter in .*tier_a \(adapter_config.json is missing\): "
                                          r"stage 'a' needs it: train tier a"):
        stage_model(tiny_cfg, "a")
    with pytest.raises(ConfigError, match=r"no model in .*merged .*stage 'merged' needs it: run `merge`"):
        stage_model(tiny_cfg, "merged")
    with pytest.raises(ConfigError, match=r"no model in .*merged .*stage 'b' needs it: run `merge`"):
        stage_model(tiny_cfg, "b")
    with pytest.raises(ConfigError, match="stage must be one of base, a, merged, b, got 'c'"):
        stage_model(tiny_cfg, "c")
    with pytest.raises(ConfigError, match=r"no adapter in .*tier_a .*train tier a \(notebook 02\) first"):
        merge_tier_a(tiny_cfg)
    with pytest.raises(ConfigError, match=r"Tier B trains on the merged model.*run `merge`"):
        build_trainer(tiny_cfg, "b")
    with pytest.raises(ConfigError, match="tier must be 'a' or 'b'"):
        build_trainer(tiny_cfg, "c")


def test_tier_b_without_its_adapter(tiny_cfg):
    from tableqa_helpers.infer import stage_model

    merged = tiny_cfg.merged_dir
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no adapter in .*tier_b .*train tier b"):
        stage_model(tiny_cfg, "b")


def test_pickled_weights_are_refused(tmp_path):
    adapter = tmp_path / "tier_a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ConfigError, match=r"has no adapter_model.safetensors; found only pickled "
                                          r"weights adapter_model.bin, which are refused"):
        require_saved(adapter, "adapter", "train tier a first")
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="re-save with safe_serialization=True"):
        require_saved(model, "model", "run merge first")
    (model / "model.safetensors.index.json").write_text("{}")  # a sharded safetensors model
    assert require_saved(model, "model", "") == model
