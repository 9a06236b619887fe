from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from sweep_engine.data import load_tokenizer, tokens_per_char
from sweep_engine.data import tokenizer as tokmod
from sweep_engine.errors import DataError
from sweep_engine.spec import CorpusSpec, TokenizerSpec


@pytest.fixture(scope="module")
def en_tok(en_tok_spec: TokenizerSpec, cache_dir: Path) -> Tokenizer:
    return load_tokenizer(en_tok_spec, cache_dir)


def test_bpe_has_the_asked_vocab_and_end_of_text(en_tok: Tokenizer) -> None:
    assert en_tok.get_vocab_size() == 1024
    assert tokmod.eot_id(en_tok) == 0
    assert en_tok.encode("\n").ids != [] and len(en_tok.encode("\n").ids) == 1
    # Trained on English: common English words are single tokens.
    assert len(en_tok.encode(" the").ids) == 1


def test_bpe_is_cached_by_corpus_and_settings(
    en_tok_spec: TokenizerSpec, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_tokenizer(en_tok_spec, cache_dir)
    path = cache_dir / "tokenizers" / f"{tokmod.tokenizer_key(en_tok_spec)}.json"
    assert path.is_file()

    def no_training(spec: TokenizerSpec) -> Tokenizer:
        raise AssertionError("a cached tokenizer was trained again")

    monkeypatch.setattr(tokmod, "train_bpe", no_training)
    load_tokenizer(en_tok_spec, cache_dir)
    other_vocab = TokenizerSpec(kind="bpe", vocab_size=2048, corpus=en_tok_spec.corpus)
    other_corpus = TokenizerSpec(
        kind="bpe", vocab_size=1024, corpus=CorpusSpec(kind="builtin", language="de")
    )
    keys = {tokmod.tokenizer_key(s) for s in (en_tok_spec, other_vocab, other_corpus)}
    assert len(keys) == 3


def test_gpt2_style_files_load_with_the_same_encoding(en_tok: Tokenizer, tmp_path: Path) -> None:
    vocab, merges = en_tok.model.save(str(tmp_path))  # writes vocab.json and merges.txt, GPT-2's format
    spec = TokenizerSpec(kind="files", vocab_file=vocab, merges_file=merges)
    files_tok = load_tokenizer(spec, tmp_path / "cache")
    text = "In the beginning God created the heavens and the earth. 起初，神創造天地。"
    assert files_tok.encode(text).ids == en_tok.encode(text).ids
    assert tokmod.eot_id(files_tok) == tokmod.eot_id(en_tok)
    with pytest.raises(DataError, match="merges_file 'nope.txt' does not exist"):
        load_tokenizer(TokenizerSpec(kind="files", vocab_file=vocab, merges_file="nope.txt"), tmp_path)


def test_bad_tokenizer_specs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="vocab_size >= 257 must hold"):
        load_tokenizer(
            TokenizerSpec(kind="bpe", vocab_size=100, corpus=CorpusSpec("builtin", "en")), tmp_path
        )
    with pytest.raises(DataError, match="needs `corpus`"):
        load_tokenizer(TokenizerSpec(kind="bpe"), tmp_path)


def test_encode_documents_matches_encode_batch(en_tok: Tokenizer) -> None:
    texts = ["Jesus wept.", "", "Denn also hat Gott die Welt geliebt", "神愛世人"]
    ids, lengths = tokmod.encode_documents(en_tok, texts)
    expected = [e.ids for e in en_tok.encode_batch(texts)]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.dtype == np.int32
    assert ids.tolist() == [i for e in expected for i in e]


def test_tokens_per_char_shows_the_cost_of_an_english_tokenizer(en_tok: Tokenizer) -> None:
    en = tokens_per_char(en_tok, CorpusSpec(kind="builtin", language="en", part="nt"), max_chars=200_000)
    de = tokens_per_char(en_tok, CorpusSpec(kind="builtin", language="de", part="nt"), max_chars=200_000)
    zh = tokens_per_char(en_tok, CorpusSpec(kind="builtin", language="zh", part="nt"), max_chars=50_000)
    assert 0.2 < en < 0.4
    assert en < de < 1.0
    # Byte-level BPE without Chinese merges: one token per UTF-8 byte, three bytes per CJK character.
    assert 2.8 < zh <= 3.0


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_byte_level_round_trip_for_any_text(en_tok: Tokenizer, text: str) -> None:
    # The literal end-of-text marker is the special token by design (as in GPT-2): it encodes to its id.
    assume("<|endoftext|>" not in text)
    ids = en_tok.encode(text, add_special_tokens=False).ids
    assert en_tok.decode(ids) == text
