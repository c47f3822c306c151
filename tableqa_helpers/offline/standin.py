"""Offline stand-ins for the real model: a tiny Qwen2.5-VL checkpoint and the public 7B config.

The tiny checkpoint has the 7B's module tree (``model.visual.blocks.N.attn.qkv``,
``model.visual.merger.mlp.{0,2}``, ``model.language_model.layers.N.self_attn.q_proj`` ...), a
vision tower with windowed and full-attention blocks, a byte-level BPE tokenizer carrying Qwen's
special tokens and a chat template that renders messages the way Qwen2.5-VL-Instruct's does. It
loads with exactly the calls used for the real model:
``Qwen2_5_VLForConditionalGeneration.from_pretrained(dir)`` and
``AutoProcessor.from_pretrained(dir, min_pixels=..., max_pixels=...)``.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
DEFAULT_SYSTEM = "You are a helpful assistant."
# The split pattern of Qwen2's tokenizer.json (pre_tokenizer "Split", behavior "Isolated").
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML turns; an image part becomes <|vision_start|><|image_pad|><|vision_end|>; a default
# system turn is added when the first message is not a system message; add_generation_prompt
# appends the assistant header. Same rendering as Qwen2.5-VL-Instruct's own template.
CHAT_TEMPLATE = (
    "{% set ns = namespace(images=0, videos=0) %}"
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set ns.images = ns.images + 1 %}"
    "{% if add_vision_id %}Picture {{ ns.images }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set ns.videos = ns.videos + 1 %}"
    "{% if add_vision_id %}Video {{ ns.videos }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Public Qwen2.5-VL-7B-Instruct config values, for `plan` and `bench/` when the hub is unreachable.
QWEN25VL_7B = dict(
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
              rms_norm_eps=1e-6, rope_theta=1e6, mrope_section=[16, 24, 24]),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, in_chans=3),
    ids=dict(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
             image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
             vision_end_token_id=151653),
)

TINY = dict(
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6,
              rope_theta=1e6, mrope_section=[4, 6, 6],
              # wider than the 7B's 0.02: a random 128-wide head must be able to put a clear
              # peak on one token, or the stand-in could not learn (or memorise) anything
              initializer_range=0.1),
    vision=dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, tokens_per_second=2, in_chans=3),
)


def _corpus(n: int = 6000, seed: int = 0) -> list[str]:
    """Sentences like the questions and answers of Visual-TableQA (synthetic and real)."""
    from .dataset import corpus_sentences
    rng = random.Random(seed)
    digits = [str(rng.randint(0, 99999)) for _ in range(500)]
    extra = ["The final answer is " + d + "." for d in digits]
    return corpus_sentences(n, seed) + extra


def build_tokenizer(vocab_size: int = 4000):
    """Train a byte-level BPE tokenizer (deterministic) and wrap it as Qwen's tokenizer class."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    # Qwen2's own pre-tokenizer: its split pattern (every digit a token of its own), then bytes
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    fast = Qwen2Tokenizer(tokenizer_object=tok, unk_token=None, bos_token=None,
                          eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          extra_special_tokens=SPECIAL_TOKENS[1:])
    fast.model_max_length = 32768
    return fast


def token_ids(tok) -> dict[str, int]:
    """The special-token ids a Qwen2.5-VL config must point at."""
    get = tok.convert_tokens_to_ids
    return dict(bos_token_id=get("<|endoftext|>"), eos_token_id=get("<|im_end|>"),
                pad_token_id=get("<|endoftext|>"), image_token_id=get("<|image_pad|>"),
                video_token_id=get("<|video_pad|>"), vision_start_token_id=get("<|vision_start|>"),
                vision_end_token_id=get("<|vision_end|>"))


def make_config(shape: dict, ids: dict, vocab_size: int, tie: bool = False):
    """A Qwen2_5_VLConfig from a shape dict (`TINY` or `QWEN25VL_7B`) and token ids."""
    from transformers import Qwen2_5_VLConfig

    text = dict(shape["text"])
    rope = {"rope_type": "default", "rope_theta": text.pop("rope_theta"),
            "mrope_section": text.pop("mrope_section")}
    text.update(vocab_size=vocab_size, rope_parameters=rope, tie_word_embeddings=tie,
                bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"],
                pad_token_id=ids["pad_token_id"])
    top = {k: ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                               "vision_end_token_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(shape["vision"]),
                            tie_word_embeddings=tie, **top)


def qwen25vl_7b_config():
    """The public Qwen2.5-VL-7B-Instruct configuration, built offline."""
    return make_config(QWEN25VL_7B, QWEN25VL_7B["ids"], QWEN25VL_7B["text"]["vocab_size"])


def build_processor(tok=None, min_pixels: int = 256 * 28 * 28, max_pixels: int = 2560 * 28 * 28):
    """A Qwen2_5_VLProcessor around the stand-in tokenizer and the stock image processor."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    tok = tok or build_tokenizer()
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    try:
        from transformers import Qwen2VLVideoProcessor
        video_processor = Qwen2VLVideoProcessor()
    except Exception:  # video processors need torchvision; images do not
        video_processor = None
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny Qwen2.5-VL checkpoint and its processor to `out_dir` (deterministic)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ..io import atomic_dir

    processor = build_processor()
    tok = processor.tokenizer
    config = make_config(TINY, token_ids(tok), vocab_size=len(tok))
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
    return Path(out_dir)


# The mini base: pretrained by `python -m tableqa_helpers pretrain-mini` (docs/mini-base.md) and
# shipped with the package, weights in bfloat16, with the processor it was trained with.
MINI_BASE_DIR = Path(__file__).parent / "mini_base"
MINI_BASE_SHA256 = "74d6da253a7ec59c18cad27c0762ebf150480b533e2c6046a75a27889bd0b03b"


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_mini_base(out_dir: str | Path, source: str | Path = MINI_BASE_DIR,
                      sha256: str = MINI_BASE_SHA256) -> Path:
    """Copy the shipped mini base into `out_dir` once its weights match the known checksum."""
    from ..io import atomic_dir

    source = Path(source)
    weights = source / "model.safetensors"
    for need in (weights, source / "config.json", source / "tokenizer.json"):
        if not need.exists():
            raise FileNotFoundError(f"the mini base is incomplete: {need} is missing; restore it "
                                    "(git checkout) or rebuild it as docs/mini-base.md says")
    if (got := sha256_of(weights)) != sha256:
        raise ValueError(f"{weights} has SHA-256 {got}, expected {sha256}: the file is damaged "
                         "or was replaced; restore it (git checkout) or rebuild it as "
                         "docs/mini-base.md says")
    with atomic_dir(out_dir) as tmp:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
    return Path(out_dir)


def ensure_standin_model(cfg) -> bool:
    """Put the profile's stand-in model at ``cfg.model_id`` unless one is there; True if it did.

    A copy of the mini base in the stand-in folder whose weights are not the shipped ones (an
    earlier version's base) is replaced; a folder elsewhere (``--set model_id=DIR``) is never."""
    folder = Path(cfg.model_id)
    if (folder / "config.json").exists():
        ours = folder.resolve().is_relative_to(Path(cfg.standin_dir).resolve())
        weights = folder / "model.safetensors"
        if not (cfg.standin_model == "mini" and ours and weights.exists()
                and sha256_of(weights) != MINI_BASE_SHA256):
            return False
    if cfg.standin_model == "mini":
        install_mini_base(cfg.model_id)
    else:
        build_tiny_model(cfg.model_id, seed=0)
    return True


def ensure_standins(cfg) -> dict[str, str]:
    """Build the stand-in model and synthetic dataset a stand-in profile needs, if not there yet.

    The model: the shipped mini base (``standin_model="mini"``) or the random tiny one. The
    synthetic dataset is rebuilt when its folder was made with other sizes or table shapes.
    """
    from .dataset import made_with, make_synthetic_dataset
    from .tables import TABLE_SHAPES

    made = {}
    if not cfg.use_standins:
        return made
    if ensure_standin_model(cfg):
        made["model"] = cfg.model_id
    ours = Path(cfg.dataset_id).resolve().is_relative_to(Path(cfg.standin_dir).resolve())
    train, validation, test = cfg.synth_sizes
    args = dict(train=train, validation=validation, test=test, seed=0,
                **TABLE_SHAPES[cfg.synth_tables])
    # a folder of ours made by another version or with other arguments is made again
    if ours and made_with(cfg.dataset_id) != json.loads(json.dumps(args)):  # tuples as lists
        make_synthetic_dataset(cfg.dataset_id, **args)
        made["dataset"] = cfg.dataset_id
    return made
