from __future__ import annotations

import multiprocessing
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sweep_engine.data import cache
from sweep_engine.spec import CorpusSpec, DataSpec, TokenizerSpec
from tests.data import workers
from tests.data.conftest import write_text_corpus


def test_build_once_builds_then_reuses(tmp_path: Path) -> None:
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "x.npy").write_bytes(b"1")

    entry = tmp_path / "sub" / "abc"
    assert cache.build_once(entry, build) == entry
    assert cache.build_once(entry, build) == entry
    assert len(calls) == 1 and (entry / "x.npy").read_bytes() == b"1"
    assert calls[0].parent == entry.parent and not calls[0].exists()  # built beside it, renamed away


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("partial")
        raise RuntimeError("disk full")

    entry = tmp_path / "abc"
    with pytest.raises(RuntimeError, match="disk full"):
        cache.build_once(entry, build)
    assert not entry.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["abc.lock"]


def test_arrays_round_trip_and_large_ones_are_memory_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = np.arange(1000, dtype=np.int32)
    cache.save_array(tmp_path / "a.npy", a)
    small = cache.load_array(tmp_path / "a.npy")
    assert not isinstance(small, np.memmap) and small.flags.writeable
    monkeypatch.setattr(cache, "MMAP_BYTES", 100)
    big = cache.load_array(tmp_path / "a.npy")
    assert isinstance(big, np.memmap) and big.dtype == np.int32
    np.testing.assert_array_equal(big, a)


def _pool() -> ProcessPoolExecutor:
    # spawn: a forked child would inherit the tokenizers thread pool.
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))


def test_two_processes_asking_at_once_build_once(tmp_path: Path) -> None:
    entry, log = tmp_path / "entry", tmp_path / "log"
    with _pool() as pool:
        start_at = time.time() + 1.5  # after both children have started
        results = list(pool.map(workers.slow_build, [str(entry)] * 2, [str(log)] * 2, [start_at] * 2))
    lines = log.read_text().splitlines()
    # Both asked before the entry existed; one built it, the other waited and reused it.
    assert sorted(line.split()[0] for line in lines) == ["build", "call", "call"]
    assert all(line.endswith("entry_exists=False") for line in lines if line.startswith("call"))
    assert results[0] == results[1] == entry.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock", "log"]


def test_two_trials_preparing_the_same_data_at_once(tmp_path: Path) -> None:
    corpus = CorpusSpec(kind="path", language="xx", path=str(write_text_corpus(tmp_path / "c.txt", 40)))
    data = DataSpec(
        corpus=corpus,
        tokenizer=TokenizerSpec(kind="bpe", vocab_size=280, corpus=corpus),
        d_f=300,
        val_size=5,
    )
    cache_dir = tmp_path / "cache"
    with _pool() as pool:
        start_at = time.time() + 1.5
        a, b = pool.map(workers.trial_data, [pickle.dumps(data)] * 2, [str(cache_dir)] * 2, [start_at] * 2)
    assert a == b and len(a) > 4 * 300
    # One entry per level, and no temporary leftovers.
    for level, n in (("tokenizers", 1), ("tokens", 1), ("splits", 2)):
        entries = [p.name for p in (cache_dir / level).iterdir() if not p.name.endswith(".lock")]
        assert len(entries) == n and not any(e.startswith(".") for e in entries), entries
