"""Shared fixtures: the offline stand-ins are built once per test session."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tableqa_helpers.config import get_config  # noqa: E402

GALLERY = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                       "visual_tableqa_gallery")


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    """Root folder holding the tiny model and the synthetic dataset (built once)."""
    from tableqa_helpers.offline import ensure_standins

    root = tmp_path_factory.mktemp("standins-root")
    ensure_standins(get_config("unit", root=str(root)))
    return root


def make_cfg(standins, run_root, **overrides):
    """A unit-profile config whose run folder is `run_root`, sharing the stand-ins."""
    base = get_config("unit", root=str(standins))
    return get_config("unit", root=str(run_root), **{"model_id": base.model_id,
                                                      "dataset_id": base.dataset_id, **overrides})


@pytest.fixture
def tiny_cfg(standins, tmp_path):
    """A unit-profile config with a fresh run folder."""
    return make_cfg(standins, tmp_path)


@pytest.fixture(scope="session")
def processor(standins):
    from tableqa_helpers.model import load_processor

    return load_processor(get_config("unit", root=str(standins)))


@pytest.fixture(scope="session")
def dataset(standins):
    from tableqa_helpers.data import load_tableqa

    return load_tableqa(get_config("unit", root=str(standins)).dataset_id)


MEMORISE = {"train_limit": 8, "eval_limit": 4, "batch_size": 8, "eval_steps": 1000,
            "logging_steps": 5, "tier_a.lr": 1e-2, "tier_a.epochs": 60, "tier_a.warmup": 0.0,
            "scheduler": "constant", "tier_b.lr": 1e-2, "tier_b.epochs": 10, "tier_b.warmup": 0.0}


@pytest.fixture(scope="session")
def pipeline(standins, tmp_path_factory):
    """Tier A trained to memorise 8 samples, merged, then Tier B: one run shared by tests."""
    from tableqa_helpers.merge import merge_tier_a
    from tableqa_helpers.train import train_tier

    cfg = make_cfg(standins, tmp_path_factory.mktemp("pipeline"), **MEMORISE)
    summary_a = train_tier(cfg, "a")
    report = merge_tier_a(cfg)
    summary_b = train_tier(cfg, "b")
    return {"cfg": cfg, "a": summary_a, "merge": report, "b": summary_b}
