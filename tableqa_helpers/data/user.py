"""Your own data: a local folder or file in one of the layouts `datasets` reads, as the
project's rows (table_id, image, question, answer).

Point ``dataset_id`` at it (``--set dataset_id=/path``, or ``OVERRIDES`` in a notebook):

* an image folder: ``train/``, ``validation/``, ``test/`` subfolders (or only the folder itself:
  one ``train`` split), each with its images and a ``metadata.jsonl`` or ``metadata.csv`` of
  one row per sample: ``file_name`` (the image, relative to that folder), ``question``,
  ``answer`` and optionally ``table_id`` (else the file name without its extension). Read with
  ``load_dataset("imagefolder", data_dir=...)``;
* a parquet file (the split is its name: ``test.parquet`` -> test; any other name -> train),
  or a folder of ``{split}*.parquet`` / ``.csv`` / ``.jsonl`` files with an ``image`` column;
* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

Training uses ``train`` and ``validation``, evaluation ``test``. A folder that cannot be read
raises DataError naming the missing file, column or image; the rows are then checked like the
synthetic data (`checks`: ``check-data``, and before training).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .load import SPLITS, DataError

METADATA = ("metadata.jsonl", "metadata.csv")
NEEDED = ("file_name", "question", "answer")  # columns of an image folder's metadata
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def load_local(path: str | Path):
    """A DatasetDict from a local file or folder in any layout of the module doc."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(path)
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataError(f"{path}: a dataset file must be .parquet (or give a folder)")
        split = path.stem if path.stem in SPLITS else "train"
        dd = load_dataset("parquet", data_files={split: str(path)}, cache_dir=_cache_dir(path))
    elif (path / "dataset_dict.json").is_file():
        dd = load_from_disk(str(path))
    elif (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        dd = DatasetDict({"train": load_from_disk(str(path))})  # one saved Dataset
    elif image_folder_splits(path):
        check_image_folder(path)
        dd = load_dataset("imagefolder", data_dir=str(path), cache_dir=_cache_dir(path))
    else:
        if _has_images(path):
            raise DataError(f"{path}: images but no metadata.jsonl or metadata.csv (one row per "
                            f"image: file_name, question, answer); see docs/architecture.md")
        dd = load_dataset(str(path), cache_dir=_cache_dir(path))  # parquet / csv / json files
    return DatasetDict({name: with_table_ids(ds, path) for name, ds in dd.items()})


def _cache_dir(path: Path) -> str:
    """Where `datasets` caches `path`'s Arrow copy: a folder per state of its files (path, size,
    modification time). `datasets` itself names the cache of a local folder with a dataset
    card after the card and the folder's name only, so rewriting the files in place (a new
    synthetic dataset, your edited data) would otherwise load the old rows without a word."""
    import hashlib

    from datasets import config

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    state = "\n".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return str(Path(config.HF_DATASETS_CACHE) / "tableqa-local"
               / hashlib.sha256(state.encode()).hexdigest()[:16])


def image_folder_splits(path: Path) -> dict[str, Path]:
    """split -> metadata file of an image folder ({} when `path` is not one)."""
    top = _metadata_file(path)
    if top is not None:
        return {"train": top}
    found = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
        meta = _metadata_file(sub)
        if meta is not None:
            found[sub.name] = meta
    return found


def _metadata_file(folder: Path) -> Path | None:
    files = [folder / name for name in METADATA if (folder / name).is_file()]
    if len(files) > 1:
        raise DataError(f"{folder}: both metadata.jsonl and metadata.csv; keep one")
    return files[0] if files else None


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def read_metadata(meta: Path) -> list[dict]:
    """The rows of a metadata.jsonl / metadata.csv; DataError with the line of a broken one."""
    if meta.suffix == ".csv":
        with meta.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    rows = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{meta} line {n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{meta} line {n}: expected one JSON object per line")
        rows.append(row)
    return rows


def check_image_folder(path: Path) -> None:
    """DataError naming the first missing column or image of an image folder's metadata."""
    splits = image_folder_splits(path)
    if _metadata_file(path) is None:  # split subfolders: each one with images needs its own
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in splits):
            if _has_images(sub):
                raise DataError(f"{sub}: images but no metadata.jsonl or metadata.csv (one row "
                                f"per image: file_name, question, answer)")
    for split, meta in splits.items():
        rows = read_metadata(meta)
        if not rows:
            raise DataError(f"{meta}: no rows")
        columns = set().union(*(r.keys() for r in rows))
        missing = [c for c in NEEDED if c not in columns]
        if missing:
            raise DataError(f"{meta} has no {', '.join(missing)} column(s); it has "
                            f"{', '.join(sorted(columns))}; needed: {', '.join(NEEDED)} "
                            f"(table_id optional)")
        for n, row in enumerate(rows, 1):
            name = row.get("file_name")
            if not name or not (meta.parent / str(name)).is_file():
                raise DataError(f"{meta} row {n}: file_name {name!r} is not a file in "
                                f"{meta.parent}")


def with_table_ids(ds, root: Path):
    """`ds` with a ``table_id`` column: its own, else each image's file name without extension
    (relative to `root`), else the row number."""
    if "table_id" in ds.column_names:
        return ds
    paths = [None] * len(ds)
    if "image" in ds.column_names:
        column = ds.data.column("image")
        if hasattr(column.type, "get_field_index") and column.type.get_field_index("path") >= 0:
            paths = [p for chunk in column.chunks for p in chunk.field("path").to_pylist()]
    ids = [_id_of(p, root) if p else f"row_{i:06d}" for i, p in enumerate(paths)]
    return ds.add_column("table_id", ids)


def _id_of(image_path: str, root: Path) -> str:
    p = Path(image_path)
    base = root if root.is_dir() else root.parent
    for folder in (*[base / s for s in SPLITS], base):  # "t1" for train/t1.png
        try:
            return str(p.relative_to(folder).with_suffix(""))
        except ValueError:
            continue
    return p.stem
