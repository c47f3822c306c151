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

import hashlib
import io
import json
import math
import shutil
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from .config import DATA_PROBLEMS, Config
from .data import (MAX_ASPECT_RATIO, MIN_IMAGE_SIDE, REQUIRED_COLUMNS, SPLITS, DataError,
                   ImageError, check_image_size, load_tableqa, open_image, to_rgb,
                   validate_columns)
from .io import atomic_dir, atomic_write_json

LEAK_ORDER = ("train", "validation", "test")  # a table in two splits is dropped from the earlier
EXAMPLES = 3  # examples shown per problem kind in the printed table


class DataCheckError(DataError):
    """The check found a problem whose policy is "stop"; the message is the report's table."""


@dataclass
class Problem:
    """One finding: what, where (split and row index), and the detail for a human."""

    kind: str  # a key of config.DATA_PROBLEMS
    split: str
    index: int  # row position in the split that was checked
    table_id: str | None
    detail: str


@dataclass
class DataReport:
    """The problems found in some splits of a dataset, and what the policy does with them."""

    dataset: str
    rows: dict[str, int]  # split -> rows checked
    policy: dict[str, str]
    max_length: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        """True when a problem's policy is "stop": training must not start."""
        return any(self.policy.get(p.kind, "skip") == "stop" for p in self.problems)

    def rejected(self, split: str) -> list[int]:
        """Row indices of `split` that training must not see (policy "skip" or "stop")."""
        return sorted({p.index for p in self.problems
                       if p.split == split and self.policy.get(p.kind, "skip") != "keep"})

    def counts(self) -> dict[str, dict[str, int]]:
        """Problem kind -> split -> number of rows with that problem (every kind listed)."""
        out = {kind: {s: 0 for s in self.rows} for kind in DATA_PROBLEMS}
        for p in self.problems:
            out[p.kind][p.split] = out[p.kind].get(p.split, 0) + 1
        return out

    def found(self) -> dict[str, list[tuple[str, int]]]:
        """Problem kind -> sorted (split, index) pairs, only the kinds that were found."""
        out: dict[str, list[tuple[str, int]]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append((p.split, p.index))
        return {k: sorted(v) for k, v in sorted(out.items())}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "rows": self.rows, "policy": self.policy,
                "max_length": self.max_length, "fatal": self.fatal, "counts": self.counts(),
                "rejected": {s: self.rejected(s) for s in self.rows},
                "problems": [asdict(p) for p in self.problems]}

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    def summary(self) -> str:
        """A table: one line per problem kind with its policy, counts per split and examples."""
        splits = list(self.rows)
        counts = self.counts()
        head = ["problem", "policy"] + splits + ["examples"]
        lines = []
        for kind in DATA_PROBLEMS:
            examples = [f"{p.split}[{p.index}] {p.detail}" for p in self.problems if p.kind == kind]
            more = f" (+{len(examples) - EXAMPLES} more)" if len(examples) > EXAMPLES else ""
            lines.append([kind, self.policy.get(kind, "skip")]
                         + [str(counts[kind].get(s, 0)) for s in splits]
                         + ["; ".join(e[:90] for e in examples[:EXAMPLES]) + more])
        widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head) - 1)]

        def fmt(row):
            return "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1]

        rows = ", ".join(f"{s} {n}" for s, n in self.rows.items())
        rejected = ", ".join(f"{s} {len(self.rejected(s))}" for s in splits)
        out = [f"Dataset check of {self.dataset} ({rows} rows; max_length {self.max_length})",
               fmt(head), fmt(["-" * w for w in widths] + ["-" * 8])] + [fmt(r) for r in lines]
        out.append(f"rows rejected: {rejected}" if self.problems else "no problems found")
        if self.fatal:
            stop = sorted({p.kind for p in self.problems if self.policy.get(p.kind) == "stop"})
            out.append(f"STOP: policy 'stop' for {', '.join(stop)}: fix the data or set "
                       f"data_policy.<problem>=skip")
        return "\n".join(out)


# ---- one row ---------------------------------------------------------------------------------
def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _image_missing(value) -> bool:
    return value is None or (isinstance(value, dict) and value.get("bytes") is None
                             and not value.get("path"))


class ImageMemo:
    """What each image is (size and pixel digest, or its problem), by content, kept on disk.

    Keys are digests of the raw bytes, so a later scan (`clean_split` after `check_dataset`, a
    rerun) skips decoding. Stored in RUN/cache/image_checks.json, valid for this PIL version
    and these size limits only.
    """

    def __init__(self, path: str | Path | None = None):
        from PIL import __version__ as pil

        self.path = Path(path) if path else None
        self.header = {"pil": pil, "min_side": MIN_IMAGE_SIDE, "max_aspect": MAX_ASPECT_RATIO}
        self.items: dict[str, dict] = {}
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("header") == self.header:
                    self.items = data["items"]
            except (OSError, ValueError, KeyError, TypeError):
                self.items = {}  # a damaged cache is only a slower scan

    def save(self) -> None:
        if self.path and self.dirty:
            atomic_write_json(self.path, {"header": self.header, "items": self.items})
            self.dirty = False

    def inspect(self, value) -> tuple[int, int, str]:
        """(width, height, pixel digest) of a row's image; raises ImageError naming the problem.

        Bombs are refused from the header alone; size and aspect ratio are checked before
        decoding; the pixels are decoded (truncation shows only then) and hashed.
        """
        from PIL import Image

        raw = value
        if isinstance(value, dict):
            raw = value["bytes"] if value.get("bytes") is not None else value.get("path")
        if isinstance(raw, Image.Image):
            return self._decode(raw)
        if isinstance(raw, (str, Path)):
            try:
                raw = Path(raw).read_bytes()
            except OSError as e:
                raise ImageError(f"image file cannot be read ({e})") from None
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise ImageError(f"cannot read an image from {type(raw).__name__}")
        key = hashlib.blake2b(bytes(raw), digest_size=16).hexdigest()
        hit = self.items.get(key)
        if hit is None:
            try:
                hit = dict(zip(("w", "h", "digest"), self._decode(open_image(raw))))
            except ImageError as e:
                hit = {"kind": e.kind, "error": str(e)}
            if hit.get("kind") != "image_too_large":  # depends on PIL's (settable) limit
                self.items[key] = hit
                self.dirty = True
        if "error" in hit:
            raise ImageError(hit["error"], hit["kind"])
        limit = Image.MAX_IMAGE_PIXELS
        if limit and hit["w"] * hit["h"] > limit:  # the limit was lowered since it was decoded
            raise ImageError(f"image is {hit['w']}x{hit['h']} pixels > PIL's bomb limit "
                             f"{limit:,}", "image_too_large")
        return hit["w"], hit["h"], hit["digest"]

    @staticmethod
    def _decode(image) -> tuple[int, int, str]:
        check_image_size(*image.size)
        rgb = to_rgb(image)
        digest = hashlib.blake2b(rgb.tobytes(), digest_size=16)
        digest.update(f"{rgb.size}".encode())
        return rgb.width, rgb.height, digest.hexdigest()


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
    from .model import load_processor
    from .standin import build_tiny_model, ensure_standins

    standins = Path(cfg.standin_dir).resolve()
    if cfg.use_standins and Path(cfg.dataset_id).resolve().is_relative_to(standins):
        ensure_standins(cfg)  # never writes a synthetic dataset where the user's data should be
    elif (cfg.use_standins and Path(cfg.model_id).resolve().is_relative_to(standins)
          and not (Path(cfg.model_id) / "config.json").exists()):
        build_tiny_model(cfg.model_id)
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
def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(pixels: int | None = None) -> bytes:
    """A valid, all-black 1-bit PNG with more pixels than PIL's limit, built without PIL (small)."""
    from PIL import Image

    side = math.isqrt(pixels or (Image.MAX_IMAGE_PIXELS or 89_478_485)) + 64
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def plant_defects(dataset_dir: str | Path, out_dir: str | Path) -> dict[str, list[tuple[str, int]]]:
    """Copy the dataset at `dataset_dir` to `out_dir` with one row per defect kind planted.

    Needs at least 16 train, 2 validation and 3 test rows. Returns problem kind -> sorted
    (split, index) pairs of what was planted, in the form of `DataReport.found()`.
    """
    import datasets
    from PIL import Image

    src = load_tableqa(str(dataset_dir))
    rows = {s: _raw(src[s]).to_list() for s in src}
    planted: dict[str, list[tuple[str, int]]] = {}

    def plant(kind, split, index, **values):
        rows[split][index].update(values)
        planted.setdefault(kind, []).append((split, index))

    def img(data):
        return {"bytes": data, "path": None}

    good = rows["train"][0]["image"]["bytes"]
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(good)).convert("RGB").save(jpeg, format="JPEG", quality=80)
    plant("missing_field", "train", 1, question="")
    plant("missing_field", "train", 2, answer=None)
    plant("missing_field", "train", 3, table_id=None)
    plant("missing_field", "train", 4, image=None)
    plant("missing_field", "validation", 0, answer="   ")
    plant("image_undecodable", "train", 5, image=img(b""))
    plant("image_undecodable", "train", 6, image=img(good[: len(good) // 2]))
    plant("image_undecodable", "train", 7, image=img(jpeg.getvalue()[: len(jpeg.getvalue()) // 2]))
    plant("image_undecodable", "train", 8, image=img(b"%PDF-1.4\n% not an image\n"))
    plant("image_undecodable", "test", 2, image=img(good[:200]))
    plant("image_too_small", "train", 9, image=img(_png(Image.new("RGB", (400, 20), "white"))))
    plant("image_aspect_ratio", "train", 10, image=img(_png(Image.new("RGB", (6000, 28), "white"))))
    plant("image_too_large", "train", 11, image=img(bomb_png()))
    plant("too_long", "train", 12, answer="The total is 1,250 and the mean is 48.25. " * 2500)
    plant("duplicate_table_id", "train", 14, table_id=rows["train"][13]["table_id"])
    plant("split_leak_table_id", "train", 15, table_id=rows["test"][0]["table_id"])
    reencoded = io.BytesIO()  # same pixels, different bytes: found by the pixel digest
    Image.open(io.BytesIO(rows["test"][1]["image"]["bytes"])).save(reencoded, format="PNG",
                                                                     compress_level=9)
    assert reencoded.getvalue() != rows["test"][1]["image"]["bytes"]
    plant("split_leak_image", "validation", 1, image=img(reencoded.getvalue()))

    out_dir = Path(out_dir)
    features = src["train"].features
    with atomic_dir(out_dir) as tmp:
        (tmp / "data").mkdir()
        for split, items in rows.items():
            columns = {name: [r[name] for r in items] for name in features}
            ds = datasets.Dataset.from_dict(columns, features=_raw(src[split]).features)
            ds.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        readme = Path(dataset_dir) / "README.md"
        if readme.exists():
            shutil.copy(readme, tmp / "README.md")
    return {k: sorted(v) for k, v in sorted(planted.items())}
