from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep_engine.data import load_tokenizer, load_trial_data, prepare_data, subsets
from sweep_engine.data.prepare import Split
from sweep_engine.data.tokenizer import load_tokenizer_with_key
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec, DataSpec, TokenizerSpec
from tests.data.conftest import EN_NT, write_text_corpus

LANGS = ("en", "es", "de", "zh")


def _nt(lang: str) -> CorpusSpec:
    return CorpusSpec(kind="builtin", language=lang, part="nt")


def _bible_data(tok: TokenizerSpec, lang: str, d_f: int | None, **kw: object) -> DataSpec:
    return DataSpec(corpus=_nt(lang), tokenizer=tok, d_f=d_f, val_size=300, extra_val=(("en", EN_NT),), **kw)  # type: ignore[arg-type]


def test_bible_trial_data_in_four_languages(en_tok_spec: TokenizerSpec, cache_dir: Path) -> None:
    tok = load_tokenizer(en_tok_spec, cache_dir)
    held = {}
    for lang in LANGS:
        td = load_trial_data(_bible_data(en_tok_spec, lang, 5000), cache_dir)
        # Token files of the narrowest dtype (uint16 for 1024 ids), mapped read-only, with their id range.
        assert len(td.train) == 5000 and td.train.dtype == np.uint16 and td.val.dtype == np.uint16
        assert not td.train.flags.writeable and td.vocab_size == 1024 and int(td.train.max()) < 1024
        lo, hi = td.id_range["train"]  # of the whole sequence, so it bounds the prefix
        assert lo <= int(td.train.min()) and int(td.train.max()) <= hi < 1024
        assert td.id_range["val"] == (int(td.val.min()), int(td.val.max()))
        assert td.val_chars > 5_000 and td.train_chars > 0
        assert set(td.extra_val) == {"en"} and td.extra_val_chars["en"] > 10_000
        # The characters behind the tokens are what the tokens decode to (end-of-text adds none).
        assert td.train_chars == len(tok.decode(td.train.tolist()).rstrip("\ufffd"))
        assert td.val_chars == len(tok.decode(td.val.tolist()))
        split = Split(
            _nt(lang),
            tok,
            load_tokenizer_with_key(en_tok_spec, cache_dir)[1],
            300,
            "docs",
            0,
            cache_dir,
            lambda _: None,
        )
        units, candidates = split.units()
        held[lang] = split._held(units, candidates)[0]
        train_units = subsets.training_order(units, held[lang], 0)
        assert not np.isin(units.keys[train_units], held[lang]).any()
        assert len(train_units) + 300 == len(units.keys)
    for lang in LANGS:
        np.testing.assert_array_equal(held[lang], held["en"])  # the same verses held out everywhere
    # The English extra validation set is the English trial's own validation set.
    en = load_trial_data(_bible_data(en_tok_spec, "en", 5000), cache_dir)
    zh = load_trial_data(_bible_data(en_tok_spec, "zh", 5000), cache_dir)
    np.testing.assert_array_equal(zh.extra_val["en"], en.val)


def test_second_load_is_fast_and_larger_subsets_contain_smaller(
    en_tok_spec: TokenizerSpec, cache_dir: Path
) -> None:
    load_trial_data(_bible_data(en_tok_spec, "de", 1000), cache_dir)
    start = time.perf_counter()
    small = load_trial_data(_bible_data(en_tok_spec, "de", 1000), cache_dir)
    large = load_trial_data(_bible_data(en_tok_spec, "de", 64_000), cache_dir)
    whole = load_trial_data(_bible_data(en_tok_spec, "de", None), cache_dir)
    assert time.perf_counter() - start < 1.5  # three cache hits
    np.testing.assert_array_equal(large.train[:1000], small.train)
    np.testing.assert_array_equal(whole.train[:64_000], large.train)
    np.testing.assert_array_equal(small.val, whole.val)
    assert small.train_chars < large.train_chars < whole.train_chars
    with pytest.raises(DataError, match=rf"d_f={len(whole.train) + 1}, available={len(whole.train)}"):
        load_trial_data(_bible_data(en_tok_spec, "de", len(whole.train) + 1), cache_dir)


@pytest.fixture(scope="module")
def text_data(text_corpus: CorpusSpec, text_tok_spec: TokenizerSpec, cache_dir: Path) -> DataSpec:
    data = DataSpec(corpus=text_corpus, tokenizer=text_tok_spec, d_f=None, val_size=8)
    load_trial_data(data, cache_dir)
    return data


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 1500), min_size=2, max_size=3))
def test_subsets_are_exact_and_nested(text_data: DataSpec, cache_dir: Path, sizes: list[int]) -> None:
    sizes.sort()
    trains = [load_trial_data(replace(text_data, d_f=n), cache_dir) for n in sizes]
    tok = load_tokenizer(text_data.tokenizer, cache_dir)
    for n, td in zip(sizes, trains, strict=True):
        assert len(td.train) == n
        np.testing.assert_array_equal(trains[-1].train[:n], td.train)
        assert td.train_chars == len(tok.decode(td.train.tolist()).rstrip("\ufffd"))


def test_same_seed_same_bytes_in_a_fresh_cache(text_data: DataSpec, cache_dir: Path, tmp_path: Path) -> None:
    a = load_trial_data(text_data, cache_dir)
    b = load_trial_data(text_data, tmp_path)  # tokenizer trained again, everything rebuilt
    assert a.train.tobytes() == b.train.tobytes() and a.val.tobytes() == b.val.tobytes()
    c = load_trial_data(replace(text_data, split_seed=1), cache_dir)
    assert c.train.tobytes() != a.train.tobytes() and c.val.tobytes() != a.val.tobytes()


def test_validation_in_tokens(text_data: DataSpec, cache_dir: Path) -> None:
    td = load_trial_data(replace(text_data, val_size=200, val_unit="tokens"), cache_dir)
    assert len(td.val) >= 200
    assert td.val[-1] == 0  # ends with end-of-text


def test_prepare_data_builds_everything_and_reports_tokens_per_char(
    tmp_path: Path, en_tok_spec: TokenizerSpec, cache_dir: Path
) -> None:
    corpus = CorpusSpec(kind="path", language="xx", path=str(write_text_corpus(tmp_path / "c.txt", 30)))
    tok = TokenizerSpec(kind="bpe", vocab_size=280, corpus=corpus)
    specs = [DataSpec(corpus=corpus, tokenizer=tok, d_f=d, val_size=3) for d in (100, 200, 100)]
    calls: list[tuple[int, int, str]] = []
    reports = prepare_data(specs, tmp_path / "cache", progress=lambda *a: calls.append(a))
    assert calls[-1][:2] == (2, 2)  # two distinct specs
    assert len(reports) == 1 and reports[0].language == "xx" and 0 < reports[0].tokens_per_char < 1.5
    bad = DataSpec(
        corpus=CorpusSpec(kind="path", language="xx", path=str(tmp_path / "gone.txt")),
        tokenizer=tok,
        d_f=1,
        val_size=1,
    )
    with pytest.raises(DataError, match="does not exist"):
        prepare_data([*specs, bad], tmp_path / "cache2")
    assert not (tmp_path / "cache2").exists()  # checked before anything was built


def test_test_split_is_disjoint_shared_across_languages_and_kept_out_of_training(
    en_tok_spec: TokenizerSpec, cache_dir: Path
) -> None:
    data = {
        lang: load_trial_data(_bible_data(en_tok_spec, lang, 2000, test_size=150), cache_dir)
        for lang in ("de", "zh")
    }
    for lang, td in data.items():
        assert td.test is not None and td.val_docs is not None and td.test_docs is not None
        assert len(td.val_docs.keys) == 300 and len(td.test_docs.keys) == 150
        assert not set(td.val_docs.keys) & set(td.test_docs.keys)  # disjoint
        for arr, docs, chars in ((td.val, td.val_docs, td.val_chars), (td.test, td.test_docs, td.test_chars)):
            assert docs.tokens.sum() == len(arr) - 1 and docs.of_target.shape == (len(arr) - 1,)
            assert docs.chars.sum() == chars  # per-document characters add up to the split's
        split = Split(_nt(lang), load_tokenizer(en_tok_spec, cache_dir), load_tokenizer_with_key(en_tok_spec, cache_dir)[1],
                      300, "docs", 0, cache_dir, lambda _: None, 150)  # fmt: skip
        units, candidates = split.units()
        val_keys, test_keys = split._held(units, candidates)
        train_units = subsets.training_order(units, np.concatenate([val_keys, test_keys]), 0)
        assert not np.isin(units.keys[train_units], test_keys).any()
        np.testing.assert_array_equal(test_keys, td.test_docs.keys)
    np.testing.assert_array_equal(data["de"].test_docs.keys, data["zh"].test_docs.keys)  # the same verses
    # Validation does not move when a test split is added: spaces without one keep their validation set.
    without = load_trial_data(_bible_data(en_tok_spec, "de", 2000), cache_dir)
    np.testing.assert_array_equal(without.val, data["de"].val)
    assert without.test is None


def test_a_smaller_validation_split_of_the_same_corpus_is_held_out_of_its_training(
    text_corpus: CorpusSpec, text_tok_spec: TokenizerSpec, cache_dir: Path
) -> None:
    """`extra_val: {en: pretrain}`: the transfer stage's English set is the pre-training corpus split by the
    same rule with a smaller validation size, so its documents are pre-training validation documents, never
    pre-training training text (config.py checks the unit, seed and size that this needs)."""
    tok, key = load_tokenizer_with_key(text_tok_spec, cache_dir)
    pretraining = Split(text_corpus, tok, key, 600, "tokens", 0, cache_dir, lambda _: None, 300)
    forgetting = Split(text_corpus, tok, key, 150, "tokens", 0, cache_dir, lambda _: None)
    units, candidates = pretraining.units()
    pre_val, pre_test = pretraining._held(units, candidates)
    extra_val, _ = forgetting._held(units, candidates)
    assert len(extra_val) < len(pre_val) and set(extra_val) <= set(pre_val)
    trained = subsets.training_order(units, np.concatenate([pre_val, pre_test]), 0)
    assert not np.isin(units.keys[trained], extra_val).any()
