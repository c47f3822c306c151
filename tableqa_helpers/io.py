"""Atomic writes: a kill or a full disk during a write leaves the previous version intact.

Files and folders are written to a temporary sibling named ``.NAME.<pid>.<random>.tmp`` and
renamed over the target only when complete. A write that fails (disk full, permission, quota)
raises `ArtifactWriteError` naming the target; a process killed mid-write leaves only its
temporary sibling, which the next write of the same target reports (log warning) and removes.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


class ArtifactWriteError(OSError):
    """Writing an artifact failed; the previous version (if any) is intact. Keeps the errno."""

    def __init__(self, path: Path, cause: OSError):
        reason = cause.strerror or str(cause)
        if cause.errno == _errno.ENOSPC:
            reason = "the disk is full"
        super().__init__(cause.errno, f"could not write {path}: {reason}; the previous version "
                                      f"(if any) is intact, nothing was replaced")
        self.path = path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(path: str | Path) -> list[Path]:
    """Remove temporary siblings of `path` left by killed writers (their process is gone).

    Returns what was removed; each removal is logged as a warning (the interrupted write is
    reported; the previous version of `path` was never touched).
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        m = own.fullmatch(tmp.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        pid = m.group(1)
        log.warning("%s: removing %s left by an interrupted write (process %s is gone); the "
                    "previous version was kept", path, tmp.name, pid)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, ArtifactWriteError):
            raise ArtifactWriteError(path, e) from e
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def recover_dir(path: str | Path) -> None:
    """Finish or undo a folder swap that a kill interrupted (see `atomic_dir`).

    ``.NAME.old`` without ``NAME``: the kill came between the two renames; the previous version
    is put back. Both present: the swap completed; the old copy is removed.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not old.exists():
        return
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        log.warning("%s: restoring the previous version from %s (a write was interrupted)",
                    path, old.name)
        os.replace(old, path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (two renames).

    On any error (disk full, interrupt) the temporary folder is removed and the previous
    `path`, if any, is left untouched; an OSError is raised as `ArtifactWriteError`. A kill
    between the two renames is repaired by `recover_dir` on the next write or read.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(path)
        sweep_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                    dir=path.parent))
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, ArtifactWriteError):
            raise ArtifactWriteError(path, e) from e
        raise


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line and flush it to disk (used for resumable, incremental outputs).

    A failure mid-line (disk full, kill) leaves at worst a torn last line, which `read_jsonl`
    ignores and the resuming writer cuts off.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read complete JSON lines; a torn last line (from a kill mid-write) is ignored."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # the process was killed while writing this line
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
