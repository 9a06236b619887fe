"""Token files: a flat array of token ids on disk, written in chunks and read back as a memory map.

Every token array the caches hold (a tokenized corpus, a training sequence, a held-out set) is one raw file of
uint16 (vocabularies up to 65,536, GPT-2's included) or int32 ids, described by four numbers kept in the entry's
meta.json: dtype, length, and the smallest and largest id. The writer never holds more than the chunk it is
given, and a reader maps the file instead of loading it, so a corpus larger than the machine's memory is
prepared and trained on with memory bounded by chunk and batch sizes, not by the corpus (docs/data.md).

The id range is recorded while writing so that a trial checks its data against the vocabulary without reading
the array (a scan of a paper-scale training sequence reads tens of GB).
"""

from __future__ import annotations

import mmap
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from sweep_engine.errors import DataError


@dataclass(frozen=True)
class TokenFileInfo:
    """What a reader needs to map a token file: its dtype, length and id range (min, max; (0, -1) if empty)."""

    dtype: str
    tokens: int
    min: int
    max: int

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "tokens": self.tokens, "min": self.min, "max": self.max}

    @staticmethod
    def from_json(meta: dict[str, Any]) -> TokenFileInfo:
        """Read the four fields from an entry's meta.json (min/max absent in caches built before them)."""
        return TokenFileInfo(
            str(meta["dtype"]), int(meta["tokens"]), int(meta.get("min", 0)), int(meta.get("max", -1))
        )


def dtype_for(vocab_size: int) -> np.dtype[Any]:
    """The narrowest dtype that holds every id of a vocabulary: uint16 up to 65,536 ids, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


class TokenWriter:
    """Appends chunks of token ids to a file with plain writes (no memory map, so nothing of it stays resident
    in this process) and tracks the length and id range.

    Args:
        path: The file to create.
        dtype: The on-disk dtype (see `dtype_for`).

    Raises:
        DataError: (on `write`) an id that the dtype cannot hold.
    """

    def __init__(self, path: Path, dtype: np.dtype[Any] | str) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self._file = self.path.open("wb")
        self.tokens = 0
        self.min: int | None = None
        self.max: int | None = None
        self._limits = np.iinfo(self.dtype)

    def write(self, ids: np.ndarray) -> None:
        """Append `ids` (any integer dtype)."""
        if len(ids) == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < self._limits.min or hi > self._limits.max:
            raise DataError(
                f"token ids must fit {self.dtype.name}, but got ids in [{lo}, {hi}] for {self.path}"
            )
        ids.astype(self.dtype, copy=False).tofile(self._file)
        self.tokens += len(ids)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def close(self) -> TokenFileInfo:
        """Close the file and return what a reader needs."""
        self._file.close()
        if self.min is None or self.max is None:
            return TokenFileInfo(self.dtype.name, 0, 0, -1)
        return TokenFileInfo(self.dtype.name, self.tokens, self.min, self.max)

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()


def open_tokens(path: Path, info: TokenFileInfo) -> np.ndarray:
    """The token file at `path` as a read-only array backed by a memory map of the file.

    Raises:
        DataError: the file is shorter than `info` says (a damaged cache entry).
    """
    if info.tokens == 0:
        return np.zeros(0, dtype=info.dtype)
    need = info.tokens * np.dtype(info.dtype).itemsize
    with Path(path).open("rb") as f:
        size = f.seek(0, 2)
        if size < need:
            raise DataError(
                f"token file {path} holds {size} bytes, but its entry says {need}: rebuild the cache"
            )
        mapped = mmap.mmap(f.fileno(), need, access=mmap.ACCESS_READ)
    # The array keeps the map alive (its base); the file descriptor is not needed once mapped.
    return np.frombuffer(mapped, dtype=info.dtype, count=info.tokens)


class TokenReader:
    """Reads ranges of a token file into caller-owned arrays with pread, not through a memory map.

    A pass that visits a file in random order (laying out a training sequence in a shuffled document order)
    would, through a map, fault in 64 KiB around every document it touches, and a chunk of a thousand documents
    would make most of the file resident; plain reads copy exactly the requested bytes.

    Args:
        path: The token file.
        info: Its dtype and length.
    """

    def __init__(self, path: Path, info: TokenFileInfo) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(info.dtype)
        self.tokens = info.tokens
        self._fd = os.open(self.path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)  # closed with the reader if not before

    def read_into(self, out: np.ndarray, start: int) -> None:
        """Fill `out` (contiguous, of the file's dtype) with tokens[start : start + len(out)].

        Raises:
            DataError: The range runs past the end of the file.
        """
        want = out.nbytes
        got = os.preadv(self._fd, [out.data.cast("B")], start * self.dtype.itemsize)
        if got != want:
            raise DataError(f"token file {self.path} ended at token {start + got // self.dtype.itemsize}, "
                            f"before token {start + len(out)}: rebuild the cache")  # fmt: skip

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> TokenReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def release(arr: np.ndarray) -> None:
    """Drop this process's resident pages of the memory map behind `arr` (no-op for an in-memory array).

    The pages stay in the page cache; the process's resident set shrinks, and the next access maps them again.
    Long passes over a mapped file (laying out a training sequence) call this after each chunk, so their
    resident memory stays at one chunk's worth instead of growing to the size of the file.
    """
    base: Any = arr
    while base is not None and not isinstance(base, mmap.mmap):
        # ndarray views chain through .base to np.frombuffer's memoryview, whose .obj is the map itself.
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)
