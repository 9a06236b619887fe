"""Token files: written in chunks, read back as read-only memory maps with their id range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_engine.data import subsets
from sweep_engine.data.tokenfile import TokenFileInfo, TokenWriter, dtype_for, open_tokens, release
from sweep_engine.errors import DataError


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_chunks_round_trip_with_their_range(tmp_path: Path) -> None:
    chunks = [np.array([5, 9, 7]), np.array([], dtype=np.int64), np.array([3, 60_000])]
    with TokenWriter(tmp_path / "t.bin", dtype_for(50_257)) as writer:
        for c in chunks:
            writer.write(c)
        info = writer.close()
    assert info == TokenFileInfo("uint16", 5, 3, 60_000)
    assert TokenFileInfo.from_json(info.to_json()) == info
    back = open_tokens(tmp_path / "t.bin", info)
    np.testing.assert_array_equal(back, [5, 9, 7, 3, 60_000])
    assert back.dtype == np.uint16 and not back.flags.writeable  # a read-only map, not a copy
    assert dtype_for(65_536) == np.uint16 and dtype_for(65_537) == np.int32


def test_ids_the_dtype_cannot_hold_and_short_files_are_data_errors(tmp_path: Path) -> None:
    with TokenWriter(tmp_path / "t.bin", np.uint16) as writer, pytest.raises(DataError, match=r"\[-1, 2\]"):
        writer.write(np.array([-1, 2]))
    (tmp_path / "short.bin").write_bytes(b"\0" * 4)
    with pytest.raises(DataError, match="rebuild the cache"):
        open_tokens(tmp_path / "short.bin", TokenFileInfo("uint16", 3, 0, 0))
    assert len(open_tokens(tmp_path / "none.bin", TokenFileInfo("int32", 0, 0, -1))) == 0


def test_release_drops_the_resident_pages_of_a_map(tmp_path: Path) -> None:
    n = 16 << 20  # 32 MiB of uint16
    with TokenWriter(tmp_path / "t.bin", np.uint16) as writer:
        writer.write(np.arange(n, dtype=np.int64) % 1000)
        info = writer.close()
    tokens = open_tokens(tmp_path / "t.bin", info)
    before = _resident_kib()
    assert int(tokens[::2048].sum()) > 0  # touch every page
    touched = _resident_kib()
    release(tokens[10:20])  # through a view: the map behind it
    after = _resident_kib()
    assert touched - before > 24_000 and after - before < 4_000
    release(np.arange(3))  # an in-memory array: nothing to do


def test_a_layout_streamed_to_a_sink_equals_the_one_in_memory() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, size=300)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    units = subsets.Units(
        tokens=rng.integers(2, 1000, size=int(offsets[-1])).astype(np.uint16),
        offsets=offsets,
        chars=lengths * 3,
        groups=np.arange(300) // 5,
        keys=np.arange(300),
    )
    order = subsets.training_order(units, np.array([4, 50]), seed=2)
    whole = subsets.lay_out(units, order, 1, 0)
    chunks: list[np.ndarray] = []
    streamed = subsets.lay_out(units, order, 1, 0, sink=chunks.append)
    assert len(streamed.tokens) == 0 and whole.tokens.dtype == np.uint16
    np.testing.assert_array_equal(np.concatenate(chunks), whole.tokens)
    np.testing.assert_array_equal(streamed.doc_ends, whole.doc_ends)
    np.testing.assert_array_equal(streamed.doc_chars, whole.doc_chars)


def test_a_reader_fills_arrays_with_ranges_of_the_file(tmp_path: Path) -> None:
    from sweep_engine.data.tokenfile import TokenReader

    with TokenWriter(tmp_path / "t.bin", np.int32) as writer:
        writer.write(np.arange(100) * 3)
        info = writer.close()
    out = np.zeros(10, dtype=np.int32)
    with TokenReader(tmp_path / "t.bin", info) as reader:
        reader.read_into(out[2:7], 40)
        np.testing.assert_array_equal(out, [0, 0, 120, 123, 126, 129, 132, 0, 0, 0])
        with pytest.raises(DataError, match="ended at token 100, before token 105"):
            reader.read_into(np.zeros(10, dtype=np.int32), 95)
