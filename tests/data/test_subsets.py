from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sweep_engine.data import bible, subsets
from sweep_engine.errors import DataError

EOT, SEP = 0, 1


@st.composite
def corpora(draw: st.DrawFn) -> subsets.Units:
    """A synthetic tokenized corpus: `copies` parallel translations of the same documents and units.

    Unit i's tokens all equal i + 10, so every token in a layout says which unit it came from."""
    copies = draw(st.integers(1, 3))
    doc_sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=12))
    n_per_copy = sum(doc_sizes)
    lengths = draw(st.lists(st.integers(1, 7), min_size=n_per_copy * copies, max_size=n_per_copy * copies))
    doc_of = np.repeat(np.arange(len(doc_sizes)), doc_sizes)
    groups = np.concatenate([c * 1000 + doc_of for c in range(copies)]).astype(np.int64)
    keys = np.tile(np.arange(n_per_copy), copies).astype(np.int64)
    lengths_a = np.array(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths_a)]).astype(np.int64)
    tokens = np.repeat(np.arange(len(lengths_a)) + 10, lengths_a).astype(np.int32)
    chars = lengths_a * 3
    return subsets.Units(tokens, offsets, chars, groups, keys)


def _units_in(layout: subsets.Layout) -> Counter[int]:
    body = layout.tokens[(layout.tokens != EOT) & (layout.tokens != SEP)]
    return Counter((body - 10).tolist())


@settings(max_examples=150, deadline=None)
@given(units=corpora(), data=st.data())
def test_training_and_validation_partition_the_units(units: subsets.Units, data: st.DataObject) -> None:
    candidates = np.unique(units.keys)
    assume(len(candidates) >= 2)
    val_size = data.draw(st.integers(1, len(candidates) - 1))
    seed = data.draw(st.integers(0, 2**32 - 1))
    held = subsets.choose_validation(candidates, val_size, "docs", seed)
    assert len(held) == val_size and np.all(np.isin(held, candidates)) and np.all(np.diff(held) > 0)

    train = subsets.lay_out(units, subsets.training_order(units, held, seed), SEP, EOT)
    val = subsets.lay_out(units, subsets.validation_order(units, held), SEP, EOT)
    train_units, val_units = _units_in(train), _units_in(val)
    # Never overlap: no unit, and no key (a verse id in any translation), is on both sides.
    assert not set(train_units) & set(val_units)
    assert not set(units.keys[list(train_units)]) & set(units.keys[list(val_units)])
    assert set(units.keys[list(val_units)]) == set(held.tolist())
    # Together they are the whole corpus, every unit whole and exactly once.
    lengths = units.lengths
    for layout_units in (train_units, val_units):
        assert all(count == lengths[u] for u, count in layout_units.items())
    assert len(train_units) + len(val_units) == len(lengths)
    # Each document ends with end-of-text; characters add up (3 per token, 1 per separator).
    for lay in (train, val):
        assert lay.doc_ends[-1] == len(lay.tokens)
        assert np.all(lay.tokens[lay.doc_ends - 1] == EOT)
        n_sep = int((lay.tokens == SEP).sum())
        assert lay.doc_chars[-1] == 3 * (len(lay.tokens) - len(lay.doc_ends) - n_sep) + n_sep


@settings(max_examples=100, deadline=None)
@given(units=corpora(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_same_seed_same_bytes_and_nested_prefixes(
    units: subsets.Units, seed: int, data: st.DataObject
) -> None:
    candidates = np.unique(units.keys)
    assume(len(candidates) >= 2)
    held = subsets.choose_validation(candidates, 1, "docs", seed)
    a = subsets.lay_out(units, subsets.training_order(units, held, seed), SEP, EOT)
    b = subsets.lay_out(units, subsets.training_order(units, held.copy(), seed), SEP, EOT)
    assert a.tokens.tobytes() == b.tokens.tobytes()
    np.testing.assert_array_equal(a.doc_ends, b.doc_ends)
    small, large = sorted(data.draw(st.lists(st.integers(1, len(a.tokens)), min_size=2, max_size=2)))
    sub_small = a.tokens[: subsets.check_d_f(small, len(a.tokens), "test")]
    sub_large = a.tokens[: subsets.check_d_f(large, len(a.tokens), "test")]
    assert len(sub_small) == small and len(sub_large) == large
    np.testing.assert_array_equal(sub_large[:small], sub_small)
    # Documents keep their units together: each training document is contiguous in the layout.
    doc_of_token = np.searchsorted(a.doc_ends, np.arange(len(a.tokens)), side="right")
    body = (a.tokens != EOT) & (a.tokens != SEP)
    groups = units.groups[a.tokens[body] - 10]
    assert len(np.unique(groups)) == len(np.unique(doc_of_token[body]))


@settings(max_examples=100, deadline=None)
@given(units=corpora(), seed=st.integers(0, 1000), data=st.data())
def test_validation_in_tokens_is_the_shortest_prefix_that_reaches_the_size(
    units: subsets.Units, seed: int, data: st.DataObject
) -> None:
    candidates = np.unique(units.keys)
    per_key = subsets.tokens_per_key(units, candidates)
    assume(len(candidates) >= 2)
    limit = int(per_key.sum() - per_key.max())  # leaves at least one key for training
    assume(limit >= 1)
    val_size = data.draw(st.integers(1, limit))
    held = subsets.choose_validation(candidates, val_size, "tokens", seed, per_key)
    val = subsets.lay_out(units, subsets.validation_order(units, held), SEP, EOT)
    assert len(val.tokens) >= val_size
    assert len(val.tokens) == per_key[np.isin(candidates, held)].sum()
    # Minimal: the same seeded order without its last held key falls short.
    order = candidates[np.random.default_rng([0, seed]).permutation(len(candidates))]
    assert per_key[np.searchsorted(candidates, order[: len(held) - 1])].sum() < val_size


@settings(max_examples=40, deadline=None)
@given(
    val_size=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1), part=st.sampled_from(["ot", "nt", "all"])
)
def test_parallel_split_holds_out_the_same_verse_ids_in_every_language(
    val_size: int, seed: int, part: str
) -> None:
    held = {}
    for t in bible.TRANSLATIONS:
        codes = bible.read_verses(t).codes
        candidates = bible.candidate_codes(codes[bible.part_mask(codes, part)])
        held[t] = subsets.choose_validation(candidates, val_size, "docs", seed)
    first = held["web"]
    assert len(first) == val_size
    lo, hi = bible.PART_BOOKS[part]
    assert np.all((first // 1_000_000 >= lo) & (first // 1_000_000 <= hi))
    for ids in held.values():
        np.testing.assert_array_equal(ids, first)


def test_prefix_chars_counts_whole_documents_and_the_cut_one() -> None:
    doc_ends = np.array([4, 10, 13])
    doc_chars = np.array([12, 30, 40])
    cut_calls: list[tuple[int, int]] = []

    def decoded(start: int, stop: int) -> int:
        cut_calls.append((start, stop))
        return 2 * (stop - start)

    assert subsets.prefix_chars(doc_ends, doc_chars, 4, decoded) == 12 and cut_calls == []
    assert subsets.prefix_chars(doc_ends, doc_chars, 7, decoded) == 12 + 6 and cut_calls == [(4, 7)]
    assert subsets.prefix_chars(doc_ends, doc_chars, 2, decoded) == 4
    assert subsets.prefix_chars(doc_ends, doc_chars, 13, decoded) == 40


def test_sizes_that_do_not_fit_are_data_errors() -> None:
    with pytest.raises(
        DataError, match=r"d_f <= training tokens available must hold .* d_f=11, available=10"
    ):
        subsets.check_d_f(11, 10, "corpus x")
    with pytest.raises(DataError, match="d_f > 0"):
        subsets.check_d_f(0, 10, "corpus x")
    assert subsets.check_d_f(None, 10, "corpus x") == 10
    with pytest.raises(DataError, match="val_size=5, test_size=0, documents=5"):
        subsets.choose_validation(np.arange(5), 5, "docs", 0)
    with pytest.raises(DataError, match="val_size > 0"):
        subsets.choose_validation(np.arange(5), 0, "docs", 0)
    with pytest.raises(DataError, match="have 10 tokens"):
        subsets.choose_validation(np.arange(5), 100, "tokens", 0, np.full(5, 2))


def test_large_layouts_are_gathered_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    units = subsets.Units(
        tokens=rng.integers(2, 1000, size=int(offsets[-1])).astype(np.int32),
        offsets=offsets,
        chars=lengths * 2,
        groups=np.arange(400) // 7,
        keys=np.arange(400),
    )
    order = subsets.training_order(units, np.array([3, 99]), seed=5)
    whole = subsets.lay_out(units, order, SEP, EOT)
    monkeypatch.setattr(subsets, "CHUNK_TOKENS", 64)
    chunked = subsets.lay_out(units, order, SEP, EOT)
    np.testing.assert_array_equal(whole.tokens, chunked.tokens)
    expected = np.concatenate(
        [
            np.append(units.tokens[offsets[u] : offsets[u + 1]], EOT if last else SEP)
            for u, last in zip(
                order, np.append(units.groups[order][1:] != units.groups[order][:-1], True), strict=True
            )
        ]
    )
    np.testing.assert_array_equal(whole.tokens, expected)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_test_keys_follow_validation_in_the_same_permutation(data: st.DataObject) -> None:
    candidates = np.sort(np.random.default_rng(0).choice(10_000, size=300, replace=False))
    val_size = data.draw(st.integers(1, 150))
    test_size = data.draw(st.integers(0, 299 - val_size))
    seed = data.draw(st.integers(0, 5))
    val, test = subsets.choose_heldout(candidates, val_size, test_size, "docs", seed)
    assert len(val) == val_size and len(test) == test_size and not set(val) & set(test)
    np.testing.assert_array_equal(val, subsets.choose_validation(candidates, val_size, "docs", seed))
    with pytest.raises(DataError, match="training needs the rest"):
        subsets.choose_heldout(candidates, val_size, 300 - val_size, "docs", seed)
