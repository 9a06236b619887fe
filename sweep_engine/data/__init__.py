"""The data pipeline: built-in and user corpora, tokenizers, validation sets, nested training subsets and the
token caches every trial reads. See docs/data.md."""

from __future__ import annotations

from sweep_engine.data.corpora import CorpusCard, builtin_corpora, check_corpus
from sweep_engine.data.prepare import TokenReport, load_trial_data, prepare_data
from sweep_engine.data.tokenizer import load_tokenizer, tokens_per_char

__all__ = [
    "CorpusCard",
    "TokenReport",
    "builtin_corpora",
    "check_corpus",
    "load_tokenizer",
    "load_trial_data",
    "prepare_data",
    "tokens_per_char",
]
