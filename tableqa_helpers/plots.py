"""Figures for the notebooks and the README (matplotlib only)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

TIER_COLORS = {"base": "#9e9e9e", "a": "#1f77b4", "merged": "#17becf", "b": "#d62728"}


def _save(fig, path):
    """Write the figure atomically (PNG unless the suffix says otherwise) and return it."""
    if path:
        import io

        from .io import atomic_write_bytes

        buf = io.BytesIO()
        fig.savefig(buf, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_loss_curves(log_history: list[dict], title: str = "loss", path=None):
    """Training and evaluation loss against optimizer steps, from a Trainer's log history."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation", color="#d62728")
    ax.set(xlabel="optimizer step", ylabel="loss (answer tokens)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_token_histogram(counts: list[dict], path=None):
    """Histograms of visual and text tokens per sample under the pixel budget."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, color in zip(axes, ("visual", "text"), ("#1f77b4", "#ff7f0e")):
        ax.hist([c[key] for c in counts], bins=20, color=color, alpha=0.85)
        ax.set(xlabel=f"{key} tokens per sample", ylabel="samples")
        ax.grid(alpha=0.3)
    total = sum(c["visual"] for c in counts) / max(1, sum(c["total"] for c in counts))
    fig.suptitle(f"{len(counts)} samples; {total:.0%} of tokens are visual")
    fig.tight_layout()
    return _save(fig, path)


def show_samples(rows, n: int = 3, width: int = 70, path=None):
    """Table images with their question and answer, side by side."""
    rows = [rows[i] for i in range(min(n, len(rows)))]
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 6.5), squeeze=False)
    for ax, row in zip(axes[0], rows):
        ax.imshow(row["image"])
        ax.axis("off")
        q = textwrap.fill("Q: " + row["question"], width)
        a = textwrap.fill("A: " + row["answer"], width)
        ax.set_title(f"{row['table_id']}  ({row['image'].size[0]}x{row['image'].size[1]} px)",
                     fontsize=9)
        ax.text(0, -0.02, q + "\n\n" + a, transform=ax.transAxes, va="top", fontsize=7.5)
    fig.tight_layout()
    return _save(fig, path)


def plot_stage_comparison(rows: list[dict], path=None, metrics=("correct", "f1", "rouge_l")):
    """Bar chart of each stage's metrics overall, and of accuracy per question type if known."""
    overall = [r for r in rows if r.get("question_type", "all") == "all"]
    types = sorted({r["question_type"] for r in rows if r.get("question_type", "all") != "all"})
    stages = [r["stage"] for r in overall]
    ncols = 2 if types else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(stages))
    for i, r in enumerate(overall):
        xs = [m + (i - (len(stages) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(xs, [r[m] for m in metrics], width, label=r["stage"],
               color=TIER_COLORS.get(r["stage"]))
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set(ylim=(0, 1), ylabel="mean", title="stages, all questions")
    ax.legend(title="stage")
    ax.grid(alpha=0.3, axis="y")
    if types:
        ax = axes[0][1]
        for i, stage in enumerate(stages):
            by = {r["question_type"]: r["correct"] for r in rows if r["stage"] == stage}
            xs = [t + (i - (len(stages) - 1) / 2) * width for t in range(len(types))]
            ax.bar(xs, [by.get(t, 0) for t in types], width, label=stage,
                   color=TIER_COLORS.get(stage))
        ax.set_xticks(range(len(types)), types, rotation=20)
        ax.set(ylim=(0, 1), ylabel="correct (final answer)", title="by question type")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def plot_pipeline(path=None):
    """The recipe at a glance: data -> Tier A -> merge -> Tier B -> inference and evaluation."""
    steps = [("00 setup", "profile, stand-ins,\nenvironment check"),
             ("01 data", "tables -> chats,\ntoken budget, checks"),
             ("02 Tier A", "LoRA: LLM q/k/v/o/mlp\n+ merger (vision frozen)"),
             ("03 merge", "fold Tier A into\nthe base, verify logits"),
             ("04 Tier B", "LoRA: qkv/proj of the\nlast N vision blocks"),
             ("05 inference", "batched generation,\nmetrics, browser")]
    fig, ax = plt.subplots(figsize=(13, 2.4))
    ax.set_xlim(0, len(steps) * 2.2)
    ax.set_ylim(0, 2)
    ax.axis("off")
    colors = ["#eeeeee", "#fff3e0", "#e3f2fd", "#e0f7fa", "#ffebee", "#e8f5e9"]
    for i, ((name, text), color) in enumerate(zip(steps, colors)):
        x = i * 2.2 + 0.1
        ax.add_patch(matplotlib.patches.FancyBboxPatch((x, 0.3), 1.8, 1.4,
                     boxstyle="round,pad=0.05", fc=color, ec="#555555"))
        ax.text(x + 0.9, 1.35, name, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x + 0.9, 0.8, text, ha="center", va="center", fontsize=8.5)
        if i < len(steps) - 1:
            ax.annotate("", xy=(x + 2.15, 1.0), xytext=(x + 1.92, 1.0),
                        arrowprops=dict(arrowstyle="->", lw=1.5))
    fig.suptitle("Qwen2.5-VL on Visual-TableQA: the two-tier LoRA recipe", fontsize=12)
    return _save(fig, path)
