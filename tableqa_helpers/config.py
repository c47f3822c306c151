"""One typed configuration for the whole series, with named profiles.

`get_config()` picks a profile by argument or the ``TABLEQA_PROFILE`` environment variable and
applies overrides (``tier_a.lr=1e-3`` style keys, or keyword arguments with ``__``). Every path
the pipeline writes is derived from ``root`` and ``run_name``: notebooks never hard-code one.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .offline.tables import MINI_TOKENS, TABLE_SHAPES

HUB_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
HUB_DATASET = "AI-4-Everyone/Visual-TableQA"
PIXEL_UNIT = 28 * 28  # one merged visual token covers a 28x28 pixel patch group
# stand-in model kinds -> their folder under RUN_ROOT/standins
STANDIN_MODELS = {"mini": "mini-qwen2.5-vl", "random": "tiny-qwen2.5-vl"}

SYSTEM_PROMPT = (
    "You read tables from images. Answer the question using only what the table shows. "
    "Reason step by step, briefly and precisely, and end with the final answer."
)


# Problems the dataset check (`data/checks.py`) finds, each with its own policy in `Config.data_policy`.
DATA_PROBLEMS = {
    "missing_field": "table_id, image, question or answer is missing, None or blank",
    "image_undecodable": "the image does not decode (zero bytes, truncated, not an image format)",
    "image_too_small": "a side of the image is shorter than 28 px (one merged patch)",
    "image_aspect_ratio": "long side / short side > 200 (Qwen's smart_resize refuses it)",
    "image_too_large": "more pixels than PIL's decompression-bomb limit (never decoded)",
    "too_long": "the sample has more tokens than max_length",
    "duplicate_table_id": "a table_id seen earlier in the same split (the first row is kept)",
    "split_leak_table_id": "the table_id also appears in a later-evaluated split (test > validation > train)",
    "split_leak_image": "the same image pixels also appear in a later-evaluated split",
}
# "skip": drop the row and report it; "stop": report it and refuse to train; "keep": report it
# and keep the row (only for the relational problems, where the row itself is usable).
POLICIES = ("skip", "stop", "keep")
KEEPABLE = ("duplicate_table_id", "split_leak_table_id", "split_leak_image")
HUB_VISION_DEPTH = 32  # vision blocks of Qwen2.5-VL-7B, for validating tier_b.last_n_blocks offline


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


@dataclass
class TierConfig:
    """LoRA and optimisation settings of one training tier."""

    r: int = 16  # LoRA rank
    alpha: int = 8  # LoRA alpha (scale = alpha / r)
    dropout: float = 0.05  # LoRA dropout
    lr: float = 1e-4  # peak learning rate
    epochs: float = 2.0  # passes over the training split
    warmup: float = 0.07  # warmup as a fraction of all steps (passed as a float `warmup_steps`)
    last_n_blocks: int = 4  # Tier B only: number of final vision blocks that get LoRA
    include_merger: bool = False  # Tier B only: also put LoRA on the vision-language merger
    seed_targets: bool = False  # Tier A only: reproduce the tutorial's (wrong) target names


@dataclass
class Config:
    """Everything a run needs; see `PROFILES` for the defaults of each profile."""

    profile: str = "full"  # name of the profile these values came from
    root: Path = Path("runs")  # folder holding every run and the offline stand-ins
    run_name: str = ""  # sub-folder of `root` for this run ("" -> the profile name)
    model_id: str = HUB_MODEL  # hub id or local folder of the base model
    dataset_id: str = HUB_DATASET  # hub id or local folder of the dataset
    use_standins: bool = False  # build and use the offline stand-in model and synthetic data
    standin_model: str = "mini"  # with use_standins: "mini" (the shipped pretrained mini base,
    #                              which reads tables) or "random" (untrained, fastest, learns
    #                              nothing: the unit tests' machinery check)
    synth_sizes: tuple[int, int, int] = (100, 20, 20)  # synthetic train/validation/test rows
    synth_tables: str = "mini"  # table size of the synthetic data (offline.TABLE_SHAPES)
    system_prompt: str = SYSTEM_PROMPT  # system turn of every chat, in training and inference
    min_pixels: int = 256 * PIXEL_UNIT  # image pixel budget, lower bound (multiple of 28*28)
    max_pixels: int = 2560 * PIXEL_UNIT  # image pixel budget, upper bound (multiple of 28*28)
    max_length: int = 4096  # longest training sample in tokens; longer ones are dropped
    train_limit: int | None = None  # use only the first N training rows (None: all)
    eval_limit: int | None = None  # use only the first N validation rows
    test_limit: int | None = None  # use only the first N test rows for inference
    dtype: str = "bfloat16"  # model weights/compute dtype: bfloat16, float16 or float32
    attn_implementation: str = "auto"  # "auto" (flash_attention_2 if usable, else sdpa), or a name
    batch_size: int = 3  # per-device micro-batch for training
    eval_batch_size: int = 4  # per-device batch for evaluation
    grad_accum: int = 8  # micro-batches per optimizer step
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    scheduler: str = "cosine"  # transformers lr_scheduler_type
    logging_steps: int = 20  # optimizer steps between loss logs
    eval_steps: int = 100  # optimizer steps between evaluations (and checkpoints)
    save_steps: int = 0  # extra checkpoints every N optimizer steps (0: only at evaluations)
    save_total_limit: int = 3  # checkpoints kept (the best one is always kept)
    early_stopping_patience: int = 2  # evaluations without improvement before stopping
    gradient_checkpointing: bool = True  # recompute activations to save memory
    cache_vision: bool = True  # Tier A: compute the frozen vision tower once per image
    vision_cache_gb: float = 8.0  # bound on the in-memory vision cache, in GiB
    vision_cache_disk_gb: float = 0.0  # Tier A: vision cache on disk (RUN/cache/vision), GiB; 0: off
    vision_attention: str = "grouped"  # SDPA vision windows: "grouped" (model/fast.py) or "stock"
    compile_blocks: str = "auto"  # torch.compile each decoder layer / vision MLP in training:
    #                               "auto" (on a bf16/fp16 GPU of compute capability >= 8, not
    #                               under 4-bit), "on", "off" (fast.compile_blocks)
    fused_kernels: str = "off"  # "liger": liger-kernel's RMSNorm / SwiGLU in training and
    #                             `predict` (GPU only; when it pays: model/fused.py)
    gpu: str = "manual"  # batch preset (fast.GPU_PRESETS): manual (fields as set), auto, 80gb...
    quantize: str = "none"  # base weights: "none" (dtype) or "4bit" (QLoRA; needs bitsandbytes)
    hardware: str = "none"  # GPU plan (hardware/) for fields not set: none, auto, or t4, l4, h100...
    dataloader_workers: int = 2  # processes preparing batches
    max_new_tokens: int = 384  # generation length cap (answers are 40-150 words)
    gen_batch_size: int = 8  # samples per generate() call
    seed: int = 42
    data_policy: dict[str, str] = field(  # problem kind (see DATA_PROBLEMS) -> skip | stop | keep
        default_factory=lambda: {kind: "skip" for kind in DATA_PROBLEMS})
    tier_a: TierConfig = field(default_factory=TierConfig)
    tier_b: TierConfig = field(default_factory=lambda: TierConfig(
        r=8, alpha=32, dropout=0.1, lr=2e-5, epochs=1.0))

    # ---- derived paths -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.root) / (self.run_name or self.profile)

    @property
    def standin_dir(self) -> Path:
        return Path(self.root) / "standins"

    @property
    def tier_a_dir(self) -> Path:
        return self.run_dir / "tier_a"

    @property
    def merged_dir(self) -> Path:
        return self.run_dir / "merged"

    @property
    def tier_b_dir(self) -> Path:
        return self.run_dir / "tier_b"

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "predictions"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / "cache"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["root"] = str(self.root)
        return d

    def validate(self) -> "Config":
        """Raise ConfigError naming the first bad field; return self when all is well.

        Checks values only, plus two cheap look-ups that create nothing: the run folder can be
        created or written, and `tier_b.last_n_blocks` fits the vision tower when the model's
        config is on disk (or the model is the hub 7B).
        """
        if self.min_pixels <= 0 or self.max_pixels <= 0:
            raise ConfigError(f"min_pixels ({self.min_pixels}) and max_pixels ({self.max_pixels}) "
                              f"must be > 0")
        if self.min_pixels % PIXEL_UNIT or self.max_pixels % PIXEL_UNIT:
            raise ConfigError(f"min_pixels ({self.min_pixels}) and max_pixels ({self.max_pixels}) "
                              f"must be multiples of 28*28={PIXEL_UNIT}")
        if self.min_pixels > self.max_pixels:
            raise ConfigError(f"min_pixels ({self.min_pixels}) is larger than max_pixels "
                              f"({self.max_pixels})")
        for name in ("tier_a", "tier_b"):
            t = getattr(self, name)
            if t.lr <= 0:
                raise ConfigError(f"{name}.lr must be > 0, got {t.lr}")
            if t.r <= 0:
                raise ConfigError(f"{name}.r must be > 0, got {t.r}")
            if not 0 <= t.dropout < 1:
                raise ConfigError(f"{name}.dropout must be in [0, 1), got {t.dropout}")
            if t.epochs <= 0:
                raise ConfigError(f"{name}.epochs must be > 0, got {t.epochs}")
        if self.tier_b.last_n_blocks < 1:
            raise ConfigError(f"tier_b.last_n_blocks must be >= 1, got {self.tier_b.last_n_blocks}")
        for name, known in (("standin_model", STANDIN_MODELS), ("synth_tables", TABLE_SHAPES),
                            ("compile_blocks", ("auto", "on", "off")), ("fused_kernels", ("off", "liger")),
                            ("dtype", ("bfloat16", "float16", "float32"))):
            if getattr(self, name) not in known:
                raise ConfigError(f"{name} must be one of {', '.join(known)}, "
                                  f"got {getattr(self, name)!r}")
        from .hardware.cards import CARDS, QUANTIZE
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}")
        if self.hardware not in ("none", "auto", *CARDS):
            raise ConfigError(f"hardware must be none, auto or one of {', '.join(CARDS)}, "
                              f"got {self.hardware!r}")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "max_length",
                     "max_new_tokens", "gen_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_steps < 0:
            raise ConfigError(f"save_steps must be >= 0 (0: checkpoint only at evaluations), "
                              f"got {self.save_steps}")
        depth = vision_depth(self.model_id)
        if depth is not None and self.tier_b.last_n_blocks > depth:
            raise ConfigError(f"tier_b.last_n_blocks={self.tier_b.last_n_blocks} but the vision tower "
                              f"of {self.model_id} has only {depth} blocks; choose 1..{depth}")
        self._validate_policy()
        check_writable(self.run_dir)
        return self

    def _validate_policy(self) -> None:
        if not isinstance(self.data_policy, dict):
            raise ConfigError(f"data_policy must be a dict of problem -> policy, got "
                              f"{type(self.data_policy).__name__}")
        for kind, policy in self.data_policy.items():
            if kind not in DATA_PROBLEMS:
                raise ConfigError(f"data_policy: unknown problem {kind!r}; known: "
                                  f"{', '.join(DATA_PROBLEMS)}")
            if policy not in POLICIES:
                raise ConfigError(f"data_policy.{kind} must be one of {', '.join(POLICIES)}, "
                                  f"got {policy!r}")
            if policy == "keep" and kind not in KEEPABLE:
                raise ConfigError(f"data_policy.{kind}='keep' would let training meet a sample it "
                                  f"cannot use; 'keep' is only for {', '.join(KEEPABLE)}")
        for kind in DATA_PROBLEMS:  # a partial dict means "skip" for the others
            self.data_policy.setdefault(kind, "skip")


def vision_depth(model_id: str | Path) -> int | None:
    """Number of vision blocks of a local model folder (its config.json), 32 for the hub 7B, else None."""
    path = Path(model_id) / "config.json"
    if path.is_file():
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["vision_config"]["depth"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return HUB_VISION_DEPTH if str(model_id) == HUB_MODEL else None


def check_writable(folder: str | Path) -> Path:
    """Raise ConfigError unless `folder` exists and is writable or can be created (creates nothing)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fix = "choose another folder with --set root=... or $TABLEQA_ROOT"
    if not probe.is_dir():
        raise ConfigError(f"run folder {folder} cannot be created: {probe} is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"run folder {folder} is not writable ({probe} is read-only); {fix}")
    return folder


def require_saved(folder: str | Path, kind: str, hint: str) -> Path:
    """Raise ConfigError unless `folder` holds a complete saved `kind` ("adapter" or "model").

    Weights must be safetensors (pickled ``.bin``/``.pt`` files are refused: loading them can
    run code). `hint` says how to produce the folder (e.g. "train tier a (notebook 02) first").
    """
    from .io import recover_dir

    folder = Path(folder)
    recover_dir(folder)  # a kill between the two renames of atomic_dir left only ".NAME.old"
    config = "adapter_config.json" if kind == "adapter" else "config.json"
    weights = (["adapter_model.safetensors"] if kind == "adapter"
               else ["model.safetensors", "model.safetensors.index.json"])
    if not (folder / config).is_file():
        raise ConfigError(f"no {kind} in {folder} ({config} is missing): {hint}")
    if not any((folder / w).is_file() for w in weights):
        pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        found = f"; found only pickled weights {', '.join(pickled)}, which are refused (they can run " \
                f"code when loaded): re-save with safe_serialization=True" if pickled else ""
        raise ConfigError(f"the {kind} in {folder} has no {' or '.join(weights)}{found}; {hint}")
    return folder


def _tiny(**kw) -> Config:
    """The pretrained mini base and synthetic mini tables on a CPU: the whole series in minutes,
    and Tier A visibly learns the answers (docs/mini-base.md)."""
    return _unit(**{**dict(
        profile="tiny", standin_model="mini", synth_tables="mini", synth_sizes=(400, 20, 100),
        min_pixels=MINI_TOKENS[0] * PIXEL_UNIT, max_pixels=MINI_TOKENS[1] * PIXEL_UNIT,
        eval_limit=20, test_limit=None,
        tier_a=TierConfig(r=16, alpha=32, dropout=0.0, lr=3e-3, epochs=3.0, warmup=0.05),
        tier_b=TierConfig(r=8, alpha=32, dropout=0.0, lr=3e-3, epochs=1.0, warmup=0.05)), **kw})


def _unit(**kw) -> Config:
    """The untrained random stand-in on small synthetic tables: every stage in seconds on a CPU,
    learning nothing. The package's unit tests run on it."""
    return Config(**{**dict(
        profile="unit", use_standins=True, standin_model="random", synth_tables="default",
        dtype="float32", attn_implementation="sdpa",
        min_pixels=16 * PIXEL_UNIT, max_pixels=64 * PIXEL_UNIT, max_length=1024,
        train_limit=None, eval_limit=8, test_limit=8, batch_size=4, eval_batch_size=4,
        grad_accum=1, logging_steps=5, eval_steps=25, gradient_checkpointing=False,
        dataloader_workers=0, max_new_tokens=160, gen_batch_size=4, vision_cache_gb=0.5,
        tier_a=TierConfig(r=16, alpha=32, dropout=0.0, lr=1e-2, epochs=3.0, warmup=0.05),
        tier_b=TierConfig(r=8, alpha=32, dropout=0.0, lr=5e-3, epochs=1.0, warmup=0.05)), **kw})


def _full(**kw) -> Config:
    """The real model and dataset with the tutorial's hyperparameters (a GPU with hub access)."""
    return Config(profile="full", **{"gpu": "auto", "hardware": "auto", "dataloader_workers": 4,
                                     **kw})


PROFILES = {"tiny": _tiny, "full": _full, "unit": _unit}


def _coerce(value: Any, current: Any) -> Any:
    """Turn a command-line string into the type of the field's current value."""
    if not isinstance(value, str) or isinstance(current, str):
        return value
    text = value.strip()
    if text.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {value!r}")
    if isinstance(current, Path):
        return Path(text)
    if isinstance(current, tuple):
        return tuple(int(x) for x in text.split(","))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Set fields by dotted (``tier_a.lr``) or dunder (``tier_a__lr``) keys; unknown keys raise."""
    for key, value in overrides.items():
        parts = key.replace("__", ".").split(".")
        target = cfg
        for part in parts[:-1]:
            if not hasattr(target, part):
                raise ConfigError(f"unknown config section {part!r} in {key!r}")
            target = getattr(target, part)
        name = parts[-1]
        if isinstance(target, dict):  # data_policy.too_long=stop (checked by validate)
            target[name] = value.strip() if isinstance(value, str) else value
            continue
        names = {f.name for f in dataclasses.fields(target)}
        if name not in names:
            raise ConfigError(f"unknown config field {key!r}; known: {', '.join(sorted(names))}")
        try:
            setattr(target, name, _coerce(value, getattr(target, name)))
        except ValueError as e:
            raise ConfigError(f"bad value for {key!r}: {e}") from None
    return cfg


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set field=value`` items as overrides for `get_config`."""
    overrides = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    return overrides


def get_config(profile: str | None = None, overrides: dict[str, Any] | None = None,
               **kwargs: Any) -> Config:
    """Build the config of `profile` (default: $TABLEQA_PROFILE, else "tiny") with overrides.

    ``$TABLEQA_ROOT`` sets the folder of runs (e.g. a Google Drive or /kaggle/working path).
    """
    name = profile or os.environ.get("TABLEQA_PROFILE") or "tiny"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    cfg = PROFILES[name]()
    if os.environ.get("TABLEQA_ROOT"):
        cfg.root = Path(os.environ["TABLEQA_ROOT"])
    overrides = {**(overrides or {}), **kwargs}
    apply_overrides(cfg, overrides)
    if cfg.use_standins:
        if cfg.model_id == HUB_MODEL:
            cfg.model_id = str(cfg.standin_dir / STANDIN_MODELS[cfg.standin_model])
        if cfg.dataset_id == HUB_DATASET:
            cfg.dataset_id = str(cfg.standin_dir / "synthetic-visual-tableqa")
    if cfg.hardware != "none":  # the GPU plan sets the fields the overrides did not
        from .hardware.plan import apply_plan
        apply_plan(cfg, {key.replace("__", ".") for key in overrides})
    return cfg.validate()
