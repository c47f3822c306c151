"""The adapter under FSDP2 (``accelerate/fsdp.yaml``): saved once per checkpoint, loaded back.

With FULL_STATE_DICT, transformers' Trainer writes a checkpoint's weights twice: `save_model`
(``adapter_model.safetensors``) and, for resuming, accelerate's ``pytorch_model_fsdp.bin`` (a
pickled full state dict: the whole model, frozen base included, gathered onto rank 0). Here a
checkpoint holds the adapter once, in ``adapter_model.safetensors`` (gathered by
`trainable_state_dict`, frozen weights never), and resuming or loading the best checkpoint reads
it back into the sharded model (`load_trainable_state_dict`). The optimizer, scheduler and RNG
states are saved and restored by the Trainer as before.
"""
from __future__ import annotations

import re
from pathlib import Path

ADAPTER_FILE = "adapter_model.safetensors"


def fsdp2_full_state(accelerator) -> bool:
    """Whether `accelerator` runs FSDP2 with full state dicts (the branch this module handles)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    return bool(getattr(accelerator, "is_fsdp2", False)) and \
        "FULL_STATE_DICT" in str(getattr(plugin, "state_dict_type", ""))


def trainable_state_dict(model) -> dict:
    """Whole copies of the trainable (adapter) weights on rank 0's CPU, gathered from FSDP2
    shards one by one; frozen weights are never gathered. Other ranks get an empty dict.
    Collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def load_trainable_state_dict(model, folder: str | Path, adapter: str = "default") -> int:
    """Load ``folder/adapter_model.safetensors`` into the trainable weights of `model` (sharded
    with FSDP2 or not); returns how many tensors were loaded. Collective under FSDP2: every
    process calls it (each reads the file and keeps its own shards).

    The file's names are PEFT's (``...lora_A.weight``), the model's carry the adapter's name
    (``...lora_A.default.weight``); every trainable weight must be in the file.
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    saved = load_file(str(Path(folder) / ADAPTER_FILE))
    ours = {re.sub(rf"\.{re.escape(adapter)}(?=\.)", "", n): n
            for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(ours) - set(saved))
    if missing:
        raise ValueError(f"{folder}/{ADAPTER_FILE} lacks {len(missing)} trainable weight(s), "
                         f"e.g. {missing[0]}")
    state = {ours[k]: v for k, v in saved.items() if k in ours}
    count = len(state)  # (set_model_state_dict may add entries to the dict it is given)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
    return count
