"""The fast training loss: same math as ``model(**batch).loss``, less work (see `trainer`).

`fast_loss` runs the language-model head on labelled positions only, the frozen vision tower
under `no_grad` with its output kept in a `VisionCache` (host memory), and PEFT's float32 round
trip of LoRA inputs skipped under autocast (`_NoLoraInputCast`).
"""
from __future__ import annotations

import hashlib
import inspect
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.collate import IGNORE


class _GroupPatches(nn.Module):
    """Stands in for the merger: returns the 2x2 patch groups the merger would read."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x.reshape(-1, self.width)


class VisionCache:
    """Frozen vision-block outputs per image: an LRU in memory bounded in bytes, and optionally
    a second tier of files on disk (bounded too; files written atomically, kept across runs).

    `disk_dir` must be specific to the vision weights (see `model_fingerprint`): a key names the
    image and pixel budget only.
    """

    def __init__(self, max_bytes: int, disk_dir: str | Path | None = None, disk_max_bytes: int = 0):
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.disk_hits = 0
        self.disk_dir = Path(disk_dir) if disk_dir and disk_max_bytes > 0 else None
        self.disk_max_bytes = disk_max_bytes
        self.disk_bytes = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            self.disk_bytes = sum(f.stat().st_size for f in self.disk_dir.glob("*.pt"))

    def _file(self, key: str) -> Path:
        return self.disk_dir / f"{key}.pt"

    def get(self, key: str):
        t = self.items.get(key)
        if t is not None:
            self.items.move_to_end(key)
            self.hits += 1
            return t
        if self.disk_dir is not None and self._file(key).exists():
            try:
                t = torch.load(self._file(key), map_location="cpu", weights_only=True)
            except Exception:  # a torn or foreign file: recompute
                t = None
            if t is not None:
                self.hits += 1
                self.disk_hits += 1
                self._remember(key, t)
                return t
        self.misses += 1
        return None

    # From a GPU, copy to pinned memory asynchronously (on the current stream: the host goes on
    # queueing work instead of waiting for the vision tower; copies back on that stream are
    # ordered after it). Off: on an H100 it gave epoch 2 +5% and epoch 1 nothing
    # (bench/RESULTS.md, 2026-12-07), while the pinned pool's power-of-2 blocks hold 24 MiB
    # images in 32 MiB, a third more host memory for the same cache.
    pinned = False

    def host_copy(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU copy of `t` for the cache (pinned and asynchronous if `pinned`, from a GPU)."""
        t = t.detach()
        if t.device.type != "cuda" or not self.pinned:
            return t.to("cpu", copy=True)
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        return host

    @staticmethod
    def nbytes(t: torch.Tensor) -> int:
        """Host memory `t` holds: PyTorch's pinned-memory pool rounds blocks up to a power of 2."""
        size = t.numel() * t.element_size()
        return 1 << max(size - 1, 0).bit_length() if t.is_pinned() else size

    def _remember(self, key: str, t: torch.Tensor) -> None:
        size = self.nbytes(t)
        if size > self.max_bytes or key in self.items:
            return
        while self.bytes + size > self.max_bytes and self.items:
            _, old = self.items.popitem(last=False)
            self.bytes -= self.nbytes(old)
        self.items[key] = t
        self.bytes += size

    def put(self, key: str, t: torch.Tensor) -> None:
        """Keep `t` (on any device; the cache holds a CPU copy, see `pinned`)."""
        t = self.host_copy(t)
        self._remember(key, t)
        if self.disk_dir is None:
            return
        path = self._file(key)
        size = t.numel() * t.element_size()
        if path.exists() or self.disk_bytes + size > self.disk_max_bytes:
            return
        if t.is_pinned():  # the asynchronous copy must have landed before the file is written
            torch.cuda.current_stream().synchronize()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(t.contiguous(), tmp)
        os.replace(tmp, path)
        self.disk_bytes += path.stat().st_size

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits,
                "items": len(self.items), "gib": round(self.bytes / 2 ** 30, 2),
                "disk_gib": round(self.disk_bytes / 2 ** 30, 2)}


def model_fingerprint(model) -> str:
    """A short hash of the vision tower's weights (samples of its first and last layers)."""
    visual = _inner(model).model.visual
    h = hashlib.sha256()
    for t in (visual.patch_embed.proj.weight, visual.blocks[-1].mlp.down_proj.weight):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().reshape(-1)[:65536].float().cpu().numpy().tobytes())
    h.update(str(visual.dtype).encode())
    return h.hexdigest()[:16]


def vision_frozen(model) -> bool:
    """True when nothing in the vision tower before the merger is trainable."""
    visual = _inner(model).model.visual
    return not any(p.requires_grad for n, p in visual.named_parameters()
                   if not n.startswith("merger."))


def grouped_vision_features(visual, pixel_values, grid_thw) -> list[torch.Tensor]:
    """Vision-block outputs per image, as the merger's input groups in natural token order."""
    merger = visual.merger
    visual.merger = _GroupPatches(merger.hidden_size)
    try:
        grouped = visual(pixel_values.type(visual.dtype), grid_thw=grid_thw).pooler_output
    finally:
        visual.merger = merger
    sizes = (grid_thw.prod(-1) // visual.spatial_merge_size ** 2).tolist()
    return list(torch.split(grouped, sizes))


def labelled_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, the head applied only there."""
    shift = labels[:, 1:]
    keep = shift != IGNORE
    h = hidden[:, :-1][keep]
    logits = lm_head(h).float()
    return F.cross_entropy(logits, shift[keep], reduction="mean")


def _inner(model):
    """The Qwen2_5_VLForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _takes_encoder_outputs(base) -> bool:
    return "mm_encoder_outputs" in inspect.signature(base.forward).parameters


def forward_with_image_embeds(base, inputs: dict, image_embeds: list[torch.Tensor],
                              use_argument: bool | None = None):
    """`Qwen2_5_VLModel.forward` with the merged image embeddings given instead of pixels.

    transformers >= 5.2x takes them as ``mm_encoder_outputs``; older 5.x releases do not, and
    there `get_image_features` is shadowed on this instance for the one call (same result: the
    model scatters them into the image-token positions and builds the 3D positions as usual).
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    given = BaseModelOutputWithPooling(pooler_output=tuple(image_embeds))
    if use_argument is None:
        use_argument = _takes_encoder_outputs(base)
    if use_argument:
        return base(**inputs, mm_encoder_outputs={"image": given}, use_cache=False)

    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        return given

    base.get_image_features = get_image_features
    try:
        placeholder = torch.empty(0, device=image_embeds[0].device)
        return base(**inputs, pixel_values=placeholder, use_cache=False)
    finally:
        del base.get_image_features


def _lora_layers(model) -> list:
    """PEFT's LoRA layers of the model (found once, then remembered on the model object)."""
    found = model.__dict__.get("_tableqa_lora_layers")
    if found is None:
        found = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
        model.__dict__["_tableqa_lora_layers"] = found
    return found


class _NoLoraInputCast:
    """Under autocast, stop PEFT from casting each LoRA input to the adapter's float32.

    PEFT keeps adapters in float32 and casts every input up (a float32 copy of the activation per
    adapted layer, 18,944 wide for down_proj), applies dropout there, then autocast casts it back
    to bf16 for the matmul. bf16 -> float32 -> bf16 is exact, so skipping the round trip gives the
    same matmul; only dropout's mask is drawn on the bf16 tensor (same distribution).
    """

    def __init__(self, model, active: bool):
        self.layers = _lora_layers(model) if active else []

    def __enter__(self):
        for m in self.layers:
            m.cast_input_dtype_enabled = False

    def __exit__(self, *exc):
        for m in self.layers:
            m.cast_input_dtype_enabled = True


# What `fast_loss` switched on for its forward pass; checkpointed blocks recompute under the same
# settings in the backward pass (`_recompute_like_forward`), else the recomputed tensors differ.
_FORWARD_STATE = {"active": False, "no_lora_cast": False}


def fast_loss(model, inputs: dict, cache: VisionCache | None = None) -> torch.Tensor:
    """The model's loss on a batch, computed with the savings described in the module doc."""
    from ..model.fast import sdpa_without_cudnn

    device_type = inputs["input_ids"].device.type
    no_cast = torch.is_autocast_enabled(device_type)
    previous = dict(_FORWARD_STATE)
    _FORWARD_STATE.update(active=True, no_lora_cast=no_cast)
    try:
        with sdpa_without_cudnn(), _NoLoraInputCast(model, no_cast):
            return _fast_loss(model, inputs, cache)
    finally:
        _FORWARD_STATE.update(previous)


class _Recompute:
    """The forward pass's settings (SDPA backends, LoRA input casting), for a recomputation."""

    def __init__(self, model, state: dict):
        import contextlib

        self.stack = contextlib.ExitStack()
        self.model, self.state = model, state

    def __enter__(self):
        from ..model.fast import sdpa_without_cudnn

        if self.state["active"]:
            self.stack.enter_context(sdpa_without_cudnn())
            self.stack.enter_context(_NoLoraInputCast(self.model, self.state["no_lora_cast"]))
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


def _recompute_like_forward(model):
    """`context_fn` for torch.utils.checkpoint: nothing extra in the forward (the caller's
    settings are on), the forward's settings again when the backward pass recomputes."""
    import contextlib

    return contextlib.nullcontext(), _Recompute(model, dict(_FORWARD_STATE))


def _fast_loss(model, inputs: dict, cache: VisionCache | None) -> torch.Tensor:
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keys = inputs.pop("image_keys", None)
    inputs.pop("length", None)
    net = _inner(model)
    visual = net.model.visual
    if inputs.get("pixel_values") is not None and vision_frozen(model):
        pixel_values, grid = inputs.pop("pixel_values"), inputs["image_grid_thw"]
        groups = _cached_groups(visual, pixel_values, grid, keys, cache)
        width = visual.merger.hidden_size // visual.spatial_merge_size ** 2
        merged = [visual.merger(g.to(pixel_values.device, visual.dtype, non_blocking=True)
                                .reshape(-1, width)) for g in groups]
        out = forward_with_image_embeds(net.model, inputs, merged)
    else:
        out = net.model(**inputs, use_cache=False)
    return labelled_loss(out.last_hidden_state, labels, net.lm_head)


def _cached_groups(visual, pixel_values, grid, keys, cache):
    sizes = grid.prod(-1).tolist()
    if cache is None or keys is None:
        with torch.no_grad():
            return grouped_vision_features(visual, pixel_values, grid)
    found = [cache.get(k) for k in keys]
    missing = [i for i, t in enumerate(found) if t is None]
    if missing:
        chunks = torch.split(pixel_values, sizes)
        with torch.no_grad():
            fresh = grouped_vision_features(
                visual, torch.cat([chunks[i] for i in missing]), grid[missing])
        for i, t in zip(missing, fresh):
            found[i] = t
            cache.put(keys[i], t)
    return found
