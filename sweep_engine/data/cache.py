"""Build-once caches that many processes may ask for at the same time.

An entry is a file or a directory whose name is a content hash. It is built under a temporary name in the same
directory and renamed into place, so a reader sees either nothing or the complete entry, never a partial one.
A file lock next to the entry makes a second process that asks for it while it is being built wait and then
reuse it, instead of building it twice; if locking is unavailable (a file system without it) the rename alone
still keeps the entry whole: the first rename wins and the loser's copy is discarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """Return `path`, first building it with `build(tmp)` if it does not exist.

    Args:
        path: the entry (a file or directory) to make.
        build: writes the entry at the temporary path it is given (a file, or a directory it creates).

    Returns:
        `path`, complete.
    """
    if path.exists():  # the fast path every trial after the first takes: no lock
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():  # another process built it while we waited
            return path
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            build(tmp)
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.exists():  # a directory target that exists makes os.replace fail: first wins
                    raise
        finally:
            _remove(tmp)
    return path


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def save_array(path: Path, a: np.ndarray) -> None:
    """Write a .npy file (no pickle)."""
    np.save(path, a, allow_pickle=False)


# Arrays up to this size are read into memory (writable, cheap); larger ones are memory-mapped.
MMAP_BYTES = 256 * 2**20


def load_array(path: Path) -> np.ndarray:
    """Read a .npy file written by save_array: in memory when small, memory-mapped (read-only) when large."""
    if path.stat().st_size > MMAP_BYTES:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(path, allow_pickle=False)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON with sorted keys."""
    path.write_text(json.dumps(obj, sort_keys=True, indent=1))


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text())
