"""GPU card classes (memory, compute capability, assumed speed), detecting this machine's card,
and whether flash-attn is usable here.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import torch

GIB = 2 ** 30
QUANTIZE = ("none", "4bit")


@dataclass(frozen=True)
class Card:
    """A GPU class: memory as torch reports it, native bf16, flash-attn 2 support, speed."""

    name: str
    label: str
    memory_gib: float
    capability: tuple[int, int]
    peak_tflops: float  # datasheet dense bf16 (fp16 without bf16) tensor FLOP/s, in TFLOP/s
    utilisation: float  # assumed fraction of the peak a LoRA step achieves (an assumption)

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    @property
    def flash_attn(self) -> bool:  # flash-attn 2 needs Ampere or newer
        return self.capability >= (8, 0)

    @property
    def tflops(self) -> float:
        return self.peak_tflops * self.utilisation


# Card classes the plan knows (Colab, Kaggle, common clouds). Utilisation: the H100's is the
# measured Tier A epoch-1 MFU of bench/RESULTS.md (0.216: compiled blocks, every image's vision
# work included); the others are assumptions (slower cards lose less of their peak to launches).
CARDS = {c.name: c for c in (
    Card("t4", "Tesla T4 16GB (Colab, Kaggle)", 14.7, (7, 5), 65.0, 0.30),
    Card("p100", "Tesla P100 16GB (Kaggle)", 15.9, (6, 0), 18.7, 0.30),
    Card("l4", "L4 24GB (Colab)", 22.0, (8, 9), 121.0, 0.30),
    Card("a10g", "A10G 24GB (AWS)", 22.0, (8, 6), 70.0, 0.30),
    Card("a100-40", "A100 40GB (Colab)", 39.4, (8, 0), 312.0, 0.25),
    Card("a100-80", "A100 80GB", 79.1, (8, 0), 312.0, 0.25),
    Card("h100", "H100 80GB SXM", 79.1, (9, 0), 989.0, 0.216),
)}


def detect() -> Card | None:
    """The GPU of this process (its LOCAL_RANK under `accelerate launch`), or None on a CPU.

    A known card keeps its assumed speed; another gets one from its generation.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0"))
    props = torch.cuda.get_device_properties(index)
    memory = props.total_memory / GIB
    capability = (props.major, props.minor)
    name = props.name.lower()
    for key, words in (("h100", ("h100",)), ("a100-80", ("a100",)), ("a100-40", ("a100",)),
                       ("l4", ("l4",)), ("a10g", ("a10",)), ("t4", ("t4",)), ("p100", ("p100",))):
        known = CARDS[key]
        if any(w in name for w in words) and abs(known.memory_gib - memory) < 8:
            return dataclasses.replace(known, label=props.name, memory_gib=round(memory, 1),
                                       capability=capability)
    like = CARDS["h100" if capability >= (9, 0) else "a100-80" if capability >= (8, 0) else "t4"]
    return Card(name.replace(" ", "-"), props.name, round(memory, 1), capability,
                like.peak_tflops, like.utilisation)


def card(name: str) -> Card:
    """A known card class by name (see `CARDS`)."""
    from ..config import ConfigError

    if name not in CARDS:
        raise ConfigError(f"unknown GPU class {name!r} (hardware / --gpu); known: "
                          f"{', '.join(CARDS)}")
    return CARDS[name]

@functools.lru_cache(maxsize=None)
def flash_attn_usable() -> bool:
    """True when flash-attn imports and the GPU is Ampere or newer."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True
