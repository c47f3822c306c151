"""`python -m tableqa_helpers <command>`: the stages outside notebooks, same functions.

Every command takes ``--profile`` (default: $TABLEQA_PROFILE, else tiny) and any number of
``--set field=value`` overrides (``--set tier_a.lr=5e-5 --set batch_size=2``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .offline.mini_args import add_arguments as pretrain_arguments


def _config(args):
    from .config import get_config, parse_sets

    return get_config(args.profile, parse_sets(args.set))


def cmd_tiny_model(args):
    from .offline.standin import build_tiny_model

    print(build_tiny_model(args.dir, seed=args.seed))


def cmd_mini_base(args):
    from .offline.standin import install_mini_base

    print(install_mini_base(args.dir))


def cmd_synth_data(args):
    from .offline.dataset import make_synthetic_dataset
    from .offline.tables import TABLE_SHAPES

    print(make_synthetic_dataset(args.dir, train=args.train, validation=args.validation,
                                 test=args.test, seed=args.seed, **TABLE_SHAPES[args.tables]))


def cmd_pretrain_mini(args):
    from .train.pretrain import run

    summary = run(args)
    summary.pop("log")
    print(json.dumps(summary, indent=2))


def cmd_probe_mini(args):
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from .offline.mini_probe import reading_profile

    if not os.path.isfile(os.path.join(args.dir, "config.json")):
        raise SystemExit(f"error: probe-mini {args.dir}: no mini checkpoint there (no config.json)")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.dir)
    print(json.dumps(reading_profile(model, processor, n=args.tables), indent=2))


def cmd_prepare(args):
    from .offline.standin import ensure_standins

    cfg = _config(args)
    made = ensure_standins(cfg)
    print(json.dumps(made or {"note": "nothing to build"}, indent=2))


def cmd_plan(args):
    from .train.tiers import format_plan, plan

    cfg = _config(args)
    if args.seed_targets:
        cfg.tier_a.seed_targets = True
    tiers = (args.tier,) if args.tier else ("a", "b")
    for tier, counts in plan(cfg, tiers).items():
        title = f"Tier {tier.upper()} trainable parameters ({cfg.model_id})"
        if tier == "a" and cfg.tier_a.seed_targets:
            vision = sum(v for k, v in counts.items() if k.startswith("vision"))
            title += f"\n  tutorial targets: {vision:,} of them sit in the vision tower"
        print(format_plan(counts, title) + "\n")
    from .config import parse_sets
    from .hardware.plan import report
    text = report(args.profile, parse_sets(args.set), args.gpu)
    if text:
        print(text)


def cmd_train(args):
    from .offline.standin import ensure_standins
    from .train.trainer import end_distributed, train_tier

    cfg = _config(args)
    ensure_standins(cfg)
    summary = train_tier(cfg, args.tier, resume=not args.no_resume)
    summary.pop("log_history")
    end_distributed()  # under `accelerate launch`: every process done, then a clean exit
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, not one per process
        print(json.dumps(summary, indent=2))


def cmd_merge(args):
    from .merge import merge_tier_a

    print(json.dumps(merge_tier_a(_config(args)), indent=2))


def cmd_predict(args):
    from .infer import predict

    print(predict(_config(args), args.stage, args.split, limit=args.limit))


def cmd_evaluate(args):
    from .evaluate.compare import compare_stages
    from .infer import STAGES, output_path
    from .plots import plot_stage_comparison

    cfg = _config(args)
    paths = {s: output_path(cfg, s, args.split) for s in STAGES if output_path(cfg, s, args.split).exists()}
    if not paths:
        raise SystemExit(f"no predictions under {cfg.predictions_dir / args.split}: run predict first")
    out = cfg.eval_dir / args.split
    rows = compare_stages(paths, out)
    plot_stage_comparison(rows, out / "comparison.png")
    print((out / "comparison.md").read_text())


def cmd_check_data(args):
    from .data.checks import check_dataset

    report = check_dataset(_config(args))
    print(report.summary())
    sys.exit(1 if report.fatal else 0)


def cmd_run_notebooks(args):
    """Execute the numbered notebooks in order; executed copies go to RUN/notebooks/."""
    import os
    from pathlib import Path

    import papermill

    cfg = _config(args)
    folder = Path(args.notebooks)
    books = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not books:
        raise SystemExit(f"no numbered notebooks in {folder}")
    out = cfg.run_dir / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TABLEQA_ROOT"] = str(Path(cfg.root).resolve())  # every notebook shares the run folder
    for book in books:
        print(f"running {book.name} -> {out / book.name}", flush=True)
        papermill.execute_notebook(str(book), str(out / book.name), cwd=str(folder),
                                   parameters={"PROFILE": cfg.profile}, progress_bar=False)
    print(f"executed {len(books)} notebooks; copies in {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tableqa_helpers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_, profile=True):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        if profile:
            p.add_argument("--profile", default=None, help="tiny, full or unit (default: $TABLEQA_PROFILE or tiny)")
            p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
        return p

    p = add("tiny-model", cmd_tiny_model, "write the random (untrained) tiny stand-in", profile=False)
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p = add("mini-base", cmd_mini_base, "copy the shipped, pretrained mini base (checksummed)",
            profile=False)
    p.add_argument("dir")
    p = add("synth-data", cmd_synth_data, "write a synthetic Visual-TableQA", profile=False)
    p.add_argument("dir")
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--validation", type=int, default=20)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tables", choices=("default", "mini"), default="default",
                   help="table size (offline.TABLE_SHAPES): default, or mini (the tiny profile's)")
    # the same option list as python -m tableqa_helpers.train.pretrain (offline.mini_args)
    pretrain_arguments(add("pretrain-mini", cmd_pretrain_mini,
                           "pretrain the mini base on the reading curriculum", profile=False))
    p = add("probe-mini", cmd_probe_mini, "what a mini checkpoint reads, in order and by name",
            profile=False)
    p.add_argument("dir", help="a mini checkpoint (e.g. tableqa_helpers/offline/mini_base)")
    p.add_argument("--tables", type=int, default=24, help="held-out tables to ask")
    add("prepare", cmd_prepare, "build the stand-ins the profile needs")
    p = add("plan", cmd_plan, "trainable parameters per tier and component (meta device)")
    p.add_argument("--tier", choices=["a", "b"])
    p.add_argument("--seed-targets", action="store_true", help="Tier A with the tutorial's targets")
    p.add_argument("--gpu", help="GPU plan for a card class (t4, p100, l4, a10g, a100-40, "
                   "a100-80, h100) or all; default: this machine's GPU")
    p = add("train", cmd_train, "train a tier")
    p.add_argument("--tier", choices=["a", "b"], required=True)
    p.add_argument("--no-resume", action="store_true",
                   help="start over (removes this tier's checkpoints)")
    add("merge", cmd_merge, "merge the Tier A adapter into the base model")
    p = add("predict", cmd_predict, "batched generation over a split")
    p.add_argument("--stage", choices=["base", "a", "merged", "b"], required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p = add("evaluate", cmd_evaluate, "compare the stages' predictions")
    p.add_argument("--split", default="test")
    add("check-data", cmd_check_data, "scan the dataset for problems before training")
    p = add("run-notebooks", cmd_run_notebooks, "execute the notebook series in order")
    p.add_argument("--notebooks", default="notebooks", help="folder of the numbered notebooks")

    args = parser.parse_args(argv)
    from .config import ConfigError
    from .data.load import DataError
    try:
        args.func(args)
    except (ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
