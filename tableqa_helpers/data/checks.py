"""Dataset checks before training: scan every split, count each problem, keep examples.

`check_dataset(cfg)` (``python -m tableqa_helpers check-data``, notebook 01) reads images as raw
bytes (``datasets.Image(decode=False)``), so a broken image is a finding, never a crash, and
reports the problems of `config.DATA_PROBLEMS`:

* per row: missing or blank fields; images that do not decode, are too small for the patch
  grid, too elongated for the resize or over PIL's decompression-bomb limit; samples longer
  than ``max_length`` tokens (counted exactly as the collator builds them);
* across rows: a table_id repeated within a split (the first row is kept) and the same table
  in two splits, by table_id or by image pixels (the row of the earlier split in
  train < validation < test is the one rejected, so evaluation splits stay whole).

Each problem has a policy in ``cfg.data_policy``: "skip" (default: drop the row, report it),
"stop" (report, and `clean_split` refuses to train) or "keep" (report only; relational problems
only). `clean_split(ds, processor, cfg, split)` applies the same checks to the rows training
uses, so training never meets a rejected sample. Reports are written as JSON, atomically, into
the run folder. `plant_defects` writes a copy of a dataset with one of each defect, for tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..config import Config
from .load import REQUIRED_COLUMNS, SPLITS, ImageError, load_tableqa, validate_columns
from .report import (DataCheckError, DataReport, ImageMemo, LEAK_ORDER, Problem, _blank,
                     _image_missing)


class RowScan(NamedTuple):
    """What `scan_row` found in one row."""

    problems: list[tuple[str, str]]  # (kind, detail) of each row-local problem
    digest: str | None  # pixel digest of the image, when it decodes
    tokens: int | None  # training tokens, when the row has no row-local problem


def scan_row(row: dict, processor, cfg: Config, memo: ImageMemo | None = None) -> RowScan:
    """The row-local problems of one row, its image digest and its length in tokens."""
    from .collate import count_tokens

    memo = memo or ImageMemo()
    problems = []
    missing = [c for c in REQUIRED_COLUMNS
               if (_image_missing(row.get(c)) if c == "image" else _blank(row.get(c)))]
    if missing:
        problems.append(("missing_field", f"{', '.join(missing)} missing or blank"))
    if "image" in missing:
        return RowScan(problems, None, None)
    try:
        width, height, digest = memo.inspect(row.get("image"))
    except ImageError as e:
        problems.append((e.kind, str(e)))
        return RowScan(problems, None, None)
    n = None
    if not problems:
        n = count_tokens(processor, row, cfg.system_prompt, size=(width, height))["total"]
        if n > cfg.max_length:
            problems.append(("too_long", f"{n} tokens > max_length {cfg.max_length}"))
    return RowScan(problems, digest, n)


# ---- a split ---------------------------------------------------------------------------------
def _raw(ds):
    """The split with images as raw bytes (decoded only in `ImageMemo.inspect`, guarded)."""
    import datasets

    feature = ds.features.get("image") if getattr(ds, "features", None) else None
    if isinstance(feature, datasets.Image) and feature.decode:
        return ds.cast_column("image", datasets.Image(decode=False))
    return ds


def _rows(ds, desc: str, progress: bool):
    from tqdm.auto import tqdm

    columns = [c for c in REQUIRED_COLUMNS if c in ds.column_names]
    return tqdm(_raw(ds).select_columns(columns), total=len(ds), desc=desc, disable=not progress,
                unit="row")


def scan_split(ds, processor, cfg: Config, split: str, progress: bool = True,
               memo: ImageMemo | None = None):
    """Row-local problems of a split and its keys and lengths:
    (problems, {index: table_id}, {index: digest}, {index: tokens})."""
    problems, ids, digests, tokens = [], {}, {}, {}
    for i, row in enumerate(_rows(ds, f"check {split}", progress)):
        scan = scan_row(row, processor, cfg, memo)
        tid = None if _blank(row.get("table_id")) else str(row["table_id"])
        problems += [Problem(kind, split, i, tid, detail) for kind, detail in scan.problems]
        if tid is not None:
            ids[i] = tid
        if scan.digest is not None:
            digests[i] = scan.digest
        if scan.tokens is not None:
            tokens[i] = scan.tokens
    return problems, ids, digests, tokens


def split_keys(ds, split: str, progress: bool = False,
               memo: ImageMemo | None = None) -> tuple[set[str], set[str]]:
    """Table ids and image digests of a split (for leakage checks against it)."""
    memo = memo or ImageMemo()
    ids, digests = set(), set()
    for row in _rows(ds, f"index {split}", progress):
        if not _blank(row.get("table_id")):
            ids.add(str(row["table_id"]))
        if _image_missing(row.get("image")):
            continue
        try:
            digests.add(memo.inspect(row["image"])[2])
        except ImageError:
            pass
    return ids, digests


def relational_problems(split: str, local: list[Problem], ids: dict[int, str],
                        digests: dict[int, str],
                        later: dict[str, tuple[set[str], set[str]]]) -> list[Problem]:
    """Duplicates within the split and leaks into the `later` splits, among usable rows only."""
    bad = {p.index for p in local}
    out, first = [], {}
    for i in sorted(ids):
        if i in bad:
            continue
        tid = ids[i]
        if tid in first:
            out.append(Problem("duplicate_table_id", split, i, tid,
                               f"table_id {tid!r} already at {split}[{first[tid]}]"))
        else:
            first[tid] = i
        for other, (other_ids, _) in later.items():
            if tid in other_ids:
                out.append(Problem("split_leak_table_id", split, i, tid,
                                   f"table_id {tid!r} is also in {other}"))
    for i in sorted(digests):
        if i in bad:
            continue
        for other, (_, other_digests) in later.items():
            if digests[i] in other_digests:
                out.append(Problem("split_leak_image", split, i, ids.get(i),
                                   f"the same image is also in {other}"))
    return out


def _later_splits(split: str, names) -> list[str]:
    """Splits that win over `split` when a table is in both (unknown splits rank lowest)."""
    rank = {s: k for k, s in enumerate(LEAK_ORDER)}
    mine = rank.get(split, -1)
    return [s for s in names if s != split and rank.get(s, -1) > mine]


def _ensure_processor(cfg: Config, processor):
    """The given processor, else the config's (building the stand-ins a tiny profile uses)."""
    if processor is not None:
        return processor
    from ..model.load import load_processor
    from ..offline.standin import ensure_standin_model, ensure_standins

    standins = Path(cfg.standin_dir).resolve()
    if cfg.use_standins and Path(cfg.dataset_id).resolve().is_relative_to(standins):
        ensure_standins(cfg)  # never writes a synthetic dataset where the user's data should be
    elif cfg.use_standins and Path(cfg.model_id).resolve().is_relative_to(standins):
        ensure_standin_model(cfg)
    return load_processor(cfg)


# ---- the public entry points ---------------------------------------------------------------
def check_dataset(cfg: Config, processor=None, progress: bool = True,
                  write: bool = True) -> DataReport:
    """Scan every split of ``cfg.dataset_id``; the report is also written to RUN/data_check.json."""
    processor = _ensure_processor(cfg, processor)
    dd = load_tableqa(cfg.dataset_id)
    names = [s for s in SPLITS if s in dd] + [s for s in dd if s not in SPLITS]
    memo = ImageMemo(cfg.cache_dir / "image_checks.json")
    scanned = {s: scan_split(dd[s], processor, cfg, s, progress, memo) for s in names}
    memo.save()
    report = DataReport(str(cfg.dataset_id), {s: len(dd[s]) for s in names},
                        dict(cfg.data_policy), cfg.max_length)
    keys = {s: (set(ids.values()), set(digests.values())) for s, (_, ids, digests, _) in scanned.items()}
    for s in names:
        local, ids, digests, _ = scanned[s]
        later = {o: keys[o] for o in _later_splits(s, names)}
        report.problems += local + relational_problems(s, local, ids, digests, later)
    report.problems.sort(key=lambda p: (names.index(p.split), p.index, p.kind))
    if write:
        report.save(cfg.run_dir / "data_check.json")
    return report


def clean_split(ds, processor, cfg: Config, split: str, reference: dict | None = None,
                progress: bool = True):
    """(rows training may use, report) for one split: the rejected rows dropped.

    The kept rows get a ``length`` column (training tokens, for batching by length). Applies
    every check of `check_dataset` to `ds` (e.g. the first ``train_limit`` rows); leaks
    are looked up in the other splits of ``cfg.dataset_id`` (or `reference`: split -> Dataset;
    ``{}`` skips the leak checks). Writes RUN/logs/data_{split}.json and prints one line per
    problem kind found. Raises DataCheckError when a problem's policy is "stop".
    """
    validate_columns(ds, where=f"{cfg.dataset_id}[{split}]")
    memo = ImageMemo(cfg.cache_dir / "image_checks.json")
    local, ids, digests, tokens = scan_split(ds, processor, cfg, split, progress, memo)
    if reference is None:
        reference = load_tableqa(cfg.dataset_id)
    later = {o: split_keys(reference[o], o, progress, memo)
             for o in _later_splits(split, list(reference.keys()))}
    memo.save()
    report = DataReport(str(cfg.dataset_id), {split: len(ds)}, dict(cfg.data_policy),
                        cfg.max_length)
    report.problems = sorted(local + relational_problems(split, local, ids, digests, later),
                             key=lambda p: (p.index, p.kind))
    report.save(cfg.run_dir / "logs" / f"data_{split}.json")
    if report.fatal:
        raise DataCheckError(report.summary())
    for kind, per_split in report.counts().items():
        if per_split[split]:
            print(f"{split}: {per_split[split]} row(s) with {kind} "
                  f"({report.policy.get(kind, 'skip')})")
    drop = set(report.rejected(split))
    if drop:
        print(f"{split}: training uses {len(ds) - len(drop)} of {len(ds)} rows "
              f"(details: {cfg.run_dir / 'logs' / f'data_{split}.json'})")
    keep = [i for i in range(len(ds)) if i not in drop]
    out = ds.select(keep)
    if "length" not in out.column_names:  # for group_by_length batching
        out = out.add_column("length", [tokens[i] for i in keep])
    return out, report


# ---- planted defects (for tests and demonstrations) ------------------------------------------
