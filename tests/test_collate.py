"""The training collator labels exactly the answer tokens and its <|im_end|>."""
import pytest
import torch

from tableqa_helpers.data import (IGNORE, GenerationCollator, SampleTooLongError, TrainCollator,
                                     count_tokens)
from tableqa_helpers.data import to_messages

SYSTEM = "Answer from the table."


def independent_labels(processor, sample):
    """Render the whole chat with the template, tokenize it, find the last assistant turn."""
    messages = to_messages(sample, SYSTEM)
    text = processor.apply_chat_template(messages, tokenize=False)
    enc = processor(text=[text], images=[messages[1]["content"][0]["image"]], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    tok = processor.tokenizer
    start_id, end_id = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    header = tok("assistant\n", add_special_tokens=False)["input_ids"]
    starts = [i for i, t in enumerate(ids) if t == start_id]
    last = starts[-1]
    assert ids[last + 1:last + 1 + len(header)] == header
    begin = last + 1 + len(header)
    end = ids.index(end_id, begin) + 1  # include <|im_end|>
    labels = [IGNORE] * len(ids)
    labels[begin:end] = ids[begin:end]
    return ids, labels


@pytest.mark.parametrize("indices", [[0], [0, 5, 9]])
def test_label_mask_is_exactly_the_answer(processor, dataset, indices):
    rows = [dataset["train"][i] for i in indices]
    batch = TrainCollator(processor, SYSTEM)(rows)
    lengths = batch["attention_mask"].sum(1).tolist()
    if len(rows) > 1:
        assert len(set(lengths)) > 1, "pick samples of mixed lengths"
    for i, row in enumerate(rows):
        ids, labels = independent_labels(processor, row)
        n = lengths[i]
        assert n == len(ids)
        assert batch["input_ids"][i, :n].tolist() == ids  # right padding, same tokens
        assert batch["labels"][i].tolist() == labels + [IGNORE] * (batch["labels"].shape[1] - n)
        assert (batch["input_ids"][i, n:] == processor.tokenizer.pad_token_id).all()
        labelled = processor.tokenizer.decode([t for t in batch["labels"][i].tolist() if t != IGNORE])
        assert labelled == row["answer"] + "<|im_end|>"


def test_no_generation_prompt_and_no_vision_labels(processor, dataset):
    batch = TrainCollator(processor, SYSTEM)([dataset["train"][1]])
    ids = batch["input_ids"][0].tolist()
    tok = processor.tokenizer
    # the sequence ends with <|im_end|> and the newline: no stray "<|im_start|>assistant\n"
    assert tok.decode(ids[-2:]) == "<|im_end|>\n"
    vision = [tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")]
    labels = batch["labels"][0]
    assert not torch.isin(labels, torch.tensor(vision)).any()
    answer = tok(dataset["train"][1]["answer"], add_special_tokens=False)["input_ids"]
    assert int((labels != IGNORE).sum()) == len(answer) + 1


def test_count_tokens_matches_the_collator(processor, dataset):
    for i in range(4):
        row = dataset["train"][i]
        n = count_tokens(processor, row, SYSTEM)
        assert n["total"] == len(TrainCollator(processor, SYSTEM).encode(row)["input_ids"])


def test_overlong_sample_is_rejected_not_truncated(processor, dataset):
    row = dataset["train"][0]
    n = count_tokens(processor, row, SYSTEM)["total"]
    with pytest.raises(SampleTooLongError, match="max_length"):
        TrainCollator(processor, SYSTEM, max_length=n - 1)([row])
    assert TrainCollator(processor, SYSTEM, max_length=n)([row])["input_ids"].shape[1] == n


def test_generation_batch_is_left_padded(processor, dataset):
    rows = [dataset["test"][i] for i in range(3)]
    batch = GenerationCollator(processor, SYSTEM)(rows)
    mask = batch["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()
    tail = processor.tokenizer.decode(batch["input_ids"][0, -12:])
    assert tail.endswith("<|im_start|>assistant\n")
    assert "labels" not in batch
