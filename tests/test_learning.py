"""End to end on the stand-in: Tier A memorises, the merge is exact, Tier B acts only via vision."""
import torch

from tableqa_helpers.data import GenerationCollator, TrainCollator
from tableqa_helpers.data import load_tableqa
from tableqa_helpers.infer import generate_batch, stage_model
from tableqa_helpers.merge import TOLERANCE, logits_difference


def test_tier_a_loss_falls_and_answers_are_memorised(pipeline):
    cfg = pipeline["cfg"]
    losses = [h["loss"] for h in pipeline["a"]["log_history"] if "loss" in h]
    assert losses[-1] < 0.25 * losses[0], losses
    model, processor = stage_model(cfg, "a")
    rows = load_tableqa(cfg.dataset_id, "train", limit=8)
    samples = [rows[i] for i in range(8)]
    texts, _ = generate_batch(model, processor, GenerationCollator(processor, cfg.system_prompt)(samples), 200)
    assert texts == [s["answer"] for s in samples]


def test_merge_report_within_tolerance(pipeline):
    report = pipeline["merge"]
    assert report["ok"] and report["max_rel"] <= TOLERANCE[torch.float32]


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_merged_checkpoint_equals_adapter_model(pipeline):
    cfg = pipeline["cfg"]
    adapter, processor = stage_model(cfg, "a")
    merged, _ = stage_model(cfg, "merged")
    rows = load_tableqa(cfg.dataset_id, "validation", limit=3)
    batch = TrainCollator(processor, cfg.system_prompt)([rows[i] for i in range(3)])
    batch.pop("labels")
    diff = logits_difference(_logits(adapter, batch), _logits(merged, batch), batch["attention_mask"])
    assert diff["max_rel"] <= TOLERANCE[torch.float32], diff


def test_tier_b_changes_output_only_through_vision(pipeline):
    cfg = pipeline["cfg"]
    merged, processor = stage_model(cfg, "merged")
    tier_b, _ = stage_model(cfg, "b")
    # the language model's weights are untouched
    b_state = {k.removeprefix("base_model.model."): v for k, v in tier_b.state_dict().items()}
    for name, w in merged.state_dict().items():
        if ".visual.blocks." not in name:
            assert torch.equal(w, b_state[name]), name
    # text alone: identical logits; with the image: different logits
    tok = processor.tokenizer
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "What is the total?"}]}],
        tokenize=False, add_generation_prompt=True)
    enc = tok([text], return_tensors="pt")
    assert torch.equal(_logits(merged, dict(enc)), _logits(tier_b, dict(enc)))
    rows = load_tableqa(cfg.dataset_id, "train", limit=2)
    batch = TrainCollator(processor, cfg.system_prompt)([rows[0], rows[1]])
    batch.pop("labels")
    assert not torch.allclose(_logits(merged, batch), _logits(tier_b, batch))


def test_adapter_and_merged_save_reload_identical(tiny_cfg, tmp_path, processor, dataset):
    from peft import PeftModel

    from tableqa_helpers.model import load_model
    from tableqa_helpers.train import apply_tier_a

    torch.manual_seed(0)
    model = apply_tier_a(load_model(tiny_cfg, trainable=True), tiny_cfg)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # as if trained
    model.eval()
    batch = TrainCollator(processor, tiny_cfg.system_prompt)([dataset["train"][0], dataset["train"][3]])
    batch.pop("labels")
    before = _logits(model, batch)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_model(tiny_cfg), tmp_path / "adapter")
    assert torch.equal(before, _logits(reloaded.eval(), batch))
    merged = model.merge_and_unload()
    merged_logits = _logits(merged, batch)
    merged.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").exists()
    again = load_model(tiny_cfg, tmp_path / "merged")
    assert torch.equal(merged_logits, _logits(again, batch))
