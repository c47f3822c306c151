"""What a dataset check finds: `Problem`, `DataReport` (counts, policy, printed table), and
`ImageMemo` (what each image is, by content, kept on disk so a rescan skips decoding).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import DATA_PROBLEMS
from .load import (MAX_ASPECT_RATIO, MIN_IMAGE_SIDE, DataError, ImageError, check_image_size,
                   open_image, to_rgb)
from ..io import atomic_write_json


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
