"""`model/fused.py`: liger-kernel's RMSNorm / SwiGLU per model instance, optional.

liger's kernels are Triton kernels and run on GPUs only: here (CPU) a stand-in module with
liger's call signatures and reference math checks the wiring (which modules, which arguments,
undo, the trainer's on-for-the-run-only rule); the kernels' numerics are compared with the plain
path on the GPU by `bench.bench --parts fused_check` (bench/RESULTS.md).
"""
from __future__ import annotations

import sys
import types

import pytest
import torch

from tableqa_helpers.config import ConfigError, get_config
from tableqa_helpers.data import TrainCollator
from tableqa_helpers.model import fused
from tableqa_helpers.train import fast_loss
from test_fast import _loss_and_grads, _model, _same


class _RMS(torch.autograd.Function):  # liger_kernel.ops.rms_norm.LigerRMSNormFunction's signature
    calls = []

    @staticmethod
    def forward(ctx, X, W, eps, offset=0.0, casting_mode="llama", in_place=True, row_mode=None):
        _RMS.calls.append((eps, offset, casting_mode, in_place))
        ctx.save_for_backward(X, W)
        ctx.eps = eps
        return _RMS.ref(X, W, eps)

    @staticmethod
    def ref(X, W, eps):
        x = X.float()
        return W * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).to(X.dtype)

    @staticmethod
    def backward(ctx, g):
        X, W = ctx.saved_tensors
        with torch.enable_grad():
            X, W = X.detach().requires_grad_(), W.detach().requires_grad_()
            return (*torch.autograd.grad(_RMS.ref(X, W, ctx.eps), (X, W), g), None, None, None,
                    None, None)


class _SiLUMul(torch.autograd.Function):  # liger_kernel.ops.swiglu.LigerSiLUMulFunction's
    calls = 0

    @staticmethod
    def forward(ctx, a, b, gate_multiplier=1.0, down_multiplier=1.0):
        _SiLUMul.calls += 1
        ctx.save_for_backward(a, b)
        return torch.nn.functional.silu(a) * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        with torch.enable_grad():
            a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
            return (*torch.autograd.grad(torch.nn.functional.silu(a) * b, (a, b), g), None, None)


@pytest.fixture
def fake_liger(monkeypatch):
    """liger_kernel.ops.{rms_norm,swiglu} with liger's signatures and reference math."""
    mods = {"liger_kernel": types.ModuleType("liger_kernel"),
            "liger_kernel.ops": types.ModuleType("liger_kernel.ops"),
            "liger_kernel.ops.rms_norm": types.ModuleType("liger_kernel.ops.rms_norm"),
            "liger_kernel.ops.swiglu": types.ModuleType("liger_kernel.ops.swiglu")}
    mods["liger_kernel.ops.rms_norm"].LigerRMSNormFunction = _RMS
    mods["liger_kernel.ops.swiglu"].LigerSiLUMulFunction = _SiLUMul
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    _RMS.calls.clear()
    _SiLUMul.calls = 0


def _norms_and_mlps(model):
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    mlps = [m for m in model.modules() if hasattr(m, "gate_proj") and hasattr(m, "down_proj")]
    return norms, mlps


@pytest.mark.parametrize("tier", ["a", "b"])
def test_liger_wiring_same_loss_and_grads_and_undo(tiny_cfg, processor, dataset, fake_liger, tier):
    model = _model(tiny_cfg, tier)
    batch = TrainCollator(processor, tiny_cfg.system_prompt, tiny_cfg.max_length)(
        [dataset["train"][i] for i in range(2)])
    plain = _loss_and_grads(model, lambda: fast_loss(model, batch))
    norms, mlps = _norms_and_mlps(model)
    assert len(norms) > 0 and len(mlps) > 0
    assert fused.use_liger_kernels(model) == len(norms) + len(mlps)
    try:
        liger = _loss_and_grads(model, lambda: fast_loss(model, batch))
    finally:
        assert fused.use_plain_kernels(model) == len(norms) + len(mlps)
    _same(plain, liger)
    # every norm went through the kernel with its own eps, llama casting, gradients not in place
    eps = {m.variance_epsilon for m in norms}
    assert _RMS.calls and {c[0] for c in _RMS.calls} <= eps and \
        {c[1:] for c in _RMS.calls} == {(0.0, "llama", False)}
    assert _SiLUMul.calls > 0
    assert not any("forward" in m.__dict__ for m in norms + mlps)  # the class's forward again
    _RMS.calls.clear()
    fast_loss(model, batch)
    assert not _RMS.calls  # undone: nothing reaches the kernels


def test_fused_wanted_follows_config_and_names_what_is_missing(tiny_cfg, monkeypatch):
    assert get_config("full").fused_kernels == "off"  # measured slower than compiled blocks
    monkeypatch.setattr(fused, "liger_missing", lambda: "liger-kernel is not installed (pip ...)")
    tiny_cfg.fused_kernels = "off"
    assert fused.fused_wanted(tiny_cfg) is False
    tiny_cfg.fused_kernels = "liger"
    with pytest.raises(RuntimeError, match="liger-kernel is not installed"):
        fused.fused_wanted(tiny_cfg)
    monkeypatch.setattr(fused, "liger_missing", lambda: None)
    for choice, want in (("liger", True), ("off", False)):
        tiny_cfg.fused_kernels = choice
        assert fused.fused_wanted(tiny_cfg) is want
    with pytest.raises(ConfigError, match="fused_kernels"):
        get_config("unit", root=str(tiny_cfg.root), fused_kernels="auto")


def test_liger_missing_on_this_machine_is_explained():
    why = fused.liger_missing()
    if why is None:
        pytest.skip("liger-kernel, triton and a GPU are all here")
    assert any(w in why for w in ("liger-kernel", "triton", "CUDA"))


def test_trainer_uses_liger_for_the_run_only(tiny_cfg, processor, dataset, fake_liger, monkeypatch):
    """With liger wanted, `train()` runs the fused forwards and puts the plain ones back after."""
    from tableqa_helpers.train import trainer as train_mod

    monkeypatch.setattr(fused, "liger_missing", lambda: None)
    tiny_cfg.fused_kernels = "liger"
    model = _model(tiny_cfg, "a")
    trainer = train_mod.make_trainer(
        model, processor, tiny_cfg, "a", dataset["train"].select(range(2)), None,
        output_dir=tiny_cfg.run_dir / "ckpt", max_steps=1, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, disable_tqdm=True, use_cpu=True)
    assert trainer.fused_kernels is True
    trainer.train()
    assert _RMS.calls and _SiLUMul.calls  # the step ran the fused forwards
    norms, mlps = _norms_and_mlps(model)
    assert not any("forward" in m.__dict__ for m in norms + mlps)
