"""The command-line options of mini-base pretraining: one list for
``python -m tableqa_helpers.train.pretrain`` and the `pretrain-mini` subcommand. Here, beside
`offline.mini`, because the command line imports it and must not import torch to do so."""
from __future__ import annotations

import argparse

# school stages: dense glyph labels, strings, tables, tables with named answers, and with answers
# in sentences too
STAGES = ("glyphs", "lines", "tables", "names", "sentences")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The command-line options of `pretrain` (also the `pretrain-mini` subcommand's)."""
    p.add_argument("out", help="folder of the checkpoint (replaced when complete)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers (0: in-process)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds of training; fixes the step count after step 50")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="mini checkpoint to continue from (its weights; "
                   "a new optimizer and warmup)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between accuracy probes: cells for tables, pages for lines "
                   "and glyphs (default: at 1/3 and 2/3)")
    p.add_argument("--stage", choices=STAGES, default="tables",
                   help="glyphs: the vision tower alone on dense glyph labels, from scratch; "
                   "lines: strings on a page; tables: whole tables; names: tables with answers "
                   "that repeat the instruction's row and column names; sentences: names with "
                   "turns answered by a sentence too; each later stage "
                   "usually with --init from the one before")
    p.add_argument("--grow-lm-layers", type=int, default=None,
                   help="deepen the --init checkpoint's language model to N layers first "
                   "(a multiple of its own; the new layers start as the identity)")
    p.add_argument("--grow-vision-depth", type=int, default=None,
                   help="deepen its vision tower to N blocks first (its own plus an even number)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    return p
