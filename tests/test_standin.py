"""The offline stand-in loads through the real model's calls and renders chats like Qwen's."""
import hashlib
import re
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from tableqa_helpers.offline import CHAT_TEMPLATE, SPECIAL_TOKENS, qwen25vl_7b_config
from tableqa_helpers.train import meta_model


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tableqa_helpers", "tiny-model", str(out / "m1")],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return out / "m1", seconds


def test_tiny_model_is_fast_and_deterministic(built, tmp_path):
    from tableqa_helpers.offline import build_tiny_model

    path, seconds = built
    assert seconds < 30, f"tiny-model took {seconds:.1f} s"
    build_tiny_model(tmp_path / "m2")
    assert _digest(path) == _digest(tmp_path / "m2")


def test_loads_with_the_real_models_calls(built):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path, _ = built
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path, min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert processor.image_processor.size["longest_edge"] == 64 * 28 * 28
    cfg = model.config
    assert cfg.vision_config.fullatt_block_indexes and \
        len(cfg.vision_config.fullatt_block_indexes) < cfg.vision_config.depth
    tok = processor.tokenizer
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    for t in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) != tok.unk_token_id
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def _shape_names(model):
    return {re.sub(r"\.\d+(\.|$)", r".N\1", n) for n, _ in model.named_modules()}


def test_module_tree_matches_the_7b(built):
    from transformers import AutoConfig

    path, _ = built
    tiny = _shape_names(meta_model(AutoConfig.from_pretrained(path)))
    big = _shape_names(meta_model(qwen25vl_7b_config()))
    assert tiny == big
    for name in ("model.visual.blocks.N.attn.qkv", "model.visual.blocks.N.attn.proj",
                 "model.visual.blocks.N.mlp.gate_proj", "model.visual.merger.mlp.N",
                 "model.language_model.layers.N.self_attn.q_proj",
                 "model.language_model.layers.N.mlp.down_proj", "lm_head"):
        assert name in tiny


def test_chat_template_renders_like_qwen(built):
    from transformers import AutoProcessor

    path, _ = built
    processor = AutoProcessor.from_pretrained(path)
    image = Image.new("RGB", (100, 80), "white")
    user = {"role": "user", "content": [{"type": "image", "image": image},
                                        {"type": "text", "text": "How many rows?"}]}
    # no system turn given: the default one is added; generation prompt opens the assistant turn
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many rows?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    system = {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Three."}]}
    text = processor.apply_chat_template([system, user, answer], tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>How many rows?<|im_end|>\n"
                    "<|im_start|>assistant\nThree.<|im_end|>\n")
    assert processor.chat_template == CHAT_TEMPLATE
    # through the processor the image placeholder expands to the image's merged tokens
    enc = processor(text=[text], images=[image], return_tensors="pt")
    n_image = int((enc["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    assert n_image == int(enc["image_grid_thw"].prod()) // 4
    tokens = processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[0] == "<|im_start|>" and tokens.count("<|vision_start|>") == 1


def test_forward_runs(built):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path, _ = built
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = processor(text=[text], images=[Image.new("RGB", (300, 200), "white")], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape[:2] == enc["input_ids"].shape
    assert torch.isfinite(out.logits).all()
