"""How soon does a fresh mini base start to read? A proxy task for pretraining knobs.

Each sample is a 224x224 white image with one number drawn on it and the instruction to
transcribe it; the model is `offline.mini`'s, fresh (or with the vision tower of a checkpoint,
`--vision-init`), with the knobs given on the command line
(the language model's RoPE base and M-RoPE sections, its init range, learning rate, where the
number is drawn, font size). Prints the training loss every 50 steps and the share of numbers
transcribed exactly on `--eval` pages drawn from another seed at the end, as one JSON line per
event. With the number at the top left there are only 900 different 3-digit pages, so after a
few hundred steps those pages have been seen in training: there the loss curve is the evidence.

    python -m bench.reading_onset --name base --seconds 240
    python -m bench.reading_onset --name theta10 --rope-theta 10 --mrope 2,10,20
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import time

import torch
from PIL import Image, ImageDraw

from tableqa_helpers.model.fast import sdpa_without_cudnn, use_grouped_vision_attention, use_linear_patch_embed
from tableqa_helpers.offline import mini
from tableqa_helpers.offline.render import dejavu_font


def sample(rng: random.Random, args) -> tuple[Image.Image, str]:
    """One image with a number of `args.digits` digits, and the number."""
    n = str(rng.randint(10 ** (args.digits - 1), 10 ** args.digits - 1))
    im = Image.new("RGB", (224, 224), "white")
    w, h = args.digits * args.font * 0.65, args.font * 1.2  # about the number's extent
    xy = (8, 8) if args.position == "fixed" else (rng.uniform(0, 224 - w), rng.uniform(0, 224 - h))
    ImageDraw.Draw(im).text(xy, n, fill="black", font=dejavu_font("sans", "regular", args.font))
    return im, n


def build_model(args):
    """A fresh mini with the knobs of `args` (RoPE, init range), its vision tower taken from
    `args.vision_init` when given; returns (model, processor)."""
    shape = copy.deepcopy(mini.MINI)  # the knobs change this copy, never MINI itself
    text = shape["text"]
    if args.rope_theta is not None:
        text["rope_theta"] = args.rope_theta
    if args.mrope:
        text["mrope_section"] = [int(x) for x in args.mrope.split(",")]
    if args.init_range is not None:
        text["initializer_range"] = args.init_range
    torch.manual_seed(0)
    model, proc = mini.build_mini_untrained(0, shape=shape)
    if args.vision_init:
        from pathlib import Path

        from transformers import Qwen2_5_VLForConditionalGeneration

        if not (Path(args.vision_init) / "config.json").is_file():
            raise SystemExit(f"--vision-init {args.vision_init}: no mini checkpoint there "
                             "(no config.json)")
        trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.vision_init,
                                                                     dtype=torch.float32)
        model.model.visual.load_state_dict(trained.model.visual.state_dict())
    return model, proc


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--seconds", type=float, default=240, help="training time")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--rope-theta", type=float, default=None, help="default: MINI's")
    p.add_argument("--mrope", default=None, help="t,h,w sections (default: MINI's)")
    p.add_argument("--init-range", type=float, default=None, help="text init std (default: MINI's)")
    p.add_argument("--position", choices=("fixed", "random"), default="fixed")
    p.add_argument("--font", type=int, default=40, help="pixels")
    p.add_argument("--digits", type=int, default=3)
    p.add_argument("--eval", type=int, default=64, help="pages transcribed at the end")
    p.add_argument("--vision-init", default=None,
                   help="a mini checkpoint whose vision tower to start from (e.g. the glyph stage's)")
    args = p.parse_args(argv)
    if args.digits * args.font * 0.65 > 216 or args.font * 1.2 > 216:
        p.error(f"{args.digits} digits at {args.font} px do not fit a 224-pixel page")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, proc = build_model(args)
    use_grouped_vision_attention(model)
    use_linear_patch_embed(model)
    model.to(device).train()
    collate = mini.ReadingCollator(proc)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    rng, losses, start, step = random.Random(0), [], time.time(), 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    with sdpa_without_cudnn():
        while time.time() - start < args.seconds:
            step += 1
            batch = [dict(zip(("image", "turns"), (im, [("Transcribe the number.", n)])))
                     for im, n in (sample(rng, args) for _ in range(args.batch_size))]
            batch = mini.pixel_values(collate(batch), proc.image_processor, device)
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, step / 50)
            with amp:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % 50 == 0:
                print(json.dumps({"name": args.name, "step": step, "loss": round(sum(losses[-50:]) / 50, 3),
                                  "seconds": round(time.time() - start)}), flush=True)
        model.eval()
        right, er = 0, random.Random(12345)
        with torch.no_grad():
            for _ in range(args.eval):
                im, want = sample(er, args)
                right += mini.generate_answer(model, proc, im, "Transcribe the number.", device,
                                              max_new_tokens=args.digits + 2) == want
    print(json.dumps({"name": args.name, "final": True, "steps": step,
                      "last_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 3),
                      "accuracy": right / max(1, args.eval), "knobs": vars(args)}), flush=True)


if __name__ == "__main__":
    main()
