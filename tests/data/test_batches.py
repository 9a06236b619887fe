from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep_engine.data.batches import BatchSource
from sweep_engine.errors import ConfigError

CTX = 8


def _tokens(n: int = 1000) -> np.ndarray:
    return np.arange(n, dtype=np.int32)  # token value = its position, so a window tells where it came from


def test_windows_are_contiguous_inputs_plus_next_token_targets() -> None:
    src = BatchSource(_tokens(), CTX, batch_windows=16, seed=0)
    batch = src.next_batch()
    assert batch.shape == (16, CTX + 1) and batch.dtype == np.int64
    assert (np.diff(batch, axis=1) == 1).all()


def test_one_epoch_covers_the_shifted_grid_once() -> None:
    n = 1000
    src = BatchSource(_tokens(n), CTX, batch_windows=1, seed=3)
    per_epoch = src.windows_per_epoch
    starts = [int(src.next_batch()[0, 0]) for _ in range(per_epoch)]
    assert src.epoch == 1 and src.position == 0
    shift = min(starts)
    assert 0 <= shift < CTX
    assert sorted(starts) == list(range(shift, n - CTX, CTX))  # every grid window once, no overlap of targets
    assert starts != sorted(starts)  # visited in a shuffled order


def test_epochs_shift_the_grid_and_reshuffle() -> None:
    src = BatchSource(_tokens(), CTX, batch_windows=1, seed=0)
    shifts = set()
    for _ in range(10):
        first = [int(src.next_batch()[0, 0]) for _ in range(src.windows_per_epoch)]
        shifts.add(min(first))
    assert len(shifts) > 1


def test_deterministic_for_a_seed() -> None:
    a = BatchSource(_tokens(), CTX, 4, seed=7)
    b = BatchSource(_tokens(), CTX, 4, seed=7)
    c = BatchSource(_tokens(), CTX, 4, seed=8)
    xs = [a.next_batch() for _ in range(50)]
    assert all((x == b.next_batch()).all() for x in xs)
    assert any((x != c.next_batch()).any() for x in xs)


def test_ranks_split_each_global_batch() -> None:
    single = BatchSource(_tokens(), CTX, 6, seed=1)
    ranks = [BatchSource(_tokens(), CTX, 6, seed=1, rank=r, world_size=3) for r in range(3)]
    for _ in range(40):  # spans several epochs (~124 windows each)
        whole = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert all(p.shape == (2, CTX + 1) for p in parts)
        assert (np.concatenate(parts) == whole).all()
    assert ranks[1].tokens_drawn == single.tokens_drawn == 40 * 6 * CTX


def test_state_dict_resumes_exactly() -> None:
    a = BatchSource(_tokens(300), CTX, 5, seed=2)
    for _ in range(17):
        a.next_batch()
    state = a.state_dict()
    b = BatchSource(_tokens(300), CTX, 5, seed=2)
    b.load_state_dict(state)
    assert (b.epoch, b.tokens_drawn) == (a.epoch, a.tokens_drawn)
    for _ in range(30):
        assert (a.next_batch() == b.next_batch()).all()


def test_state_from_another_source_is_refused() -> None:
    state = BatchSource(_tokens(300), CTX, 5, seed=2).state_dict()
    with pytest.raises(ConfigError, match="does not match"):
        BatchSource(_tokens(300), CTX, 5, seed=3).load_state_dict(state)


def test_counters_across_epochs() -> None:
    src = BatchSource(_tokens(100), CTX, batch_windows=32, seed=0)  # ~11 windows per epoch
    src.next_batch()
    assert src.epoch >= 2 and src.tokens_drawn == 32 * CTX


def test_training_set_of_exactly_one_window_works() -> None:
    src = BatchSource(_tokens(CTX + 1), CTX, batch_windows=4, seed=0)
    batch = src.next_batch()
    assert (batch == np.arange(CTX + 1)).all() and src.epoch == 4  # each epoch is the one window


def test_training_set_smaller_than_one_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"d_f=8, context=8"):
        BatchSource(_tokens(CTX), CTX, batch_windows=4, seed=0)


def test_batch_must_split_across_ranks() -> None:
    with pytest.raises(ConfigError, match="batch_windows=5, world_size=2"):
        BatchSource(_tokens(), CTX, batch_windows=5, seed=0, rank=0, world_size=2)


def test_a_mapped_uint16_file_gives_the_same_int64_batches_without_a_whole_copy(tmp_path: Path) -> None:
    from sweep_engine.data.tokenfile import TokenWriter, open_tokens

    with TokenWriter(tmp_path / "t.bin", np.uint16) as writer:
        writer.write(_tokens())
        info = writer.close()
    mapped = BatchSource(open_tokens(tmp_path / "t.bin", info), CTX, 6, seed=4)
    plain = BatchSource(_tokens().astype(np.int64), CTX, 6, seed=4)
    assert mapped.tokens.dtype == np.uint16 and not mapped.tokens.flags.owndata  # still the map
    for _ in range(30):
        got = mapped.next_batch()
        assert got.dtype == np.int64 and (got == plain.next_batch()).all()
