"""The environment check of notebook 00: versions, device, bf16, attention backend; seeding."""
from __future__ import annotations

import importlib
import os
import platform
import random

PACKAGES = ("torch", "torchvision", "transformers", "peft", "trl", "datasets", "accelerate",
            "qwen_vl_utils", "PIL", "matplotlib", "ipywidgets")


def on_hosted_notebook() -> str | None:
    """'colab' or 'kaggle' when running there, else None (install cells run only there)."""
    if os.environ.get("COLAB_RELEASE_TAG") or os.environ.get("COLAB_GPU"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return None


def versions() -> dict[str, str]:
    """Installed versions of the packages the series uses ('missing' when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception as e:  # a broken install is reported, not raised
            out[name] = f"missing ({type(e).__name__})"
    return out


def device_report() -> dict[str, object]:
    """The accelerator, its memory, bf16 support and the attention backend the series will use."""
    import torch

    from .config import get_config
    from .model.load import attention_backend
    from .hardware.cards import flash_attn_usable

    info: dict[str, object] = {"cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                    gpus=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(including_emulation=False),  # native only
                    capability=".".join(map(str, torch.cuda.get_device_capability())))
    else:
        info.update(gpu="none (CPU)", bf16=False)
    full = get_config("full", hardware="none")  # the profile itself; its plan comes below
    info["flash_attn"] = flash_attn_usable()
    info["attention"] = attention_backend(full)
    if torch.cuda.is_available():  # what the full profile's GPU plan chooses here (hardware/plan.py)
        from .hardware.plan import choose
        from .hardware.cards import detect
        plan = choose(full, detect())
        info["plan"] = ", ".join(f"{k}={v}" for k, v in plan.fields.items())
    return info


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (and transformers' helper, which covers CUDA)."""
    import numpy as np
    import torch
    from transformers import set_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_seed(seed)


def format_table(d: dict) -> str:
    width = max(len(k) for k in d)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in d.items())
