"""4-bit QLoRA loading: the bitsandbytes settings of ``quantize=4bit``.
"""
from __future__ import annotations


# ---- bitsandbytes ---------------------------------------------------------------------------
SKIP_4BIT = ["model.visual", "lm_head"]  # kept in the compute dtype (vision fidelity; the head)


def bnb_config(cfg):
    """The BitsAndBytesConfig of ``quantize=4bit``; a clear ConfigError when it cannot run."""
    import importlib.util

    import torch

    from ..config import ConfigError
    from .load import torch_dtype

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantize=4bit needs bitsandbytes: pip install bitsandbytes (or "
                          "pip install 'tableqa-helpers[gpu]'), or set --set quantize=none")
    if not torch.cuda.is_available():  # bitsandbytes >= 0.48 also runs 4-bit on the CPU (slowly)
        import bitsandbytes
        from packaging.version import Version

        if Version(bitsandbytes.__version__) < Version("0.48"):
            raise ConfigError(f"quantize=4bit without a GPU needs bitsandbytes >= 0.48 (found "
                              f"{bitsandbytes.__version__}); or set --set quantize=none")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(cfg),
                              llm_int8_skip_modules=list(SKIP_4BIT))
