"""Collect one benchmark run's records into a markdown table (stdout and OUT/summary.md).

    python -m bench.report --out DIR
Reads DIR/ours.jsonl, DIR/tutorial.jsonl and the reference Tier A run's RESULT line in
DIR/seed_tier_a.log.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

PEAK = 989.4e12


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _seed(path: Path) -> dict | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def _f(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def build(out: Path) -> str:
    ours, tut, seed = _jsonl(out / "ours.jsonl"), _jsonl(out / "tutorial.jsonl"), _seed(out / "seed_tier_a.log")
    env = next((r for r in ours if r["part"] == "env"), {})
    data = next((r for r in ours if r["part"] == "data"), {})
    flops = next((r for r in ours if r["part"] == "flops"), {})
    fa, fb = flops.get("tier_a_per_sample"), flops.get("tier_b_per_sample")
    lines = [f"card: {env.get('card', '?')} ({env.get('card_gib', '?')} GiB); torch "
             f"{env.get('torch', '?')}, transformers {env.get('transformers', '?')}, peft "
             f"{env.get('peft', '?')}, flash-attn {'yes' if env.get('flash_attn') else 'no'}; "
             f"shape {env.get('shape', '?')} ({env.get('params_b', '?')} B params, random weights)",
             f"data: {_f(data.get('tokens'), 0)} tokens/sample, {_f(data.get('visual'), 0)} visual, "
             f"{_f(data.get('labelled'), 0)} labelled (answer) tokens", ""]
    lines += ["| training run | micro-batch x accum, checkpointing | samples/s | tokens/s | "
              "peak GiB (alloc/reserved) | MFU | x tutorial |", "|---|---|---|---|---|---|---|"]

    def mfu(rate, fl):
        return None if not rate or not fl or env.get("card") == "cpu" else rate * fl / PEAK

    base_a = seed["samples_per_s"] if seed else None
    if seed:
        lines.append(f"| tutorial Tier A (reference script) | {seed['bs']} x {seed['ga']}, yes | "
                     f"{_f(seed['samples_per_s'], 3)} | {seed['tok_per_s']} | {_f(seed['peak_gib'], 1)} / - | "
                     f"{_f(mfu(seed['samples_per_s'], fa), 3)} | 1.0 |")
    ta = next((r for r in tut if r["part"] == "tutorial_tier_a"), None)
    if ta:
        lines.append(f"| tutorial Tier A (bench.tutorial, our data) | {ta['batch_size']} x {ta['grad_accum']}, yes | "
                     f"{_f(ta['samples_per_s'], 3)} | {ta['tokens_per_s']} | {_f(ta['peak_alloc_gib'], 1)} / "
                     f"{_f(ta['peak_reserved_gib'], 1)} | {_f(ta['mfu'], 3)} | "
                     f"{_f(ta['samples_per_s'] / base_a if base_a else None)} |")
    tb = next((r for r in tut if r["part"] == "tutorial_tier_b"), None)
    base_b = tb["samples_per_s"] if tb else None
    for tier, base in (("a", base_a), ("b", base_b)):
        if tier == "b" and tb:
            lines.append(f"| tutorial Tier B (bench.tutorial) | {tb['batch_size']} x {tb['grad_accum']}, yes | "
                         f"{_f(tb['samples_per_s'], 3)} | {tb['tokens_per_s']} | {_f(tb['peak_alloc_gib'], 1)} / "
                         f"{_f(tb['peak_reserved_gib'], 1)} | {_f(tb['mfu'], 3)} | 1.0 |")
        for r in ours:
            if r["part"] != f"tier_{tier}":
                continue
            what = f"ours Tier {tier.upper()} {r['variant']} ({r['preset']}{', compiled' if r.get('compiled') else ''})"
            ck = r["checkpointing"]
            ck = "no" if not ck else ("yes" if ck is True else f"every {ck}nd block")
            setting = f"{r['batch_size']} x {r['grad_accum']}, {ck}"
            if r.get("error"):
                lines.append(f"| {what} | {setting} | {r['error'][:60]} | | {_f(r.get('peak_alloc_gib'), 1)} | | |")
                continue
            rows = [("", r["samples_per_s"])]
            if tier == "a":
                rows = [(", epoch 1 (cache misses)", r["epoch1_samples_per_s"]),
                        (", epoch 2 (cache hits)", r["epoch2_samples_per_s"]),
                        (", 2-epoch average", r["samples_per_s"])]
                for i in (1, 2):  # an epoch's first step also waits for the loader to start
                    if f"epoch{i}_after_first_step_samples_per_s" in r:
                        rows.append((f", epoch {i} after its first step",
                                     r[f"epoch{i}_after_first_step_samples_per_s"]))
            for label, rate in rows:
                tok = round(rate * data.get("tokens", 0))
                lines.append(f"| {what}{label} | {setting} | {_f(rate, 3)} | {tok} | "
                             f"{_f(r['peak_alloc_gib'], 1)} / {_f(r['peak_reserved_gib'], 1)} | "
                             f"{_f(mfu(rate, fa if tier == 'a' else fb), 3)} | "
                             f"{_f(rate / base if base else None)} |")
    inf = [r for r in ours if r["part"] == "infer" and not r.get("error")]
    if inf:
        lines += ["", "| inference | batch | max_new_tokens | samples | answered samples/s | "
                  "peak GiB | x tutorial |", "|---|---|---|---|---|---|---|"]
        t = next((r for r in inf if r["batch"] == 1), None)
        for r in inf:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['max_new_tokens']} | {r['samples']} | "
                         f"{_f(r['samples_per_s'], 3)} | {_f(r['peak_alloc_gib'], 1)} | "
                         f"{_f(r['samples_per_s'] / t['samples_per_s'] if t else None)} |")
    prof_gen = {r["new_tokens"]: r for r in ours if r["part"] == "infer_profile" and not r.get("error")}
    if {1, 17} <= set(prof_gen) and prof_gen[17]["gpu_busy_s"] > 0:  # 16 steps more; a GPU
        one, more = prof_gen[1], prof_gen[17]
        step_ms = 1000 * (more["gpu_busy_s"] - one["gpu_busy_s"]) / 16
        lines += ["", f"{one['variant']}, batch {one['batch']}, profiled: GPU kernels busy "
                  f"{one['gpu_busy_s']} s for the prefill and first token, {_f(step_ms, 1)} ms per "
                  f"decoding step after it ({one['seconds_profiled']} / {more['seconds_profiled']} s "
                  "wall under the profiler)"]
    vis = next((r for r in ours if r["part"] == "vision" and not r.get("error")), None)
    if vis:
        lines += ["", f"vision tower forward, 3 images ({vis['patches']} patches), no_grad: stock per-window "
                  f"SDPA {vis['stock_s']} s, grouped {vis['grouped_s']} s ({vis['speedup']}x; relative "
                  f"difference {vis['rel_diff']:.1e})"]
    for r in ours:
        if r["part"] == "profile_ours" and not r.get("error"):
            busy = [f"{k} {r[k + '_gpu_busy_s']} s" for k in ("hit", "miss") if k + "_gpu_busy_s" in r]
            lines += ["", f"our Tier A micro-batch of {r['batch_size']} ({r['tokens']} tokens), bf16 autocast"
                      f"{', compiled blocks' if r.get('compiled') else ', eager'}: "
                      f"fwd+bwd {r['hit_fwd_bwd_s']} s with cached vision, {r['miss_fwd_bwd_s']} s computing it; "
                      f"forward only {r['hit_fwd_nograd_s']} s"
                      + (f"; profiled, GPU kernels busy: {', '.join(busy)}" if busy else "")]
    prof = next((r for r in ours if r["part"] == "profile" and not r.get("error")), None)
    if prof:
        lines += ["", "tutorial Tier A micro-batch (3 samples, its LoRA targets, checkpointing + input-grad "
                  f"hooks, full logits): {prof['step_stock_s']} s with stock attention, "
                  f"{prof['step_grouped_s']} s with grouped attention ({prof.get('step_stock_nocudnn_s', '-')} s / "
                  f"{prof.get('step_grouped_nocudnn_s', '-')} s without cuDNN attention); its vision tower with a graph "
                  f"(fwd+bwd) {prof['vision_fwd_bwd_stock_s']} s stock / {prof['vision_fwd_bwd_grouped_s']} s grouped, "
                  f"no_grad {prof['vision_nograd_stock_s']} s / {prof['vision_nograd_grouped_s']} s; "
                  f"profiled step: GPU kernels busy {prof.get('gpu_busy_s', '-')} s, "
                  f"{prof.get('sdpa_calls', '-')} SDPA calls, {prof.get('sync_calls', '-')} host syncs"]
    if fa:
        lines += ["", f"model FLOPs/sample: Tier A {fa:.3g}, Tier B {fb:.3g} (ceiling at 989 TFLOP/s: "
                  f"{PEAK / fa:.1f} / {PEAK / fb:.1f} samples/s); MFU = samples/s x FLOPs/sample / 989e12"]
    errs = [r for r in ours + tut if r.get("error") and r["part"] not in ("tier_a", "tier_b")]
    for r in errs:
        lines.append(f"ERROR in {r['part']}: {r['error']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".bench_out")
    a = ap.parse_args(argv)
    text = build(Path(a.out))
    (Path(a.out) / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
