"""Where a mini-base pretraining step spends its time (GPU), on batches it has never seen.

``python -m bench.pretrain_speed [--batch 128] [--new 8]``: every variant trains on its own
`--new` fresh batches of the reading curriculum (collated beforehand, so no data loading in the
numbers; fresh, because in pretraining every batch has new shapes), prints the median step, and
the torch profiler's top host operators for the last variant. Variants:
cudnn-sdpa (the stock kernel choice), no-cudnn-sdpa (`sdpa_without_cudnn`), +linear-patch
(`use_linear_patch_embed`) and the same on one repeated batch (the floor).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from tableqa_helpers.model.fast import (sdpa_without_cudnn, use_grouped_vision_attention,
                                        use_linear_patch_embed)
from tableqa_helpers.offline.mini import ReadingCollator, ReadingSet, build_mini_untrained, pixel_values


def _step(model, batch, opt, ctx):
    with ctx(), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _median(model, batches, opt, ctx, processor) -> float:
    times = []
    for raw in batches:
        torch.cuda.synchronize()
        t = time.perf_counter()
        _step(model, pixel_values(raw, processor.image_processor, "cuda"), opt, ctx)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--new", type=int, default=8, help="fresh batches per variant")
    args = p.parse_args(argv)
    model, processor = build_mini_untrained(0)
    use_grouped_vision_attention(model)
    model.cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = args.batch * args.new
    loader = torch.utils.data.DataLoader(ReadingSet(5 * n, seed=7), batch_size=args.batch,
                                         num_workers=12, collate_fn=ReadingCollator(processor))
    sets = [list(b) for b in zip(*[iter(loader)] * args.new)]  # 5 sets of `new` batches
    null = contextlib.nullcontext
    _median(model, sets[0][:3], opt, null, processor)  # warm-up: allocator, kernels, AdamW state
    rows = [("cudnn-sdpa", _median(model, sets[1], opt, null, processor)),
            ("no-cudnn-sdpa", _median(model, sets[2], opt, sdpa_without_cudnn, processor))]
    use_linear_patch_embed(model)
    rows.append(("+linear-patch", _median(model, sets[3], opt, sdpa_without_cudnn, processor)))
    rows.append(("+linear-patch, one repeated batch",
                 _median(model, [sets[3][0]] * args.new, opt, sdpa_without_cudnn, processor)))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        _median(model, sets[4][:3], opt, sdpa_without_cudnn, processor)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20,
                                    max_name_column_width=50))
    print(f"| variant (batch {args.batch}, {torch.cuda.get_device_name()}) | median step (s) |")
    print("| --- | --- |")
    for name, s in rows:
        print(f"| {name} | {s:.3f} |")


if __name__ == "__main__":
    main()
